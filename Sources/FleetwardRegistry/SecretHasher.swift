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
    /// Seals audit entries under a key derived from the same sealed key (HKDF, its own label).
    public let auditSealer: AuditSealer

    /// - Parameter key: 32 random bytes, never stored unsealed.
    public init(key: SymmetricKey) {
        keyed = HMAC<SHA256>(key: key)
        auditSealer = AuditSealer(
            key: HKDF<SHA256>.deriveKey(
                inputKeyMaterial: key, info: Data("fleetward audit mac v1".utf8), outputByteCount: 32))
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

/// Seals audit entries with an HMAC under a key the database does not hold (derived from the
/// registry's sealed key): whoever can write the database but not open the data directory's
/// sealed key can still edit an entry and recompute every later SHA-256 link, but not the MACs,
/// so ``AuditChainVerifier`` with the sealer finds the edit.
public struct AuditSealer: Sendable {
    private let keyed: HMAC<SHA256>

    public init(key: SymmetricKey) {
        keyed = HMAC<SHA256>(key: key)
    }

    /// The MAC of an entry: over its hash, which covers every field and the link before it.
    public func mac(_ entry: AuditEntry) -> [UInt8] {
        var hmac = keyed
        hmac.update(data: entry.hash)
        return Array(hmac.finalize())
    }

    /// Whether `entry` carries the MAC this key gives it (compared in constant time).
    public func isSealed(_ entry: AuditEntry) -> Bool {
        guard let stored = entry.mac else { return false }
        let expected = mac(entry)
        guard expected.count == stored.count else { return false }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= expected[index] ^ stored[index] }
        return difference == 0
    }
}
