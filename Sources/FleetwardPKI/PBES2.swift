import Foundation
import Crypto
import _CryptoExtras
import SwiftASN1

/// Password-based encryption of PKCS#8 private keys (RFC 8018 PBES2, RFC 5958 EncryptedPrivateKeyInfo).
///
/// Fleetward writes PBKDF2-HMAC-SHA256 with a random 16-byte salt and AES-256-CBC with a random
/// IV, which OpenSSL opens with `openssl pkey -passin …`. Reading accepts the same scheme with
/// HMAC-SHA256/384/512 and AES-128/192/256-CBC, and refuses iteration counts past
/// ``maximumIterations`` so a crafted file cannot stall the process.
public enum PBES2 {
    /// OWASP's 2023 guidance for PBKDF2-HMAC-SHA256.
    public static let defaultIterations = 600_000
    /// The most a file may ask for when read.
    public static let maximumIterations = 10_000_000
    /// The fewest Fleetward will write.
    public static let minimumIterations = 1_000

    /// The PEM label of an EncryptedPrivateKeyInfo.
    public static let pemLabel = "ENCRYPTED PRIVATE KEY"

    enum OID {
        static let pbes2: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 1, 5, 13]
        static let pbkdf2: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 1, 5, 12]
        static let hmacWithSHA1: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 2, 7]
        static let hmacWithSHA256: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 2, 9]
        static let hmacWithSHA384: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 2, 10]
        static let hmacWithSHA512: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 2, 11]
        static let aes128CBC: ASN1ObjectIdentifier = [2, 16, 840, 1, 101, 3, 4, 1, 2]
        static let aes192CBC: ASN1ObjectIdentifier = [2, 16, 840, 1, 101, 3, 4, 1, 22]
        static let aes256CBC: ASN1ObjectIdentifier = [2, 16, 840, 1, 101, 3, 4, 1, 42]
    }

    /// Encrypts a PKCS#8 PrivateKeyInfo and returns the DER EncryptedPrivateKeyInfo.
    ///
    /// - Parameters:
    ///   - pkcs8: The plain PrivateKeyInfo.
    ///   - passphrase: The passphrase's UTF-8 bytes.
    ///   - iterations: PBKDF2 iterations, at least ``minimumIterations``.
    ///   - rng: Source of the salt and IV; pass a `SystemRandomNumberGenerator` outside tests.
    public static func encrypt(
        pkcs8: [UInt8],
        passphrase: [UInt8],
        iterations: Int = defaultIterations,
        using rng: inout some RandomNumberGenerator
    ) throws -> [UInt8] {
        guard (minimumIterations...maximumIterations).contains(iterations) else {
            throw PKIError(
                .invalidRequest,
                "PBKDF2 iteration count \(iterations) is outside \(minimumIterations)...\(maximumIterations)"
            )
        }
        let salt = randomBytes(16, using: &rng)
        let ivBytes = randomBytes(16, using: &rng)
        let key = try KDF.Insecure.PBKDF2.deriveKey(
            from: passphrase, salt: salt, using: .sha256, outputByteCount: 32, unsafeUncheckedRounds: iterations
        )
        let ciphertext = try AES._CBC.encrypt(pkcs8, using: key, iv: try AES._CBC.IV(ivBytes: ivBytes))

        var serializer = DER.Serializer()
        try serializer.appendConstructedNode(identifier: .sequence) { epki in
            // encryptionAlgorithm: PBES2 (RFC 8018 §A.4)
            try epki.appendConstructedNode(identifier: .sequence) { alg in
                try alg.serialize(OID.pbes2)
                try alg.appendConstructedNode(identifier: .sequence) { params in
                    // keyDerivationFunc: PBKDF2 (RFC 8018 §A.2)
                    try params.appendConstructedNode(identifier: .sequence) { kdf in
                        try kdf.serialize(OID.pbkdf2)
                        try kdf.appendConstructedNode(identifier: .sequence) { p in
                            try p.serialize(ASN1OctetString(contentBytes: salt[...]))
                            try p.serialize(iterations)
                            try p.serialize(32)
                            try p.appendConstructedNode(identifier: .sequence) { prf in
                                try prf.serialize(OID.hmacWithSHA256)
                                try prf.serialize(ASN1Null())
                            }
                        }
                    }
                    // encryptionScheme: aes256-CBC with its IV (RFC 3565 §4.1)
                    try params.appendConstructedNode(identifier: .sequence) { enc in
                        try enc.serialize(OID.aes256CBC)
                        try enc.serialize(ASN1OctetString(contentBytes: ivBytes[...]))
                    }
                }
            }
            try epki.serialize(ASN1OctetString(contentBytes: Array(ciphertext)[...]))
        }
        return serializer.serializedBytes
    }

    /// Decrypts a DER EncryptedPrivateKeyInfo and returns the PKCS#8 PrivateKeyInfo.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/wrongPassphrase`` when the passphrase does not open it,
    ///   ``PKIError/Code-swift.struct/unsupportedEncryption`` for schemes other than PBES2/PBKDF2/AES-CBC,
    ///   ``PKIError/Code-swift.struct/malformedInput`` for anything that is not an EncryptedPrivateKeyInfo.
    public static func decrypt(_ der: [UInt8], passphrase: [UInt8]) throws -> [UInt8] {
        let parsed: Parsed
        do {
            parsed = try Parsed(der: der)
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the key file is not an encrypted PKCS#8 key", underlying: error)
        }
        let key = try KDF.Insecure.PBKDF2.deriveKey(
            from: passphrase, salt: parsed.salt, using: parsed.prf,
            outputByteCount: parsed.keyLength, unsafeUncheckedRounds: parsed.iterations
        )
        let plain: Data
        do {
            plain = try AES._CBC.decrypt(parsed.ciphertext, using: key, iv: try AES._CBC.IV(ivBytes: parsed.iv))
        } catch {
            throw PKIError(.wrongPassphrase, "the passphrase does not open this key", underlying: error)
        }
        // A wrong key passes the padding check about once in 256; the plaintext must still be
        // a PrivateKeyInfo SEQUENCE whose length covers exactly the decrypted bytes.
        let bytes = Array(plain)
        guard (try? DER.parse(bytes)) != nil else {
            throw PKIError(.wrongPassphrase, "the passphrase does not open this key")
        }
        return bytes
    }

    private static func randomBytes(_ count: Int, using rng: inout some RandomNumberGenerator) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
    }

    struct Parsed {
        var salt: [UInt8]
        var iterations: Int
        var keyLength: Int
        var prf: KDF.Insecure.PBKDF2.HashFunction
        var iv: [UInt8]
        var ciphertext: [UInt8]

        init(der: [UInt8]) throws {
            let root = try DER.parse(der)
            guard root.encodedBytes.count == der.count else {
                throw PKIError(.malformedInput, "the key file has trailing bytes after its DER structure")
            }
            var salt: [UInt8] = []
            var iterations = 0
            var declaredKeyLength: Int?
            var prfOID = OID.hmacWithSHA1
            var cipherOID = OID.aes256CBC
            var iv: [UInt8] = []
            var ciphertext: [UInt8] = []
            try DER.sequence(root, identifier: .sequence) { nodes in
                guard let algNode = nodes.next() else { throw ASN1Error.invalidASN1Object(reason: "no algorithm") }
                try DER.sequence(algNode, identifier: .sequence) { alg in
                    let oid = try ASN1ObjectIdentifier(derEncoded: &alg)
                    guard oid == OID.pbes2 else {
                        throw PKIError(.unsupportedEncryption, "the key is encrypted with \(oid), not PBES2")
                    }
                    guard let paramsNode = alg.next() else { throw ASN1Error.invalidASN1Object(reason: "no PBES2 params") }
                    try DER.sequence(paramsNode, identifier: .sequence) { params in
                        guard let kdfNode = params.next(), let encNode = params.next() else {
                            throw ASN1Error.invalidASN1Object(reason: "short PBES2 params")
                        }
                        try DER.sequence(kdfNode, identifier: .sequence) { kdf in
                            let kdfOID = try ASN1ObjectIdentifier(derEncoded: &kdf)
                            guard kdfOID == OID.pbkdf2 else {
                                throw PKIError(.unsupportedEncryption, "the key uses key derivation \(kdfOID), not PBKDF2")
                            }
                            guard let p = kdf.next() else { throw ASN1Error.invalidASN1Object(reason: "no PBKDF2 params") }
                            try DER.sequence(p, identifier: .sequence) { p in
                                salt = Array(try ASN1OctetString(derEncoded: &p).bytes)
                                iterations = try Int(derEncoded: &p)
                                while let next = p.next() {
                                    if next.identifier == .integer {
                                        declaredKeyLength = try Int(derEncoded: next)
                                    } else {
                                        try DER.sequence(next, identifier: .sequence) { prf in
                                            prfOID = try ASN1ObjectIdentifier(derEncoded: &prf)
                                            // The HMAC algorithms' parameters are NULL or absent (RFC 8018 §B.1.2).
                                            if let parameters = prf.next() {
                                                _ = try ASN1Null(derEncoded: parameters)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        try DER.sequence(encNode, identifier: .sequence) { enc in
                            cipherOID = try ASN1ObjectIdentifier(derEncoded: &enc)
                            iv = Array(try ASN1OctetString(derEncoded: &enc).bytes)
                        }
                    }
                }
                ciphertext = Array(try ASN1OctetString(derEncoded: &nodes).bytes)
            }
            switch prfOID {
            case OID.hmacWithSHA256: prf = .sha256
            case OID.hmacWithSHA384: prf = .sha384
            case OID.hmacWithSHA512: prf = .sha512
            default:
                throw PKIError(.unsupportedEncryption, "the key uses PBKDF2 with \(prfOID); Fleetward reads HMAC-SHA-256/384/512")
            }
            let keyLength: Int
            switch cipherOID {
            case OID.aes128CBC: keyLength = 16
            case OID.aes192CBC: keyLength = 24
            case OID.aes256CBC: keyLength = 32
            default:
                throw PKIError(.unsupportedEncryption, "the key is encrypted with \(cipherOID); Fleetward reads AES-CBC")
            }
            if let declaredKeyLength, declaredKeyLength != keyLength {
                throw PKIError(.malformedInput, "the key's PBKDF2 key length does not match its cipher")
            }
            guard (1...PBES2.maximumIterations).contains(iterations) else {
                throw PKIError(
                    .unsupportedEncryption, "the key asks for \(iterations) PBKDF2 iterations; the limit is \(PBES2.maximumIterations)")
            }
            guard (8...64).contains(salt.count), iv.count == 16, !ciphertext.isEmpty, ciphertext.count % 16 == 0 else {
                throw PKIError(.malformedInput, "the key's salt, IV or ciphertext has the wrong length")
            }
            self.salt = salt
            self.iterations = iterations
            self.keyLength = keyLength
            self.iv = iv
            self.ciphertext = ciphertext
        }
    }
}
