public import Crypto
public import Foundation

/// Hashes machine-generated secrets (factory secrets, API and enrollment tokens) for storage.
///
/// HMAC-SHA-256 under a registry key kept sealed in the data directory (DESIGN: secrets at rest):
/// fast enough to import a million factory secrets in a second, and a stolen database alone
/// reveals nothing without the key. Comparison is constant-time.
public struct SecretHasher: Sendable {
    /// The fewest bytes a machine-generated secret may have (128 bits when random).
    public static let minimumSecretBytes = 16
    /// The most bytes a secret may have.
    public static let maximumSecretBytes = 256

    /// The HMAC state after absorbing the key: copied for each secret, so the key schedule runs once.
    private let keyed: HMAC<SHA256>

    /// - Parameter key: 32 random bytes, never stored unsealed.
    public init(key: SymmetricKey) {
        keyed = HMAC<SHA256>(key: key)
    }

    /// The HMAC of `secret`.
    public func hash(_ secret: [UInt8]) -> [UInt8] {
        var hmac = keyed
        hmac.update(data: secret)
        return Array(hmac.finalize())
    }

    /// Whether `secret` hashes to `stored`, in time independent of where they differ.
    public func matches(_ secret: [UInt8], stored: [UInt8]) -> Bool {
        let computed = hash(secret)
        guard computed.count == stored.count else { return false }
        var difference: UInt8 = 0
        for index in computed.indices { difference |= computed[index] ^ stored[index] }
        return difference == 0
    }
}
