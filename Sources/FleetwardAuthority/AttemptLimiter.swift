public import Foundation
import Synchronization

/// Counts failed attempts per key (a device ID, an address) in a sliding window and refuses
/// further attempts once a key reaches its limit, until the window has passed.
///
/// In memory, per process: with several nodes each node applies its own limit.
public final class AttemptLimiter: Sendable {
    public struct Rule: Sendable {
        public var maximumFailures: Int
        public var window: TimeInterval

        public init(maximumFailures: Int, window: TimeInterval) {
            self.maximumFailures = maximumFailures
            self.window = window
        }
    }

    private let rule: Rule
    private let failures = Mutex<[String: [Date]]>([:])
    /// Keys kept at most; beyond it the oldest entries are dropped first.
    private let capacity: Int

    public init(_ rule: Rule, capacity: Int = 100_000) {
        self.rule = rule
        self.capacity = capacity
    }

    /// The key an attempt from `address` counts under: an IPv4 address as it is, an IPv6 address
    /// by its /64 (one host usually holds a whole /64, so counting single addresses would let it
    /// rotate through 2^64 of them), an IPv4-mapped IPv6 address as its IPv4 address.
    public static func addressKey(_ address: String?) -> String {
        guard let address else { return "local" }
        var raw = in6_addr()
        guard address.contains(":"), inet_pton(AF_INET6, address, &raw) == 1 else { return address }
        let octets = withUnsafeBytes(of: &raw) { Array($0) }
        if octets[0..<10].allSatisfy({ $0 == 0 }), octets[10] == 0xFF, octets[11] == 0xFF {
            return octets[12..<16].map(String.init).joined(separator: ".")
        }
        return stride(from: 0, to: 8, by: 2).map { String(UInt16(octets[$0]) << 8 | UInt16(octets[$0 + 1]), radix: 16) }
            .joined(separator: ":") + "::/64"
    }

    /// True when no key has a failure on record: the common case, checked before any key is built.
    public var isEmpty: Bool { failures.withLock { $0.isEmpty } }

    /// Seconds until `key` may try again, or nil when it may now.
    public func retryAfter(_ key: String, now: Date = Date()) -> Int? {
        failures.withLock { table in
            guard let times = table[key] else { return nil }
            let recent = times.filter { now.timeIntervalSince($0) < rule.window }
            table[key] = recent.isEmpty ? nil : recent
            guard recent.count >= rule.maximumFailures, let oldest = recent.first else { return nil }
            return max(1, Int((rule.window - now.timeIntervalSince(oldest)).rounded(.up)))
        }
    }

    /// Records one failure for `key`.
    public func recordFailure(_ key: String, now: Date = Date()) {
        failures.withLock { table in
            if table.count >= capacity, table[key] == nil {
                let cutoff = now.addingTimeInterval(-rule.window)
                table = table.filter { $0.value.last.map { $0 > cutoff } ?? false }
                if table.count >= capacity {
                    // Still full of recent keys: drop the tenth whose last failure is oldest,
                    // never everyone's counters at once.
                    let oldest = table.sorted { ($0.value.last ?? .distantPast) < ($1.value.last ?? .distantPast) }
                        .prefix(max(1, capacity / 10)).map(\.key)
                    for stale in oldest { table.removeValue(forKey: stale) }
                }
            }
            var times = table[key, default: []].filter { now.timeIntervalSince($0) < rule.window }
            times.append(now)
            table[key] = Array(times.suffix(rule.maximumFailures))
        }
    }

    /// Takes back the most recent failure recorded for `key` (an attempt counted up front that succeeded).
    public func forgiveLast(_ key: String) {
        failures.withLock { table in
            guard var times = table[key], !times.isEmpty else { return }
            times.removeLast()
            table[key] = times.isEmpty ? nil : times
        }
    }

    /// Forgets `key`'s failures (after a success).
    public func reset(_ key: String) {
        _ = failures.withLock { $0.removeValue(forKey: key) }
    }
}
