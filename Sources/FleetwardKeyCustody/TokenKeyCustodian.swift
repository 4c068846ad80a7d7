public import FleetwardPKCS11
public import FleetwardPKI
import Crypto
import Foundation

/// Keeps the keys named in `tokenKeys` inside a PKCS#11 token (generated there, never
/// extractable; each labelled `fleetward/<name>`), and every other key as an encrypted file.
/// Used for the issuing, factory and release-signing keys when `init --key-store pkcs11:…` chose
/// a token; the root and the servers' TLS key stay files.
public struct TokenKeyCustodian: KeyCustodian {
    public let token: PKCS11Token
    public let tokenKeys: Set<String>
    let files: EncryptedFileKeyCustodian

    public init(token: PKCS11Token, tokenKeys: Set<String>, files: EncryptedFileKeyCustodian) {
        self.token = token
        self.tokenKeys = tokenKeys
        self.files = files
    }

    public static func label(_ name: String) -> String { "fleetward/" + name }

    /// `key` as the PKI layer signs with it.
    public static func signingKey(_ key: PKCS11Key) -> SigningKey { SigningKey(external: TokenSigner(key: key)) }

    public func generateKey(named name: String, type: KeyType) throws -> SigningKey {
        guard tokenKeys.contains(name) else { return try files.generateKey(named: name, type: type) }
        guard type == .p256 else {
            throw KeyCustodyError(.malformedKey, "keys in a token are P-256 here; \(name) asks for \(type.rawValue)")
        }
        do {
            return SigningKey(external: TokenSigner(key: try token.generateP256Key(label: Self.label(name))))
        } catch let error as PKCS11Error {
            throw KeyCustodyError(.malformedKey, "cannot make the \(name) key in the token: \(error.message)")
        }
    }

    public func loadKey(named name: String) throws -> SigningKey {
        guard tokenKeys.contains(name) else { return try files.loadKey(named: name) }
        let found: PKCS11Key?
        do {
            found = try token.key(label: Self.label(name))
        } catch let error as PKCS11Error {
            throw KeyCustodyError(.malformedKey, "cannot read the \(name) key in the token: \(error.message)")
        }
        guard let found else {
            throw KeyCustodyError(.notFound, "token '\(token.uri.token)' holds no key labelled \(Self.label(name))")
        }
        return SigningKey(external: TokenSigner(key: found))
    }
}

/// A token key as the PKI layer signs with it.
struct TokenSigner: ExternalP256Signer {
    let key: PKCS11Key

    var publicKey: P256.Signing.PublicKey { key.publicKey }
    var location: String { "token '\(key.token.uri.token)' (\(key.label))" }

    func signature(for message: [UInt8]) throws -> P256.Signing.ECDSASignature { try key.signature(for: message) }
}
