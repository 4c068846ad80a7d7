public import Foundation
public import FleetwardPKI
public import FleetwardKeyCustody
import FleetwardPKCS11
public import X509

/// The certificates of a Fleetward CA hierarchy as stored in a data directory (no keys).
public struct CAHierarchy: Sendable {
    /// A CA certificate with its DER bytes.
    public struct Member: Sendable {
        public let role: CARole
        public let certificate: Certificate
        public let der: [UInt8]
    }

    public let directory: DataDirectory
    public let configuration: AuthorityConfiguration
    public let root: Member
    public let issuing: Member
    public let factory: Member

    /// The member with `role`.
    public func member(_ role: CARole) -> Member {
        switch role {
        case .root: root
        case .issuing: issuing
        case .factory: factory
        }
    }

    /// Reads the hierarchy from `directory`, checking that each intermediate is signed by the root.
    ///
    /// - Throws: ``AuthorityError`` with `notInitialized` or `invalidConfiguration`.
    public static func load(from directory: DataDirectory) throws -> CAHierarchy {
        guard FileManager.default.fileExists(atPath: directory.configurationPath) else {
            throw AuthorityError(
                .notInitialized,
                "\(directory.path) holds no Fleetward CA; run 'fleetward init --data \(directory.path)' first"
            )
        }
        let configuration: AuthorityConfiguration
        do {
            let bytes = try AtomicFile.read(directory.configurationPath, limit: 1 << 20)
            configuration = try AuthorityConfiguration.decoder().decode(AuthorityConfiguration.self, from: Data(bytes))
        } catch {
            throw AuthorityError(.invalidConfiguration, "\(directory.configurationPath) cannot be read: \(error)", underlying: error)
        }
        func read(_ role: CARole) throws -> Member {
            let path = directory.certificatePath(of: role)
            do {
                let bytes = try AtomicFile.read(path, limit: 1 << 20)
                guard let first = try CertificateDecoder.certificates(from: bytes).first else {
                    throw PKIError(.malformedInput, "no certificate")
                }
                return Member(role: role, certificate: first.certificate, der: first.der)
            } catch {
                throw AuthorityError(.invalidConfiguration, "\(path) cannot be read: \(error)", underlying: error)
            }
        }
        let root = try read(.root)
        let issuing = try read(.issuing)
        let factory = try read(.factory)
        for member in [issuing, factory] {
            guard member.certificate.issuer == root.certificate.subject,
                root.certificate.publicKey.isValidSignature(member.certificate.signature, for: member.certificate)
            else {
                throw AuthorityError(
                    .invalidConfiguration,
                    "\(directory.certificatePath(of: member.role)) is not signed by the root CA in \(directory.certificatePath(of: .root))"
                )
            }
        }
        return CAHierarchy(directory: directory, configuration: configuration, root: root, issuing: issuing, factory: factory)
    }

    /// Creates a new hierarchy in `directory`: root, issuing and factory CAs, the gateway's server
    /// certificate, and `fleetward.json` (written last).
    ///
    /// - Parameters:
    ///   - force: Replace an existing CA. Without it, a directory that holds one is refused.
    ///   - progress: Called with a short line before each slow step.
    /// - Throws: ``AuthorityError`` (`alreadyInitialized`, `invalidConfiguration`), ``KeyCustodyError``, ``PKIError``.
    public static func create(
        in directory: DataDirectory,
        configuration: AuthorityConfiguration,
        passphrase: Passphrase,
        force: Bool = false,
        now: Date = Date(),
        progress: (String) -> Void = { _ in }
    ) throws -> CAHierarchy {
        try configuration.validate()
        try passphrase.validateForNewKeys()
        if directory.holdsAuthority && !force {
            throw AuthorityError(
                .alreadyInitialized,
                "\(directory.path) already holds a Fleetward CA; use --force to replace it (its keys will be lost)"
            )
        }
        try AtomicFile.makeDirectory(directory.path)
        try AtomicFile.makeDirectory(directory.caDirectory)
        try AtomicFile.makeDirectory(directory.tlsDirectory)
        // An interrupted earlier run or --force: the config goes first so a half-written CA is never taken as whole.
        if FileManager.default.fileExists(atPath: directory.configurationPath) {
            do {
                try FileManager.default.removeItem(atPath: directory.configurationPath)
            } catch {
                throw AuthorityError(.invalidConfiguration, "cannot replace \(directory.configurationPath): \(error)", underlying: error)
            }
        }

        let custodian = try Self.custodian(for: configuration, in: directory, passphrase: passphrase)
        var rng = SystemRandomNumberGenerator()
        let organization = configuration.organization

        if configuration.keyStore != nil {
            guard configuration.issuingKeyType == .p256, configuration.factoryKeyType == .p256 else {
                throw AuthorityError(.invalidConfiguration, "keys in a token are P-256: --issuing-key-type and --factory-key-type must be P-256")
            }
        }
        progress("Generating the root CA key (\(configuration.rootKeyType.rawValue)) and encrypting it")
        let rootKey = try custodian.generateKey(named: DataDirectory.keyName(of: .root), type: configuration.rootKeyType)
        let rootCertificate = try CACertificateFactory.makeRoot(
            key: rootKey, organization: organization, days: configuration.rootDays, now: now, using: &rng
        )
        let root = try write(rootCertificate, role: .root, to: directory)

        var intermediates: [CARole: Member] = [:]
        var issuingKey: SigningKey?
        for role in [CARole.issuing, .factory] {
            let type = configuration.keyType(of: role)
            progress(
                configuration.keyStore == nil
                    ? "Generating the \(role) CA key (\(type.rawValue)) and encrypting it"
                    : "Generating the \(role) CA key (\(type.rawValue)) inside the token")
            let key = try custodian.generateKey(named: DataDirectory.keyName(of: role), type: type)
            let certificate = try CACertificateFactory.makeIntermediate(
                role: role, key: key, organization: organization, days: configuration.intermediateDays,
                root: rootCertificate, rootKey: rootKey, now: now, using: &rng
            )
            intermediates[role] = try write(certificate, role: role, to: directory)
            if role == .issuing { issuingKey = key }
        }
        let issuing = intermediates[.issuing]!
        let factory = intermediates[.factory]!
        try AtomicFile.write(
            Array((PEM.encode(issuing.der, label: "CERTIFICATE") + PEM.encode(root.der, label: "CERTIFICATE")).utf8),
            to: directory.chainPath, permissions: 0o644)

        progress("Issuing the servers' certificate (EST and gateway) for \(configuration.hosts.joined(separator: ", ")) (init --host sets these names)")
        let gatewayKey = try custodian.generateKey(named: DataDirectory.gatewayKeyName, type: .p256)
        let issuer = try CertificateIssuer(
            caCertificate: issuing.certificate, key: issuingKey!, role: .issuing, organization: organization
        )
        let gateway = try issuer.issue(
            publicKey: gatewayKey.publicKey, profile: .server,
            identity: .server(try configuration.hosts.map(ServerName.init)), days: 365, now: now, using: &rng
        )
        try AtomicFile.write(
            Array((gateway.pem + PEM.encode(issuing.der, label: "CERTIFICATE")).utf8),
            to: directory.gatewayCertificatePath, permissions: 0o644)

        var stored = configuration
        stored.createdAt = now
        let json = try AuthorityConfiguration.encoder().encode(stored)
        try AtomicFile.write(Array(json) + [0x0A], to: directory.configurationPath, permissions: 0o644)
        return CAHierarchy(directory: directory, configuration: stored, root: root, issuing: issuing, factory: factory)
    }

    private static func write(_ certificate: Certificate, role: CARole, to directory: DataDirectory) throws -> Member {
        var serializer = DERSerializerBox()
        let der = try serializer.encode(certificate)
        try AtomicFile.write(Array(PEM.encode(der, label: "CERTIFICATE").utf8), to: directory.certificatePath(of: role), permissions: 0o644)
        return Member(role: role, certificate: certificate, der: der)
    }

    /// Sets where certificates issued from now on point for CRLs and OCSP (nil: nowhere), in
    /// the data directory's configuration (replaced atomically). Certificates already issued keep
    /// the URL they carry until they are renewed.
    /// - Throws: ``AuthorityError`` `invalidConfiguration` for a URL that is not http(s)://HOST[:PORT][/PATH].
    public static func setRevocationBaseURL(_ base: String?, in directory: DataDirectory) throws -> AuthorityConfiguration {
        var configuration = try load(from: directory).configuration
        configuration.revocationBaseURL = base
        try configuration.validate()
        let json = try AuthorityConfiguration.encoder().encode(configuration)
        try AtomicFile.write(Array(json) + [0x0A], to: directory.configurationPath, permissions: 0o644)
        return configuration
    }

    /// Where this directory's keys are kept: encrypted files, or, with a key store, the issuing,
    /// factory and release-signing keys in that PKCS#11 token (its PIN from
    /// `FLEETWARD_PKCS11_PIN` or the URI's pin-source file).
    public static func custodian(
        for configuration: AuthorityConfiguration, in directory: DataDirectory, passphrase: Passphrase,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> any KeyCustodian {
        let files = EncryptedFileKeyCustodian(directory: directory.path, passphrase: passphrase, iterations: configuration.kdfIterations)
        guard let store = configuration.keyStore else { return files }
        do {
            let uri = try PKCS11URI(parsing: store)
            let token = try PKCS11Token(uri: uri, pin: try uri.pin(environment: environment))
            return TokenKeyCustodian(
                token: token, tokenKeys: [DataDirectory.keyName(of: .issuing), DataDirectory.keyName(of: .factory), ReleaseRepository.signingKeyName],
                files: files)
        } catch let error as PKCS11Error {
            throw AuthorityError(.invalidConfiguration, error.message)
        }
    }

    /// This directory's custodian (see ``custodian(for:in:passphrase:environment:)``).
    public func custodian(passphrase: Passphrase) throws -> any KeyCustodian {
        try Self.custodian(for: configuration, in: directory, passphrase: passphrase)
    }

    /// Opens the key of the CA with `role` and returns an issuer for it.
    public func makeIssuer(for role: CARole, custodian: any KeyCustodian) throws -> CertificateIssuer {
        let key = try custodian.loadKey(named: DataDirectory.keyName(of: role))
        return try CertificateIssuer(
            caCertificate: member(role).certificate, key: key, role: role, organization: configuration.organization,
            revocationBaseURL: configuration.revocationBaseURL
        )
    }
}

import SwiftASN1

/// Encodes swift-certificates values to DER.
struct DERSerializerBox {
    mutating func encode(_ value: some DERSerializable) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(value)
        return serializer.serializedBytes
    }
}
