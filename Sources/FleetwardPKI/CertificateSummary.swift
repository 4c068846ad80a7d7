public import Foundation
public import X509
import Crypto
import SwiftASN1

/// What a person or a script needs to know about a certificate, for `cert inspect` and `ca show`.
public struct CertificateSummary: Codable, Sendable, Equatable {
    public var subject: String
    public var issuer: String
    public var serialNumber: String
    public var notBefore: Date
    public var notAfter: Date
    public var publicKey: String
    public var signatureAlgorithm: String
    public var isCertificateAuthority: Bool
    public var pathLength: Int?
    public var keyUsage: [String]
    public var extendedKeyUsage: [String]
    public var subjectAlternativeNames: [String]
    public var policies: [String]
    /// The Fleetward profile, when a policy OID names one.
    public var profile: String?
    /// The device ID from the `urn:fleetward:device:` URI SAN, when present.
    public var deviceID: String?
    public var subjectKeyIdentifier: String?
    public var authorityKeyIdentifier: String?
    public var sha256Fingerprint: String

    /// Summarises `certificate`, whose DER is `der`.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/malformedInput`` when an extension cannot be decoded.
    public init(certificate: Certificate, der: [UInt8]) throws {
        do {
            subject = Self.format(certificate.subject)
            issuer = Self.format(certificate.issuer)
            serialNumber = certificate.serialNumber.hexString
            notBefore = certificate.notValidBefore
            notAfter = certificate.notValidAfter
            publicKey = Self.describe(certificate.publicKey)
            signatureAlgorithm = Self.describe(certificate.signatureAlgorithm)
            let extensions = certificate.extensions
            switch try extensions.basicConstraints {
            case .isCertificateAuthority(let maxPathLength):
                isCertificateAuthority = true
                pathLength = maxPathLength
            case .notCertificateAuthority, nil:
                isCertificateAuthority = false
                pathLength = nil
            }
            var usages: [String] = []
            if let ku = try extensions.keyUsage {
                let named: [(Bool, String)] = [
                    (ku.digitalSignature, "digitalSignature"), (ku.nonRepudiation, "nonRepudiation"),
                    (ku.keyEncipherment, "keyEncipherment"), (ku.dataEncipherment, "dataEncipherment"),
                    (ku.keyAgreement, "keyAgreement"), (ku.keyCertSign, "keyCertSign"), (ku.cRLSign, "cRLSign"),
                ]
                usages = named.filter(\.0).map(\.1)
            }
            keyUsage = usages
            extendedKeyUsage =
                try extensions.extendedKeyUsage.map { eku in
                    eku.map { usage -> String in
                        switch usage {
                        case .serverAuth: "serverAuth"
                        case .clientAuth: "clientAuth"
                        case .codeSigning: "codeSigning"
                        case .ocspSigning: "OCSPSigning"
                        default: "\(usage)"
                        }
                    }
                } ?? []
            var names: [String] = []
            var device: String?
            for name in try extensions.subjectAlternativeNames ?? SubjectAlternativeNames() {
                switch name {
                case .dnsName(let dns): names.append("DNS:\(dns)")
                case .uniformResourceIdentifier(let uri):
                    names.append("URI:\(uri)")
                    if uri.hasPrefix("urn:fleetward:device:") { device = String(uri.dropFirst(21)) }
                case .ipAddress(let octets):
                    let bytes = Array(octets.bytes)
                    let text = bytes.count == 4 || bytes.count == 16 ? ServerName.ip(bytes).description : bytes.hexString
                    names.append("IP:\(text)")
                case .rfc822Name(let mail): names.append("email:\(mail)")
                default: names.append("\(name)")
                }
            }
            subjectAlternativeNames = names
            deviceID = device
            policies = try Self.policyOIDs(certificate)
            profile = Self.profile(policies: policies)?.rawValue
            subjectKeyIdentifier = try extensions.subjectKeyIdentifier.map { Array($0.keyIdentifier).hexString }
            authorityKeyIdentifier = try extensions.authorityKeyIdentifier?.keyIdentifier.map { Array($0).hexString }
            sha256Fingerprint = SHA256.hash(data: der).hexString
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the certificate has an extension that cannot be decoded", underlying: error)
        }
    }

    /// A name in X.500 order with short attribute names: `O=Fleetward, CN=D-0042, serialNumber=D-0042`.
    public static func format(_ name: DistinguishedName) -> String {
        let short: [ASN1ObjectIdentifier: String] = [
            [2, 5, 4, 3]: "CN", [2, 5, 4, 5]: "serialNumber", [2, 5, 4, 6]: "C", [2, 5, 4, 7]: "L", [2, 5, 4, 8]: "ST",
            [2, 5, 4, 10]: "O", [2, 5, 4, 11]: "OU", [0, 9, 2342, 19_200_300, 100, 1, 25]: "DC",
            [1, 2, 840, 113_549, 1, 9, 1]: "emailAddress",
        ]
        return name.map { rdn in
            rdn.map { attribute in
                "\(short[attribute.type] ?? attribute.type.description)=\(String(describing: attribute.value))"
            }.joined(separator: " + ")
        }.joined(separator: ", ")
    }

    static func describe(_ algorithm: Certificate.SignatureAlgorithm) -> String {
        switch algorithm {
        case .ecdsaWithSHA256: "ecdsa-with-SHA256"
        case .ecdsaWithSHA384: "ecdsa-with-SHA384"
        case .ecdsaWithSHA512: "ecdsa-with-SHA512"
        case .sha256WithRSAEncryption: "sha256WithRSAEncryption"
        case .sha384WithRSAEncryption: "sha384WithRSAEncryption"
        case .sha512WithRSAEncryption: "sha512WithRSAEncryption"
        case .ed25519: "ED25519"
        default: "\(algorithm)"
        }
    }

    static func describe(_ key: Certificate.PublicKey) -> String {
        switch key.description {
        case "P256.PublicKey": "P-256"
        case "P384.PublicKey": "P-384"
        case "P521.PublicKey": "P-521"
        case "Ed25519.PublicKey": "Ed25519"
        case let other where other.hasPrefix("RSA"): "RSA-" + other.dropFirst(3).prefix(while: \.isNumber)
        case let other: other
        }
    }

    /// The Fleetward profile a policy OID names, if any.
    static func profile(policies: [String]) -> CertificateProfile? {
        policies.lazy.compactMap { CertificateProfile(policyOID: $0) }.first
    }

    /// Only what a relying party needs per connection: the Fleetward profile and the device ID
    /// (`urn:fleetward:device:` URI SAN), without formatting the rest of a summary.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/malformedInput`` when an extension cannot be decoded.
    public static func fleetwardIdentity(of certificate: Certificate) throws -> (profile: CertificateProfile?, deviceID: String?) {
        do {
            var device: String?
            for case .uniformResourceIdentifier(let uri) in try certificate.extensions.subjectAlternativeNames ?? SubjectAlternativeNames()
            where uri.hasPrefix("urn:fleetward:device:") {
                device = String(uri.dropFirst(21))
                break
            }
            return (profile(policies: try policyOIDs(certificate)), device)
        } catch {
            throw PKIError(.malformedInput, "the certificate has an extension that cannot be decoded", underlying: error)
        }
    }

    /// certificatePolicies' policyIdentifiers (RFC 5280 §4.2.1.4), dotted.
    static func policyOIDs(_ certificate: Certificate) throws -> [String] {
        guard let ext = certificate.extensions.first(where: { $0.oid == [2, 5, 29, 32] }) else { return [] }
        var oids: [String] = []
        let root = try DER.parse(ext.value)
        try DER.sequence(root, identifier: .sequence) { policies in
            while let policy = policies.next() {
                try DER.sequence(policy, identifier: .sequence) { info in
                    oids.append(try ASN1ObjectIdentifier(derEncoded: &info).description)
                    while info.next() != nil {}
                }
            }
        }
        return oids
    }
}

extension CertificateSummary {
    /// The summary as aligned `key: value` lines for a terminal.
    public var text: String {
        var lines: [(String, String)] = [
            ("Subject", subject),
            ("Issuer", issuer),
            ("Serial", serialNumber),
            ("Not before", Self.format(notBefore)),
            ("Not after", Self.format(notAfter)),
            ("Public key", publicKey),
            ("Signature", signatureAlgorithm),
            ("CA", isCertificateAuthority ? "yes" + (pathLength.map { " (path length \($0))" } ?? "") : "no"),
        ]
        if !keyUsage.isEmpty { lines.append(("Key usage", keyUsage.joined(separator: ", "))) }
        if !extendedKeyUsage.isEmpty { lines.append(("Extended key usage", extendedKeyUsage.joined(separator: ", "))) }
        if !subjectAlternativeNames.isEmpty { lines.append(("Names", subjectAlternativeNames.joined(separator: ", "))) }
        if let profile { lines.append(("Profile", profile)) }
        if let deviceID { lines.append(("Device", deviceID)) }
        if let subjectKeyIdentifier { lines.append(("Subject key ID", subjectKeyIdentifier)) }
        if let authorityKeyIdentifier { lines.append(("Authority key ID", authorityKeyIdentifier)) }
        lines.append(("SHA-256", sha256Fingerprint))
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }

    static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}

/// Parses a certificate from DER or PEM, within a size limit.
public enum CertificateDecoder {
    /// The largest certificate input accepted.
    public static let maximumBytes = 64 * 1024

    /// Parses every certificate in `bytes` (one DER certificate, or one or more PEM blocks).
    ///
    /// - Throws: ``PKIError`` with `inputTooLarge` or `malformedInput`.
    public static func certificates(from bytes: some Collection<UInt8>) throws -> [(certificate: Certificate, der: [UInt8])] {
        guard bytes.count <= maximumBytes * 16 else {
            throw PKIError(.inputTooLarge, "certificate input is \(bytes.count) bytes; the limit is \(maximumBytes * 16)")
        }
        let ders: [[UInt8]]
        if bytes.first == 0x30 {
            ders = [Array(bytes)]
        } else {
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw PKIError(.malformedInput, "input is neither a DER certificate nor PEM text")
            }
            ders = try PEM.decodeAll(text).filter { $0.label == "CERTIFICATE" }.map(\.der)
            guard !ders.isEmpty else {
                throw PKIError(.malformedInput, "the PEM input has no CERTIFICATE block")
            }
        }
        return try ders.map { der in
            guard der.count <= maximumBytes else {
                throw PKIError(.inputTooLarge, "certificate is \(der.count) bytes; the limit is \(maximumBytes)")
            }
            do {
                return (try Certificate(derEncoded: der), der)
            } catch {
                throw PKIError(.malformedInput, "the data is not an X.509 certificate", underlying: error)
            }
        }
    }
}
