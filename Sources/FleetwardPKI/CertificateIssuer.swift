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

        let isRSA = publicKey.description.hasPrefix("RSA")
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } (RFC 5280 §4.1),
        // written into one buffer; the signature covers the TBSCertificate's bytes in place.
        var certificate = DERWriter(capacity: 1024)
        try certificate.constructed(0x30) { out in
            let tbsStart = out.count
            try writeTBSCertificate(
                into: &out, serial: serial, notBefore: notBefore, notAfter: notAfter, spki: spki, keyBits: keyBits, isRSA: isRSA,
                profile: profile, identity: identity)
            let signature = try key.signDER(out.bytes[tbsStart...])
            out.append(key.signatureAlgorithmDER)
            out.constructed(0x03) { bits in
                bits.append(byte: 0x00)
                bits.append(signature)
            }
        }
        return IssuedCertificate(
            der: certificate.bytes, serialNumber: serial, profile: profile, identity: identity,
            notValidBefore: notBefore, notValidAfter: notAfter
        )
    }

    /// Name ::= SEQUENCE OF RelativeDistinguishedName: O, then what the profile names.
    private func writeSubject(into out: inout DERWriter, profile: CertificateProfile, identity: CertificateIdentity) throws {
        switch (profile, identity) {
        case (.device, .device), (.birth, .device), (.server, .server), (.ocsp, .ocspResponder), (.codesign, .releaseSigner):
            break
        default:
            throw PKIError(.invalidRequest, "profile \(profile) cannot be issued to \(identity.kind)")
        }
        if case .server(let names) = identity, names.isEmpty {
            throw PKIError(.invalidRequest, "a server certificate needs at least one DNS name or IP address")
        }
        out.constructed(0x30) { name in
            name.rdn(DERBytes.OID.organizationName, 0x0C, organization.utf8)
            switch identity {
            case .device(let id):
                name.rdn(DERBytes.OID.commonName, 0x0C, id.rawValue.utf8)
                name.rdn(DERBytes.OID.serialNumber, 0x13, id.rawValue.utf8)
            case .server(let names):
                let first = names[0].description
                if first.utf8.count <= 64 { name.rdn(DERBytes.OID.commonName, 0x0C, first.utf8) }
            case .ocspResponder:
                name.rdn(DERBytes.OID.commonName, 0x0C, "\(organization) OCSP Responder (\(role))".utf8)
            case .releaseSigner:
                name.rdn(DERBytes.OID.commonName, 0x0C, "\(organization) Release Signing".utf8)
            }
        }
    }

    private func writeTBSCertificate(
        into out: inout DERWriter, serial: Certificate.SerialNumber, notBefore: Date, notAfter: Date, spki: [UInt8],
        keyBits: ArraySlice<UInt8>, isRSA: Bool, profile: CertificateProfile, identity: CertificateIdentity
    ) throws {
        try out.constructed(0x30) { tbs in
            tbs.append([0xA0, 0x03, 0x02, 0x01, 0x02])  // version [0] EXPLICIT v3
            serial.bytes.withUnsafeBytes { tbs.element(0x02, $0) }
            tbs.append(key.signatureAlgorithmDER)
            tbs.append(issuerNameDER)
            tbs.constructed(0x30) { validity in
                validity.time(notBefore)
                validity.time(notAfter)
            }
            try writeSubject(into: &tbs, profile: profile, identity: identity)
            tbs.append(spki)
            tbs.constructed(0xA3) { explicit in
                explicit.constructed(0x30) { extensions in
                    extensions.append(
                        (isRSA && profile == .server)
                            ? Self.fixedExtensions(profile, isRSA: true, aki: authorityKeyIdentifierDER) : fixedExtensions[profile]!)
                    // subjectKeyIdentifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1)
                    extensions.extensionValue(DERBytes.OID.subjectKeyIdentifier, critical: false) { value in
                        Insecure.SHA1.hash(data: keyBits).withUnsafeBytes { value.element(0x04, $0) }
                    }
                    if case .device(let id) = identity {
                        extensions.extensionValue(DERBytes.OID.subjectAltName, critical: false) { value in
                            value.constructed(0x30) { $0.element(0x86, id.uri.utf8) }  // uniformResourceIdentifier [6]
                        }
                    } else if let san = DERBytes.subjectAltName(for: identity) {
                        extensions.extensionValue(DERBytes.OID.subjectAltName, critical: false) { $0.append(san) }
                    }
                }
            }
        }
    }
}

extension DERWriter {
    /// Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
    mutating func extensionValue(_ oid: [UInt8], critical: Bool, _ value: (inout DERWriter) -> Void) {
        constructed(0x30) { ext in
            ext.append(oid)
            if critical { ext.append([0x01, 0x01, 0xFF]) }
            ext.constructed(0x04, value)
        }
    }

    /// RelativeDistinguishedName: SET { SEQUENCE { type, value } } with the value's string tag.
    mutating func rdn(_ oid: [UInt8], _ stringTag: UInt8, _ value: some Collection<UInt8>) {
        constructed(0x31) { set in
            set.constructed(0x30) { pair in
                pair.append(oid)
                pair.element(stringTag, value)
            }
        }
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
        var out = DERWriter(capacity: content.count + 6)
        out.element(tag, content)
        return out.bytes
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
