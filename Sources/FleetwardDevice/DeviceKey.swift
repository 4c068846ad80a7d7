public import Crypto
public import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// A device's P-256 signing key, held by a ``KeyCustody``: it signs, and it never hands out its
/// private half. The TLS handshake, CSRs and signed messages all go through ``signature(for:)``,
/// so a secure element or a TPM can stand behind it.
public protocol DeviceSigningKey: Sendable {
    /// The public key.
    var publicKey: P256.Signing.PublicKey { get }
    /// What the custody needs to find this key again (a key ID, a PKCS#11 label); never secret.
    var reference: String { get }
    /// An ECDSA signature with SHA-256 over `message` (the custody hashes it).
    func signature(for message: some DataProtocol) throws -> P256.Signing.ECDSASignature
    /// ECDH with `peer` (the shared x-coordinate, 32 bytes), for opening an encrypted image's key
    /// wrapped to this key; the custody does it where the key lives.
    func sharedSecret(with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8]
}

extension DeviceSigningKey {
    public func sharedSecret(with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8] {
        throw DeviceError(.invalidInput, "this device key cannot do key agreement (encrypted images need it)")
    }
}

/// ECDH with a software P-256 key: the same scalar as the signing key.
func softwareSharedSecret(_ key: P256.Signing.PrivateKey, with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8] {
    let agreement = try P256.KeyAgreement.PrivateKey(rawRepresentation: key.rawRepresentation)
    return try agreement.sharedSecretFromKeyAgreement(with: peer).withUnsafeBytes { Array($0) }
}

/// Where device keys are made and kept. Implementations generate the key pair inside the custody
/// and never export the private key: the software one keeps it sealed under the device-unique key
/// (``SealedKeyCustody``); a secure element or a TPM (PKCS#11) can slot in behind the same calls.
public protocol KeyCustody: Sendable {
    /// Makes a new key pair inside the custody.
    func generateKey(purpose: KeyPurpose) throws -> any DeviceSigningKey
    /// Opens the key made earlier under `reference`.
    func key(reference: String) throws -> any DeviceSigningKey
    /// Destroys the key under `reference` (a key that was replaced); no error when it is gone.
    func destroyKey(reference: String) throws
    /// The references of every key the custody holds, so orphans from an interrupted renewal can go.
    func references() throws -> [String]
}

/// What a device key is for; a custody may keep them apart.
public enum KeyPurpose: String, Sendable, Codable {
    /// The key the factory certified (birth certificate): used only to enroll.
    case birth
    /// The key of the operational certificate.
    case operational
}

/// A custody that keeps keys in memory only: for simulated devices and tests, never for a device
/// that must survive a restart.
public final class EphemeralKeyCustody: KeyCustody {
    private let keys = NIOLockedValueBox<[String: EphemeralKey]>([:])

    public init() {}

    public func generateKey(purpose: KeyPurpose) throws -> any DeviceSigningKey {
        let key = EphemeralKey(P256.Signing.PrivateKey())
        keys.withLockedValue { $0[key.reference] = key }
        return key
    }

    public func key(reference: String) throws -> any DeviceSigningKey {
        guard let key = keys.withLockedValue({ $0[reference] }) else {
            throw DeviceError(.invalidInput, "no key \(reference) in this custody")
        }
        return key
    }

    public func destroyKey(reference: String) throws {
        _ = keys.withLockedValue { $0.removeValue(forKey: reference) }
    }

    public func references() throws -> [String] { keys.withLockedValue { Array($0.keys) } }
}

/// A P-256 key the caller holds in memory (simulated devices, tests) signs like a custody key.
extension P256.Signing.PrivateKey: DeviceSigningKey {
    public var reference: String { KeyReference.make(publicKey) }

    public func sharedSecret(with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8] { try softwareSharedSecret(self, with: peer) }
}

/// A P-256 key held in this process's memory, behind the protocol only.
struct EphemeralKey: DeviceSigningKey {
    let privateKey: P256.Signing.PrivateKey

    init(_ privateKey: P256.Signing.PrivateKey) { self.privateKey = privateKey }

    var publicKey: P256.Signing.PublicKey { privateKey.publicKey }
    var reference: String { KeyReference.make(publicKey) }

    func signature(for message: some DataProtocol) throws -> P256.Signing.ECDSASignature {
        try privateKey.signature(for: message)
    }

    func sharedSecret(with peer: P256.KeyAgreement.PublicKey) throws -> [UInt8] { try softwareSharedSecret(privateKey, with: peer) }
}

/// Key references: the hex SHA-256 of the public key's X9.63 form, truncated to 128 bits (a name
/// for the key, safe to print and to use as a file name).
public enum KeyReference {
    public static func make(_ publicKey: P256.Signing.PublicKey) -> String {
        SHA256.hash(data: publicKey.x963Representation).prefix(16).map { String(format: "%02x", $0) }.joined()
    }

    /// True for a string ``make(_:)`` could have produced.
    static func isValid(_ reference: String) -> Bool {
        reference.utf8.count == 32 && reference.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

/// Lets the TLS handshake sign with a custody key: BoringSSL asks, the custody signs, the private
/// key never reaches the TLS library.
struct CustodyTLSKey: NIOSSLCustomPrivateKey, Hashable {
    let key: any DeviceSigningKey

    var signatureAlgorithms: [SignatureAlgorithm] { [.ecdsaSecp256R1Sha256] }

    func sign(channel: any Channel, algorithm: SignatureAlgorithm, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        guard algorithm == .ecdsaSecp256R1Sha256 else {
            return channel.eventLoop.makeFailedFuture(DeviceError(.invalidInput, "a P-256 device key cannot sign with \(algorithm)"))
        }
        do {
            let signature = try key.signature(for: Array(data.readableBytesView))
            return channel.eventLoop.makeSucceededFuture(ByteBuffer(bytes: signature.derRepresentation))
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    func decrypt(channel: any Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        channel.eventLoop.makeFailedFuture(DeviceError(.invalidInput, "a P-256 device key does not decrypt"))
    }

    static func == (lhs: CustodyTLSKey, rhs: CustodyTLSKey) -> Bool {
        lhs.key.publicKey.x963Representation == rhs.key.publicKey.x963Representation
    }

    func hash(into hasher: inout Hasher) { hasher.combine(key.publicKey.x963Representation) }
}
