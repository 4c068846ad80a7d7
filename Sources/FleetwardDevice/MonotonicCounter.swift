import Crypto
public import Foundation
import FleetwardKeyCustody

/// A number that only grows, kept where restoring an old copy of the device's credential store
/// does not restore it: the device's anti-rollback counter for update manifests.
///
/// A hardware counter (a TPM's NV counter, a secure element's monotonic counter) implements this
/// protocol best: nothing restores it. ``SealedCounterFile`` is the default: a sealed file beside
/// the device-unique key, on its own partition, apart from the credential directory.
public protocol MonotonicCounter: Sendable {
    /// The highest value recorded; 0 when none was.
    func value() throws -> UInt64
    /// Records `value` when it is higher than the current one (a lower one changes nothing).
    func advance(to value: UInt64) throws
}

/// The default ``MonotonicCounter``: a file sealed with the device-unique key (so it cannot be
/// forged without it) holding the chain of values it went through, each linked to the one before
/// by SHA-256 (so a file edited by hand does not open as a shorter chain). Kept beside the
/// device-unique key, not with the credentials: restoring an older `credential.sealed` then
/// leaves the counter where it was, and the updater refuses the older manifests all the same.
///
/// - Warning: Restoring the counter file itself together with the credential store is not
///   detectable without hardware; use a hardware counter where that matters.
public struct SealedCounterFile: MonotonicCounter {
    public let path: String
    private let uniqueKey: DeviceUniqueKey
    /// Entries kept (the newest); the head hash carries the rest.
    static let kept = 32

    struct Chain: Codable {
        struct Link: Codable {
            var value: UInt64
            /// SHA-256 of the previous link's hash and this value, hex.
            var hash: String
        }
        var links: [Link]
    }

    public init(path: String, uniqueKey: DeviceUniqueKey) {
        self.path = path
        self.uniqueKey = uniqueKey
    }

    /// The counter file beside the device-unique key at `uniqueKeyPath`.
    public static func beside(uniqueKeyPath: String, uniqueKey: DeviceUniqueKey) -> SealedCounterFile {
        SealedCounterFile(
            path: URL(fileURLWithPath: uniqueKeyPath).deletingLastPathComponent().appendingPathComponent("anti-rollback.sealed").path,
            uniqueKey: uniqueKey)
    }

    public func value() throws -> UInt64 {
        try chain().links.last?.value ?? 0
    }

    public func advance(to value: UInt64) throws {
        var chain = try chain()
        let current = chain.links.last
        guard value > (current?.value ?? 0) else { return }
        chain.links.append(.init(value: value, hash: Self.link(after: current?.hash ?? "", value: value)))
        if chain.links.count > Self.kept { chain.links.removeFirst(chain.links.count - Self.kept) }
        let sealed = try uniqueKey.seal(try JSONEncoder().encode(chain), kind: "counter", name: "anti-rollback")
        try sealedStoreIO { try AtomicFile.write(sealed, to: path, permissions: 0o600) }
    }

    static func link(after previous: String, value: UInt64) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(previous.utf8))
        var big = value.bigEndian
        withUnsafeBytes(of: &big) { hasher.update(bufferPointer: $0) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private func chain() throws -> Chain {
        guard AtomicFile.permissions(of: path) != nil else { return Chain(links: []) }
        let sealed: [UInt8]
        do {
            sealed = try AtomicFile.read(path, limit: 64 * 1024)
        } catch {
            throw DeviceError(.sealedStore, "cannot read the anti-rollback counter \(path): \(error)")
        }
        let plain = try uniqueKey.open(sealed, kind: "counter", name: "anti-rollback", path: path)
        guard let chain = try? JSONDecoder().decode(Chain.self, from: Data(plain)) else {
            throw DeviceError(.sealedStore, "the anti-rollback counter \(path) opened but holds no chain")
        }
        // Every link follows from the one before; the values only grow.
        for (previous, next) in zip(chain.links, chain.links.dropFirst()) {
            guard next.value > previous.value, next.hash == Self.link(after: previous.hash, value: next.value) else {
                throw DeviceError(.sealedStore, "the anti-rollback counter \(path) is damaged: its chain does not follow")
            }
        }
        return chain
    }
}
