public import Crypto
public import FleetwardPKCS11
public import Foundation

/// A ``KeyCustody`` in a PKCS#11 token: a secure element's module, tpm2-pkcs11 over the device's
/// TPM, or SoftHSM2 for tests. Each key pair is generated inside the token, private, sensitive,
/// never extractable, allowed to sign and to derive (ECDH, for encrypted images), and labelled
/// `fleetward/device/<reference>`. Handshakes, CSRs, signed telemetry and key unwrapping all run
/// in the token; nothing of the private key is ever in this process or in a file.
public final class TokenKeyCustody: KeyCustody {
    public static let labelPrefix = "fleetward/device/"
    public let token: PKCS11Token

    public init(token: PKCS11Token) { self.token = token }

    public func generateKey(purpose: KeyPurpose) throws -> any DeviceSigningKey {
        let temporary = Self.labelPrefix + "new-" + String(UInt64.random(in: .min ... .max), radix: 16)
        let made = try token.generateP256Key(label: temporary, allowDerive: true)
        let reference = KeyReference.make(made.publicKey)
        do {
            return TokenDeviceKey(key: try token.relabel(made, to: Self.labelPrefix + reference), reference: reference)
        } catch {
            try? token.destroyKey(label: temporary)
            throw error
        }
    }

    public func key(reference: String) throws -> any DeviceSigningKey {
        guard KeyReference.isValid(reference) else { throw DeviceError(.sealedStore, "\(reference) is not a key reference") }
        guard let key = try token.key(label: Self.labelPrefix + reference) else {
            throw DeviceError(.sealedStore, "token '\(token.uri.token)' holds no key \(Self.labelPrefix + reference)")
        }
        guard KeyReference.make(key.publicKey) == reference else {
            throw DeviceError(.sealedStore, "token '\(token.uri.token)' holds another key under \(Self.labelPrefix + reference)")
        }
        return TokenDeviceKey(key: key, reference: reference)
    }

    public func destroyKey(reference: String) throws {
        guard KeyReference.isValid(reference) else { return }
        try token.destroyKey(label: Self.labelPrefix + reference)
    }

    public func references() throws -> [String] {
        try token.privateKeyLabels().filter { $0.hasPrefix(Self.labelPrefix) }.map { String($0.dropFirst(Self.labelPrefix.count)) }
            .filter(KeyReference.isValid)
    }
}

/// A device key inside a token.
struct TokenDeviceKey: DeviceSigningKey {
    let key: PKCS11Key
    let reference: String

    var publicKey: P256.Signing.PublicKey { key.publicKey }

    func signature(for message: some DataProtocol) throws -> P256.Signing.ECDSASignature { try key.signature(for: message) }

    func sharedSecret(with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8] { try key.sharedSecret(with: peer) }
}
