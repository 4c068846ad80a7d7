public import X509
import Crypto
import _CryptoExtras
import SwiftASN1

/// A PKCS#10 certificate signing request that passed Fleetward's checks.
///
/// Construction is the check: the bytes are parsed within a size limit, the signature algorithm
/// and key type are on the allow-list, and the signature verifies under the CSR's own key (proof
/// of possession, RFC 2986 §3). Nothing else from the CSR reaches a certificate: subject and
/// extensions come from the profile and the proven identity.
public struct CertificateRequest: Sendable {
    /// The largest CSR accepted, DER or PEM. An RSA-8192 CSR is about 2.5 KB.
    public static let maximumBytes = 64 * 1024
    /// The largest RSA modulus accepted; bigger keys only cost the CA time.
    public static let maximumRSABits = 8192

    /// The requester's public key.
    public let publicKey: Certificate.PublicKey
    /// The subject the requester asked for; used only to check it against the proven identity.
    public let requestedSubject: DistinguishedName
    /// `P-256`, `P-384`, `Ed25519` or `RSA-<bits>`.
    public let keyDescription: String
    /// The DER bytes of the CSR.
    public let der: [UInt8]
    /// The DER SubjectPublicKeyInfo exactly as the CSR carries it (and as its signature covers).
    let subjectPublicKeyInfo: [UInt8]
    /// The subjectPublicKey BIT STRING's key bytes, for the subjectKeyIdentifier.
    let subjectPublicKeyBits: ArraySlice<UInt8>

    /// SHA-256 of the DER SubjectPublicKeyInfo: the key fingerprint an allow-list row may register
    /// (`openssl pkey -pubout -outform DER | sha256sum`).
    public var subjectPublicKeySHA256: [UInt8] { Array(SHA256.hash(data: subjectPublicKeyInfo)) }

    /// Parses and checks a CSR given as DER or PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`).
    ///
    /// - Throws: ``PKIError`` with `inputTooLarge`, `malformedInput`, `unsupportedAlgorithm`,
    ///   `unsupportedKey` or `badSignature`.
    public init(bytes: some Collection<UInt8>) throws {
        guard bytes.count <= Self.maximumBytes else {
            throw PKIError(.inputTooLarge, "CSR is \(bytes.count) bytes; the limit is \(Self.maximumBytes)")
        }
        let der: [UInt8]
        if bytes.first == 0x30 {
            der = Array(bytes)
        } else {
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw PKIError(.malformedInput, "CSR is neither DER nor PEM text")
            }
            let blocks = try PEM.decodeAll(text)
            guard let block = blocks.first(where: { $0.label == "CERTIFICATE REQUEST" || $0.label == "NEW CERTIFICATE REQUEST" }) else {
                throw PKIError(
                    .malformedInput, "expected a PEM CERTIFICATE REQUEST block, found \(blocks.map(\.label).joined(separator: ", "))")
            }
            der = block.der
        }
        try self.init(der: der)
    }

    /// Parses and checks a DER CSR.
    public init(der: [UInt8]) throws {
        guard der.count <= Self.maximumBytes else {
            throw PKIError(.inputTooLarge, "CSR is \(der.count) bytes; the limit is \(Self.maximumBytes)")
        }
        let parts = try RawParts(der)
        if let key = parts.p256SHA256Key {
            // The common device case (P-256, ecdsa-with-SHA256, v1) from the one parse above.
            let subject: DistinguishedName
            do {
                subject = try DistinguishedName(derEncoded: parts.subject)
                try parts.checkAttributes()
            } catch {
                throw PKIError(.malformedInput, "the data is not a PKCS#10 certificate signing request", underlying: error)
            }
            guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: parts.signature),
                key.isValidSignature(signature, for: SHA256.hash(data: parts.certificationRequestInfo))
            else {
                throw PKIError(.badSignature, "CSR signature does not verify: the request was altered or not signed by its key")
            }
            self.publicKey = Certificate.PublicKey(key)
            self.requestedSubject = subject
            self.keyDescription = "P-256"
            self.der = der
            self.subjectPublicKeyInfo = Array(parts.subjectPublicKeyInfo)
            self.subjectPublicKeyBits = parts.subjectPublicKeyBits
            return
        }
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(derEncoded: der)
        } catch {
            // swift-certificates refuses to parse some keys (small RSA, unknown curves); say which.
            if let key = KeyDiagnosis.describeKey(inCSR: der), !["P-256", "P-384", "Ed25519"].contains(key) {
                throw PKIError(.unsupportedKey, Self.unsupportedKeyMessage(key), underlying: error)
            }
            throw PKIError(.malformedInput, "the data is not a PKCS#10 certificate signing request", underlying: error)
        }
        switch csr.signatureAlgorithm {
        case .ecdsaWithSHA256, .ecdsaWithSHA384, .ecdsaWithSHA512,
            .sha256WithRSAEncryption, .sha384WithRSAEncryption, .sha512WithRSAEncryption, .ed25519:
            break
        default:
            throw PKIError(
                .unsupportedAlgorithm, "CSR is signed with \(csr.signatureAlgorithm); allowed are ECDSA or RSA with SHA-2, and Ed25519")
        }
        let key = csr.publicKey
        let description: String
        if P256.Signing.PublicKey(key) != nil {
            description = "P-256"
        } else if P384.Signing.PublicKey(key) != nil {
            description = "P-384"
        } else if Curve25519.Signing.PublicKey(key) != nil {
            description = "Ed25519"
        } else if let rsa = _RSA.Signing.PublicKey(key) {
            let bits = rsa.keySizeInBits
            guard bits >= 2048, bits <= Self.maximumRSABits else {
                throw PKIError(.unsupportedKey, Self.unsupportedKeyMessage("RSA-\(bits)"))
            }
            description = "RSA-\(bits)"
        } else {
            throw PKIError(.unsupportedKey, Self.unsupportedKeyMessage(KeyDiagnosis.describeKey(inCSR: der) ?? "\(key)"))
        }
        guard Self.verify(parts, key: key, algorithm: csr.signatureAlgorithm) ?? key.isValidSignature(csr.signature, for: csr) else {
            throw PKIError(.badSignature, "CSR signature does not verify: the request was altered or not signed by its key")
        }
        self.publicKey = key
        self.requestedSubject = csr.subject
        self.keyDescription = description
        self.der = der
        self.subjectPublicKeyInfo = Array(parts.subjectPublicKeyInfo)
        self.subjectPublicKeyBits = parts.subjectPublicKeyBits
    }

    /// Verifies an ECDSA or Ed25519 proof of possession straight over the raw request bytes.
    ///
    /// Returns nil for keys left to swift-certificates (RSA). The signature is checked against
    /// the exact `certificationRequestInfo` octets that were received (RFC 2986 §4.2).
    static func verify(_ parts: RawParts, key: Certificate.PublicKey, algorithm: Certificate.SignatureAlgorithm) -> Bool? {
        let info = parts.certificationRequestInfo
        let signature = parts.signature
        func digestVerify<D: Digest>(_ digest: D) -> Bool? {
            if let p256 = P256.Signing.PublicKey(key) {
                guard let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
                return p256.isValidSignature(sig, for: digest)
            }
            if let p384 = P384.Signing.PublicKey(key) {
                guard let sig = try? P384.Signing.ECDSASignature(derRepresentation: signature) else { return false }
                return p384.isValidSignature(sig, for: digest)
            }
            return nil
        }
        switch algorithm {
        case .ecdsaWithSHA256: return digestVerify(SHA256.hash(data: info))
        case .ecdsaWithSHA384: return digestVerify(SHA384.hash(data: info))
        case .ecdsaWithSHA512: return digestVerify(SHA512.hash(data: info))
        case .ed25519:
            guard let ed = Curve25519.Signing.PublicKey(key) else { return false }
            return ed.isValidSignature(signature, for: info)
        default:
            return nil
        }
    }

    /// The parts of a CertificationRequest as received (RFC 2986 §4):
    /// `SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING }`.
    struct RawParts {
        var certificationRequestInfo: ArraySlice<UInt8>
        var version: ArraySlice<UInt8> = []
        var subject: ArraySlice<UInt8> = []
        var subjectPublicKeyInfo: ArraySlice<UInt8>
        var keyAlgorithm: ArraySlice<UInt8> = []
        var subjectPublicKeyBits: ArraySlice<UInt8>
        var attributes: ASN1Node?
        var signatureAlgorithm: ArraySlice<UInt8> = []
        var signature: ArraySlice<UInt8>

        /// `INTEGER 0`, `AlgorithmIdentifier { id-ecPublicKey, prime256v1 }` and
        /// `AlgorithmIdentifier { ecdsa-with-SHA256 }` as DER (RFC 5480, RFC 5758 §3.2).
        static let version1: [UInt8] = [0x02, 0x01, 0x00]
        static let p256KeyAlgorithm: [UInt8] = [
            0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07,
        ]
        static let ecdsaWithSHA256: [UInt8] = [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]

        /// The key of a v1 request for an uncompressed P-256 key signed with ecdsa-with-SHA256;
        /// nil for anything else, which goes through swift-certificates' parser.
        var p256SHA256Key: P256.Signing.PublicKey? {
            guard attributes != nil, version.elementsEqual(Self.version1), keyAlgorithm.elementsEqual(Self.p256KeyAlgorithm),
                signatureAlgorithm.elementsEqual(Self.ecdsaWithSHA256)
            else { return nil }
            return try? P256.Signing.PublicKey(x963Representation: subjectPublicKeyBits)
        }

        /// The attributes as swift-certificates reads them: `[0] IMPLICIT SET OF SEQUENCE { OID, SET }`.
        func checkAttributes() throws {
            guard let attributes else { throw ASN1Error.invalidASN1Object(reason: "no attributes") }
            _ = try DER.set(
                of: CertificateSigningRequest.Attribute.self, identifier: .init(tagWithNumber: 0, tagClass: .contextSpecific),
                rootNode: attributes)
        }

        init(_ der: [UInt8]) throws {
            do {
                let root = try DER.parse(der)
                var info: ArraySlice<UInt8> = []
                var spki: ArraySlice<UInt8> = []
                var bits: ArraySlice<UInt8> = []
                var signature: ArraySlice<UInt8> = []
                var signatureAlgorithm: ArraySlice<UInt8> = []
                var version: ArraySlice<UInt8> = []
                var subject: ArraySlice<UInt8> = []
                var keyAlgorithm: ArraySlice<UInt8> = []
                var attributes: ASN1Node?
                try DER.sequence(root, identifier: .sequence) { nodes in
                    guard let infoNode = nodes.next(), let algorithmNode = nodes.next(), let signatureNode = nodes.next() else {
                        throw ASN1Error.invalidASN1Object(reason: "CertificationRequest needs three elements")
                    }
                    info = infoNode.encodedBytes
                    signatureAlgorithm = algorithmNode.encodedBytes
                    try DER.sequence(infoNode, identifier: .sequence) { fields in
                        version = fields.next()?.encodedBytes ?? []
                        subject = fields.next()?.encodedBytes ?? []
                        guard let spkiNode = fields.next() else {
                            throw ASN1Error.invalidASN1Object(reason: "no subjectPublicKeyInfo")
                        }
                        spki = spkiNode.encodedBytes
                        try DER.sequence(spkiNode, identifier: .sequence) { keyInfo in
                            keyAlgorithm = keyInfo.next()?.encodedBytes ?? []
                            guard let keyNode = keyInfo.next(), keyNode.identifier == .bitString,
                                case .primitive(let content) = keyNode.content, content.first == 0
                            else {
                                throw ASN1Error.invalidASN1Object(reason: "subjectPublicKey is not a whole-octet BIT STRING")
                            }
                            bits = content.dropFirst()
                        }
                        attributes = fields.next()
                        if fields.next() != nil { attributes = nil }  // more than the four fields: not for the fast path
                    }
                    guard signatureNode.identifier == .bitString, case .primitive(let content) = signatureNode.content,
                        let unusedBits = content.first
                    else {
                        throw ASN1Error.invalidASN1Object(reason: "signature is not a BIT STRING")
                    }
                    // A BIT STRING of 8n-1 bits is valid DER when its padding bit is zero, and
                    // swift-certificates would then verify the whole octets; a signature is whole
                    // octets (RFC 2986 §4.2, RFC 5480 §2.2), so refuse anything else.
                    guard unusedBits == 0 else {
                        throw PKIError(
                            .malformedInput, "CSR signature BIT STRING declares \(unusedBits) unused bits; a signature is whole octets")
                    }
                    signature = content.dropFirst()
                    guard nodes.next() == nil else {
                        throw ASN1Error.invalidASN1Object(reason: "trailing elements")
                    }
                }
                certificationRequestInfo = info
                self.signatureAlgorithm = signatureAlgorithm
                self.version = version
                self.subject = subject
                self.keyAlgorithm = keyAlgorithm
                self.attributes = attributes
                subjectPublicKeyInfo = spki
                subjectPublicKeyBits = bits
                self.signature = signature
            } catch let error as PKIError {
                throw error
            } catch {
                throw PKIError(.malformedInput, "the data is not a PKCS#10 certificate signing request", underlying: error)
            }
        }
    }

    static func unsupportedKeyMessage(_ key: String) -> String {
        "CSR has a \(key) key; allowed are P-256, P-384, Ed25519 and RSA of 2048 to \(maximumRSABits) bits"
    }

    /// Refuses the CSR when its subject names anyone but `identity`.
    ///
    /// A device CSR may leave the subject empty or carry commonName and serialNumber equal to the
    /// device ID; a server CSR's commonName, if any, must be one of the server's names. Other
    /// attributes are ignored (they are never copied into the certificate).
    ///
    /// - Throws: ``PKIError/Code-swift.struct/identityMismatch`` naming the attribute.
    public func requireSubject(matching identity: CertificateIdentity) throws {
        let serialNumberOID: ASN1ObjectIdentifier = [2, 5, 4, 5]
        for rdn in requestedSubject {
            for attribute in rdn {
                let value = String(describing: attribute.value)
                let isSerialNumber = attribute.type == serialNumberOID
                let isCommonName = attribute.type == .RDNAttributeType.commonName
                switch identity {
                case .device(let id) where isSerialNumber || isCommonName:
                    guard value == id.rawValue else {
                        let name = isSerialNumber ? "serialNumber" : "commonName"
                        throw PKIError(.identityMismatch, "CSR subject \(name) '\(value)' does not match device \(id)")
                    }
                case .server(let names) where isCommonName:
                    guard names.contains(where: { $0.description == value.lowercased() }) else {
                        let list = names.map(\.description).joined(separator: ", ")
                        throw PKIError(.identityMismatch, "CSR subject commonName '\(value)' is not one of the server names \(list)")
                    }
                default:
                    continue
                }
            }
        }
    }
}
