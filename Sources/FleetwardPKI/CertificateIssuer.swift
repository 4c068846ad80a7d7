public import Foundation
public import X509
import Crypto
import SwiftASN1

/// A certificate that an issuer just signed, with the facts a registry records about it.
public struct IssuedCertificate: Sendable {
    /// The certificate's DER bytes.
    public let der: [UInt8]
    public let serialNumber: Certificate.SerialNumber
    public let profile: CertificateProfile
    public let identity: CertificateIdentity
    public let notValidBefore: Date
    public let notValidAfter: Date

    /// SHA-256 over ``der``, lower-case hex: the fingerprint `openssl x509 -fingerprint -sha256` prints.
    public var sha256Fingerprint: String { SHA256.hash(data: der).hexString }

    /// The certificate in PEM.
    public var pem: String { PEM.encode(der, label: "CERTIFICATE") }
}

/// Signs leaf certificates under one CA certificate and key.
///
/// This is the issuance hot path. Everything that is the same for every certificate of this CA
/// (issuer name, signature algorithm, authorityKeyIdentifier, the fixed extensions) is encoded
/// once at construction; per certificate only the serial, validity, subject, public key,
/// subjectKeyIdentifier and SAN are encoded, by hand, into the TBSCertificate (RFC 5280 §4.1).
public struct CertificateIssuer: Sendable {
    /// The CA's certificate.
    public let caCertificate: Certificate
    /// Which CA this is.
    public let role: CARole
    /// The organization written into every subject this CA issues.
    public let organization: String

    let key: SigningKey
    let issuerNameDER: [UInt8]
    let authorityKeyIdentifierDER: [UInt8]
    private let caNotValidBefore: Date
    private let caNotValidAfter: Date
    /// Per profile, the extensions that are the same in every certificate this CA issues.
    private let fixedExtensions: [CertificateProfile: [UInt8]]

    /// Creates an issuer for `caCertificate`, signing with `key`.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/invalidRequest`` when the key does not belong to
    ///   the certificate or the certificate is not a CA.
    ///   - revocationBaseURL: when set, leaf certificates carry a CRL distribution point
    ///     (`BASE/crl/<role>.crl`) and an OCSP access location (`BASE/ocsp`).
    public init(caCertificate: Certificate, key: SigningKey, role: CARole, organization: String, revocationBaseURL: String? = nil) throws {
        guard caCertificate.publicKey == key.publicKey else {
            throw PKIError(.invalidRequest, "the \(role) CA key does not match the \(role) CA certificate")
        }
        guard case .isCertificateAuthority = try caCertificate.extensions.basicConstraints else {
            throw PKIError(.invalidRequest, "the \(role) certificate is not a CA certificate")
        }
        self.caCertificate = caCertificate
        self.role = role
        self.organization = organization
        self.key = key
        self.issuerNameDER = try DERBytes.encode(caCertificate.subject)
        let caKeyID =
            try caCertificate.extensions.subjectKeyIdentifier?.keyIdentifier
            ?? ArraySlice(Insecure.SHA1.hash(data: caCertificate.publicKey.subjectPublicKeyInfoBytes))
        // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } (RFC 5280 §4.2.1.1)
        let akiValue = DERBytes.tlv(0x30, DERBytes.tlv(0x80, Array(caKeyID)))
        self.authorityKeyIdentifierDER = DERBytes.extensionDER(oid: DERBytes.OID.authorityKeyIdentifier, critical: false, value: akiValue)
        self.caNotValidBefore = caCertificate.notValidBefore
        self.caNotValidAfter = caCertificate.notValidAfter
        var fixed: [CertificateProfile: [UInt8]] = [:]
        let pointers = revocationBaseURL.map { Self.revocationPointers(base: $0, role: role) } ?? []
        for profile in CertificateProfile.allCases {
            // An OCSP responder's own certificate is not checked by OCSP (it carries ocsp-nocheck).
            fixed[profile] =
                Self.fixedExtensions(profile, isRSA: false, aki: authorityKeyIdentifierDER) + (profile == .ocsp ? [] : pointers)
        }
        self.fixedExtensions = fixed
    }

    /// cRLDistributionPoints (RFC 5280 §4.2.1.13) naming `BASE/crl/<role>.crl` and
    /// authorityInfoAccess (§4.2.2.1) with id-ad-ocsp `BASE/ocsp`.
    static func revocationPointers(base: String, role: CARole) -> [UInt8] {
        var base = base
        while base.hasSuffix("/") { base.removeLast() }
        // DistributionPoint { distributionPoint [0] { fullName [0] { uniformResourceIdentifier [6] } } }
        let crl = Array((base + "/crl/\(role.rawValue).crl").utf8)
        let point = DERBytes.tlv(0x30, DERBytes.tlv(0xA0, DERBytes.tlv(0xA0, DERBytes.tlv(0x86, crl))))
        var out = DERBytes.extensionDER(oid: [0x06, 0x03, 0x55, 0x1D, 0x1F], critical: false, value: DERBytes.tlv(0x30, point))
        // AccessDescription { id-ad-ocsp (1.3.6.1.5.5.7.48.1), uniformResourceIdentifier [6] }
        let ocspMethod: [UInt8] = [0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]
        let access = DERBytes.tlv(0x30, ocspMethod + DERBytes.tlv(0x86, Array((base + "/ocsp").utf8)))
        out += DERBytes.extensionDER(
            oid: [0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01], critical: false, value: DERBytes.tlv(0x30, access))
        return out
    }

    /// basicConstraints, keyUsage, extendedKeyUsage, authorityKeyIdentifier, certificatePolicies
    /// and (for OCSP responders) ocsp-nocheck: everything but the key- and identity-specific ones.
    static func fixedExtensions(_ profile: CertificateProfile, isRSA: Bool, aki: [UInt8]) -> [UInt8] {
        var out = DERBytes.basicConstraintsEndEntity
        out += profile.keyUsageExtension(isRSA: isRSA)
        out += profile.extendedKeyUsageExtension
        out += aki
        // certificatePolicies: the profile's Fleetward policy OID (RFC 5280 §4.2.1.4)
        let policy = DERBytes.tlv(0x30, DERBytes.tlv(0x30, DERBytes.tlv(0x06, profile.policyOIDContent)))
        out += DERBytes.extensionDER(oid: DERBytes.OID.certificatePolicies, critical: false, value: policy)
        if profile == .ocsp {
            // id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1)
            out += DERBytes.extensionDER(oid: DERBytes.OID.ocspNoCheck, critical: false, value: [0x05, 0x00])
        }
        return out
    }

    /// Signs a certificate for `request`'s public key.
    ///
    /// - Parameters:
    ///   - request: A checked CSR; only its public key is used.
    ///   - profile: What the certificate is for; must be one this CA issues.
    ///   - identity: Who it is for; must fit the profile.
    ///   - days: Lifetime; the profile's default when nil. Capped at the CA's own expiry.
    ///   - now: The issuance time. notBefore is set 60 s earlier to absorb clock skew.
    ///   - rng: The source of the serial number.
    /// - Throws: ``PKIError`` with `invalidRequest` (profile, identity or lifetime not allowed, CA expired).
    public func issue(
        _ request: CertificateRequest,
        profile: CertificateProfile,
        identity: CertificateIdentity,
        days: Int? = nil,
        lifetime: TimeInterval? = nil,
        now: Date,
        using rng: inout some RandomNumberGenerator
    ) throws -> IssuedCertificate {
        try issue(
            publicKey: request.publicKey, spki: request.subjectPublicKeyInfo, keyBits: request.subjectPublicKeyBits,
            profile: profile, identity: identity, days: days, lifetime: lifetime, now: now, using: &rng
        )
    }

    /// Signs a certificate for `publicKey`; see ``issue(_:profile:identity:days:now:using:)``.
    public func issue(
        publicKey: Certificate.PublicKey,
        profile: CertificateProfile,
        identity: CertificateIdentity,
        days: Int? = nil,
        now: Date,
        using rng: inout some RandomNumberGenerator
    ) throws -> IssuedCertificate {
        let spki = try DERBytes.encode(publicKey)
        return try issue(
            publicKey: publicKey, spki: spki, keyBits: publicKey.subjectPublicKeyInfoBytes,
            profile: profile, identity: identity, days: days, lifetime: nil, now: now, using: &rng
        )
    }

    private func issue(
        publicKey: Certificate.PublicKey,
        spki: [UInt8],
        keyBits: ArraySlice<UInt8>,
        profile: CertificateProfile,
        identity: CertificateIdentity,
        days: Int?,
        lifetime: TimeInterval?,
        now: Date,
        using rng: inout some RandomNumberGenerator
    ) throws -> IssuedCertificate {
        guard profile.allowedIssuers.contains(role) else {
            let allowed = profile.allowedIssuers.map(\.rawValue).sorted().joined(separator: " or ")
            throw PKIError(.invalidRequest, "profile \(profile) is issued by the \(allowed) CA, not the \(role) CA")
        }
        let lifetimeDays = days ?? profile.defaultDays
        guard (1...profile.maximumDays).contains(lifetimeDays) else {
            throw PKIError(.invalidRequest, "a \(profile) certificate may last 1 to \(profile.maximumDays) days, not \(lifetimeDays)")
        }
        if let lifetime {
            guard (60...Double(profile.maximumDays) * 86_400).contains(lifetime) else {
                throw PKIError(
                    .invalidRequest, "a \(profile) certificate may last 60 seconds to \(profile.maximumDays) days, not \(lifetime) s")
            }
        }
        guard now < caNotValidAfter else {
            throw PKIError(.invalidRequest, "the \(role) CA expired on \(caNotValidAfter); renew the CA before issuing")
        }
        let notBefore = max(now.addingTimeInterval(-60), caNotValidBefore)
        let notAfter = min(now.addingTimeInterval(lifetime ?? Double(lifetimeDays) * 86_400), caNotValidAfter)
        let serial = SerialNumberGenerator.make(at: now, using: &rng)

        let subject = try subjectDER(profile: profile, identity: identity)
        let tbs = tbsCertificate(
            serial: serial, notBefore: notBefore, notAfter: notAfter, subject: subject, spki: spki,
            keyBits: keyBits, isRSA: publicKey.description.hasPrefix("RSA"), profile: profile, identity: identity
        )
        let signature = try key.signDER(tbs)
        var bitString: [UInt8] = [0x00]
        bitString.append(contentsOf: signature)
        let certificate = DERBytes.tlv(0x30, tbs + key.signatureAlgorithmDER + DERBytes.tlv(0x03, bitString))
        return IssuedCertificate(
            der: certificate, serialNumber: serial, profile: profile, identity: identity,
            notValidBefore: notBefore, notValidAfter: notAfter
        )
    }

    private func subjectDER(profile: CertificateProfile, identity: CertificateIdentity) throws -> [UInt8] {
        var rdns: [[UInt8]] = [DERBytes.rdn(DERBytes.OID.organizationName, utf8: organization)]
        switch (profile, identity) {
        case (.device, .device(let id)), (.birth, .device(let id)):
            rdns.append(DERBytes.rdn(DERBytes.OID.commonName, utf8: id.rawValue))
            rdns.append(DERBytes.rdn(DERBytes.OID.serialNumber, printable: id.rawValue))
        case (.server, .server(let names)):
            guard let first = names.first else {
                throw PKIError(.invalidRequest, "a server certificate needs at least one DNS name or IP address")
            }
            if first.description.utf8.count <= 64 {
                rdns.append(DERBytes.rdn(DERBytes.OID.commonName, utf8: first.description))
            }
        case (.ocsp, .ocspResponder):
            rdns.append(DERBytes.rdn(DERBytes.OID.commonName, utf8: "\(organization) OCSP Responder (\(role))"))
        case (.codesign, .releaseSigner):
            rdns.append(DERBytes.rdn(DERBytes.OID.commonName, utf8: "\(organization) Release Signing"))
        default:
            throw PKIError(.invalidRequest, "profile \(profile) cannot be issued to \(identity.kind)")
        }
        return DERBytes.tlv(0x30, rdns.flatMap { $0 })
    }

    private func tbsCertificate(
        serial: Certificate.SerialNumber, notBefore: Date, notAfter: Date, subject: [UInt8], spki: [UInt8],
        keyBits: ArraySlice<UInt8>, isRSA: Bool, profile: CertificateProfile, identity: CertificateIdentity
    ) -> [UInt8] {
        var extensions: [UInt8] = []
        extensions.reserveCapacity(384)
        extensions +=
            (isRSA && profile == .server)
            ? Self.fixedExtensions(profile, isRSA: true, aki: authorityKeyIdentifierDER) : fixedExtensions[profile]!
        // subjectKeyIdentifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1)
        let keyID = Array(Insecure.SHA1.hash(data: keyBits))
        extensions += DERBytes.extensionDER(oid: DERBytes.OID.subjectKeyIdentifier, critical: false, value: DERBytes.tlv(0x04, keyID))
        if let san = DERBytes.subjectAltName(for: identity) {
            extensions += DERBytes.extensionDER(oid: DERBytes.OID.subjectAltName, critical: false, value: san)
        }

        var body: [UInt8] = []
        body.reserveCapacity(1024)
        body += [0xA0, 0x03, 0x02, 0x01, 0x02]  // version [0] EXPLICIT v3
        body += DERBytes.tlv(0x02, Array(serial.bytes))
        body += key.signatureAlgorithmDER
        body += issuerNameDER
        body += DERBytes.tlv(0x30, ASN1Time.der(notBefore) + ASN1Time.der(notAfter))
        body += subject
        body += spki
        body += DERBytes.tlv(0xA3, DERBytes.tlv(0x30, extensions))
        return DERBytes.tlv(0x30, body)
    }
}

extension CertificateIdentity {
    var kind: String {
        switch self {
        case .device(let id): "device \(id)"
        case .server: "a server"
        case .ocspResponder: "an OCSP responder"
        case .releaseSigner: "the release signer"
        }
    }
}

extension CertificateProfile {
    /// keyUsage, critical (RFC 5280 §4.2.1.3). RSA server keys may also do key transport in TLS 1.2.
    func keyUsageExtension(isRSA: Bool) -> [UInt8] {
        let bits: [UInt8] = (self == .server && isRSA) ? [0x05, 0xA0] : [0x07, 0x80]
        return DERBytes.extensionDER(oid: DERBytes.OID.keyUsage, critical: true, value: DERBytes.tlv(0x03, bits))
    }

    /// extendedKeyUsage (RFC 5280 §4.2.1.12).
    var extendedKeyUsageExtension: [UInt8] {
        let purpose: UInt8
        switch self {
        case .device, .birth: purpose = 0x02  // id-kp-clientAuth
        case .server: purpose = 0x01  // id-kp-serverAuth
        case .ocsp: purpose = 0x09  // id-kp-OCSPSigning
        case .codesign: purpose = 0x03  // id-kp-codeSigning
        }
        let oid: [UInt8] = [0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, purpose]
        return DERBytes.extensionDER(oid: DERBytes.OID.extendedKeyUsage, critical: false, value: DERBytes.tlv(0x30, oid))
    }
}

/// Hand-written DER for the issuance hot path.
enum DERBytes {
    /// Full TLVs of the OIDs used here.
    enum OID {
        static let organizationName: [UInt8] = [0x06, 0x03, 0x55, 0x04, 0x0A]
        static let commonName: [UInt8] = [0x06, 0x03, 0x55, 0x04, 0x03]
        static let serialNumber: [UInt8] = [0x06, 0x03, 0x55, 0x04, 0x05]
        static let subjectKeyIdentifier: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x0E]
        static let keyUsage: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x0F]
        static let subjectAltName: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x11]
        static let basicConstraints: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x13]
        static let certificatePolicies: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x20]
        static let authorityKeyIdentifier: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x23]
        static let extendedKeyUsage: [UInt8] = [0x06, 0x03, 0x55, 0x1D, 0x25]
        static let ocspNoCheck: [UInt8] = [0x06, 0x09, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x05]
    }

    /// basicConstraints, critical, cA FALSE (the DEFAULT, so an empty SEQUENCE).
    static let basicConstraintsEndEntity: [UInt8] = extensionDER(oid: OID.basicConstraints, critical: true, value: [0x30, 0x00])

    /// The DER encoding of `value`.
    static func encode(_ value: some DERSerializable) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(value)
        return serializer.serializedBytes
    }

    static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [tag]
        out.reserveCapacity(content.count + 6)
        let n = content.count
        if n < 0x80 {
            out.append(UInt8(n))
        } else if n <= 0xFF {
            out += [0x81, UInt8(n)]
        } else if n <= 0xFFFF {
            out += [0x82, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            out += [0x83, UInt8(n >> 16), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        }
        out += content
        return out
    }

    /// Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
    static func extensionDER(oid: [UInt8], critical: Bool, value: [UInt8]) -> [UInt8] {
        tlv(0x30, oid + (critical ? [0x01, 0x01, 0xFF] : []) + tlv(0x04, value))
    }

    static func rdn(_ oid: [UInt8], utf8 value: String) -> [UInt8] {
        tlv(0x31, tlv(0x30, oid + tlv(0x0C, Array(value.utf8))))
    }

    static func rdn(_ oid: [UInt8], printable value: String) -> [UInt8] {
        tlv(0x31, tlv(0x30, oid + tlv(0x13, Array(value.utf8))))
    }

    /// GeneralNames for the identity (RFC 5280 §4.2.1.6), or nil when it has none.
    static func subjectAltName(for identity: CertificateIdentity) -> [UInt8]? {
        switch identity {
        case .device(let id):
            return tlv(0x30, tlv(0x86, Array(id.uri.utf8)))  // uniformResourceIdentifier [6]
        case .server(let names):
            var content: [UInt8] = []
            for name in names {
                switch name {
                case .dns(let dns): content += tlv(0x82, Array(dns.utf8))  // dNSName [2]
                case .ip(let bytes): content += tlv(0x87, bytes)  // iPAddress [7]
                }
            }
            return tlv(0x30, content)
        case .ocspResponder, .releaseSigner:
            return nil
        }
    }
}

extension Sequence where Element == UInt8 {
    /// Lower-case hexadecimal.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Digest {
    /// Lower-case hexadecimal, read from the digest's bytes at once (iterating a digest as a
    /// sequence copies it for every byte).
    var hexString: String { withUnsafeBytes { $0.hexString } }
}
