public import Crypto
import Foundation
public import X509
import SwiftASN1

/// The key types a Fleetward certificate authority signs with.
public enum KeyType: String, Sendable, CaseIterable, Codable {
    case p256 = "P-256"
    case p384 = "P-384"

    /// Accepts `P-256`, `p256`, `P256`, `prime256v1`, `secp256r1` and the P-384 equivalents.
    public init?(parsing text: String) {
        switch text.lowercased().replacingOccurrences(of: "-", with: "") {
        case "p256", "prime256v1", "secp256r1": self = .p256
        case "p384", "secp384r1": self = .p384
        default: return nil
        }
    }
}

/// A P-256 key whose private half lives elsewhere (an HSM, a TPM, a secure element) and signs
/// there: only the public half is known here.
public protocol ExternalP256Signer: Sendable {
    var publicKey: P256.Signing.PublicKey { get }
    /// Where the key lives, for people (a PKCS#11 URI and label; never a PIN).
    var location: String { get }
    /// ECDSA with SHA-256 over `message`.
    func signature(for message: [UInt8]) throws -> P256.Signing.ECDSASignature
}

/// A CA's private signing key (ECDSA P-256 or P-384), in memory or in a token.
///
/// Prints only its kind, never key material.
public struct SigningKey: Sendable, CustomStringConvertible {
    enum Backing: Sendable {
        case p256(P256.Signing.PrivateKey)
        case p384(P384.Signing.PrivateKey)
        case external(any ExternalP256Signer)
    }

    let backing: Backing

    /// Generates a fresh key of `type` with the system's secure random source.
    public init(generating type: KeyType) {
        switch type {
        case .p256: backing = .p256(P256.Signing.PrivateKey())
        case .p384: backing = .p384(P384.Signing.PrivateKey())
        }
    }

    /// A key that signs where it lives (a token); it has no PKCS#8 form.
    public init(external signer: any ExternalP256Signer) {
        backing = .external(signer)
    }

    /// Where the private key lives: nil in memory (from an encrypted file), else the token's words.
    public var location: String? {
        if case .external(let signer) = backing { return signer.location }
        return nil
    }

    /// Reads an unencrypted PKCS#8 PrivateKeyInfo (only ever held in memory).
    ///
    /// - Throws: ``PKIError/Code-swift.struct/unsupportedKey`` for anything but an EC P-256/P-384 key.
    public init(pkcs8DER der: [UInt8]) throws {
        do {
            let key = try Certificate.PrivateKey(derBytes: der)
            switch key.publicKey.description {
            case "P256.PublicKey":
                backing = .p256(try P256.Signing.PrivateKey(derRepresentation: der))
            case "P384.PublicKey":
                backing = .p384(try P384.Signing.PrivateKey(derRepresentation: der))
            default:
                throw PKIError(.unsupportedKey, "CA keys must be ECDSA P-256 or P-384, not \(key.publicKey)")
            }
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(.malformedInput, "the private key is not a readable PKCS#8 structure", underlying: error)
        }
        // PBES2's AES-CBC carries no integrity check: a damaged file can decrypt to another
        // well-formed key. The public key stored beside the private one (RFC 5915 §3) must match
        // the one derived from it.
        if let stored = Self.storedPublicKey(inPKCS8: der) {
            let derived: [UInt8]
            switch backing {
            case .p256(let key): derived = Array(key.publicKey.x963Representation)
            case .p384(let key): derived = Array(key.publicKey.x963Representation)
            case .external(let signer): derived = Array(signer.publicKey.x963Representation)
            }
            guard stored == derived else {
                throw PKIError(.malformedInput, "the private key's stored public key does not match it; the key file is damaged")
            }
        }
    }

    /// The `publicKey [1] BIT STRING` of the ECPrivateKey inside a PKCS#8 PrivateKeyInfo, if present.
    static func storedPublicKey(inPKCS8 der: [UInt8]) -> [UInt8]? {
        guard let root = try? DER.parse(der) else { return nil }
        var result: [UInt8]?
        try? DER.sequence(root, identifier: .sequence) { info in
            _ = info.next()  // version
            _ = info.next()  // privateKeyAlgorithm
            let octets = try ASN1OctetString(derEncoded: &info)
            while info.next() != nil {}
            let ecKey = try DER.parse(octets.bytes)
            try DER.sequence(ecKey, identifier: .sequence) { fields in
                while let field = fields.next() {
                    if field.identifier == ASN1Identifier(tagWithNumber: 1, tagClass: .contextSpecific) {
                        guard case .constructed(let children) = field.content else { continue }
                        var iterator = children.makeIterator()
                        if let bits = iterator.next() {
                            result = Array(try ASN1BitString(derEncoded: bits).bytes)
                        }
                    }
                }
            }
        }
        return result
    }

    /// The key's type.
    public var type: KeyType {
        switch backing {
        case .p256, .external: .p256
        case .p384: .p384
        }
    }

    /// The unencrypted PKCS#8 PrivateKeyInfo. Only ever encrypt it before it leaves memory.
    /// - Throws: ``PKIError`` `unsupportedKey` for a key in a token, which never leaves it.
    public var pkcs8DER: [UInt8] {
        get throws {
            switch backing {
            case .p256(let key): return Array(key.derRepresentation)
            case .p384(let key): return Array(key.derRepresentation)
            case .external(let signer):
                throw PKIError(.unsupportedKey, "the key in \(signer.location) cannot leave its token")
            }
        }
    }

    /// The key in swift-certificates' form, for signing CA certificates (the root's key, which
    /// stays a file key).
    /// - Throws: ``PKIError`` `unsupportedKey` for a key in a token.
    public var certificatePrivateKey: Certificate.PrivateKey {
        get throws {
            switch backing {
            case .p256(let key): return Certificate.PrivateKey(key)
            case .p384(let key): return Certificate.PrivateKey(key)
            case .external(let signer):
                throw PKIError(.unsupportedKey, "the key in \(signer.location) signs only what Fleetward encodes itself, not CA certificates")
            }
        }
    }

    /// The matching public key.
    public var publicKey: Certificate.PublicKey {
        switch backing {
        case .p256(let key): Certificate.PublicKey(key.publicKey)
        case .p384(let key): Certificate.PublicKey(key.publicKey)
        case .external(let signer): Certificate.PublicKey(signer.publicKey)
        }
    }

    /// ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for P-384 (RFC 5758 §3.2).
    public var signatureAlgorithm: Certificate.SignatureAlgorithm {
        switch backing {
        case .p256, .external: .ecdsaWithSHA256
        case .p384: .ecdsaWithSHA384
        }
    }

    /// The DER AlgorithmIdentifier of ``signatureAlgorithm`` (parameters absent, RFC 5758 §3.2).
    var signatureAlgorithmDER: [UInt8] {
        switch backing {
        // 1.2.840.10045.4.3.2
        case .p256, .external: [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        // 1.2.840.10045.4.3.3
        case .p384: [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03]
        }
    }

    /// Signs `bytes` and returns the DER ECDSA-Sig-Value.
    func signDER(_ bytes: some DataProtocol) throws -> [UInt8] {
        do {
            switch backing {
            case .p256(let key): return Array(try key.signature(for: bytes).derRepresentation)
            case .p384(let key): return Array(try key.signature(for: bytes).derRepresentation)
            case .external(let signer): return Array(try signer.signature(for: Array(bytes)).derRepresentation)
            }
        } catch {
            throw PKIError(.signingFailed, "the CA key failed to sign: \(error)", underlying: error)
        }
    }

    public var description: String {
        switch backing {
        case .p256: "P256.PrivateKey"
        case .p384: "P384.PrivateKey"
        case .external(let signer): "P256.PrivateKey in \(signer.location)"
        }
    }
}

extension SigningKey {
    /// An ECDSA signature over `message` (SHA-256 for P-256, SHA-384 for P-384), DER-encoded: what
    /// `openssl dgst -sha256 -verify` checks.
    public func signature(for message: [UInt8]) throws -> [UInt8] {
        switch backing {
        case .p256(let key): Array(try key.signature(for: message).derRepresentation)
        case .p384(let key): Array(try key.signature(for: message).derRepresentation)
        case .external(let signer): Array(try signer.signature(for: message).derRepresentation)
        }
    }
}
