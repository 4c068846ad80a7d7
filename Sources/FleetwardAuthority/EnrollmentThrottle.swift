public import Foundation
import Synchronization

/// Slows guessing of enrollment proofs without letting a stranger lock a device out.
///
/// Two limits. An address that fails too often (``Rules/addressFailures`` in
/// ``Rules/addressWindow``; IPv6 by /64) is refused whatever it asks next. A device whose proof
/// keeps failing is protected by an exponential backoff (1, 2, 4 … at most
/// ``Rules/maximumBackoff`` seconds after its latest failure, once it has failed
/// ``Rules/graceFailures`` times): addresses that already failed for it wait the backoff out,
/// while an address that never failed for it (the device itself, wherever it is) still gets
/// through at a bounded rate (``Rules/freshAttemptsPerMinute``). So guessing a device's 128-bit
/// secret stays out of reach, and the right proof from the device still passes within about a
/// minute however hard someone else hammers it, where a plain per-device lockout (the earlier
/// rule: ten failures from anyone, fifteen minutes) let a stranger shut it out.
public final class EnrollmentThrottle: Sendable {
    public struct Rules: Sendable {
        public var addressFailures = 10
        public var addressWindow: TimeInterval = 900
        public var graceFailures = 5
        public var maximumBackoff: TimeInterval = 60
        public var freshAttemptsPerMinute = 6
        /// Device records kept at most (the oldest go first).
        public var capacity = 100_000

        public init() {}
    }

    private struct DeviceRecord {
        var failures = 0
        var lastFailure = Date.distantPast
        /// Addresses that failed for this device, at most 64 kept.
        var failedFrom: Set<String> = []
        /// When addresses that never failed for it tried during the backoff.
        var freshAttempts: [Date] = []
    }

    private let rules: Rules
    private let addresses: AttemptLimiter
    private let devices = Mutex<[String: DeviceRecord]>([:])

    public init(_ rules: Rules = Rules()) {
        self.rules = rules
        addresses = AttemptLimiter(.init(maximumFailures: rules.addressFailures, window: rules.addressWindow))
    }

    /// Seconds until `device` may be tried from `address`, or nil when it may now (an attempt
    /// from a fresh address during the backoff takes one of the minute's fresh places).
    public func retryAfter(device: String, address: String?, now: Date) -> Int? {
        let key = AttemptLimiter.addressKey(address)
        if !addresses.isEmpty, let wait = addresses.retryAfter(key, now: now) { return wait }
        return devices.withLock { table -> Int? in
            guard var record = table[device] else { return nil }
            if now.timeIntervalSince(record.lastFailure) > rules.addressWindow {
                table[device] = nil
                return nil
            }
            guard record.failures >= rules.graceFailures else { return nil }
            let backoff = min(rules.maximumBackoff, pow(2, Double(record.failures - rules.graceFailures)))
            let until = record.lastFailure.addingTimeInterval(backoff)
            guard now < until else { return nil }
            if record.failedFrom.contains(key) { return max(1, Int(until.timeIntervalSince(now).rounded(.up))) }
            record.freshAttempts.removeAll { now.timeIntervalSince($0) >= 60 }
            guard record.freshAttempts.count < rules.freshAttemptsPerMinute else {
                table[device] = record
                let oldest = record.freshAttempts.first ?? now
                return max(1, Int((60 - now.timeIntervalSince(oldest)).rounded(.up)))
            }
            record.freshAttempts.append(now)
            table[device] = record
            return nil
        }
    }

    /// Records a failed proof for `device` from `address`.
    public func recordFailure(device: String, address: String?, now: Date) {
        let key = AttemptLimiter.addressKey(address)
        addresses.recordFailure(key, now: now)
        devices.withLock { table in
            if table.count >= rules.capacity, table[device] == nil {
                let cutoff = now.addingTimeInterval(-rules.addressWindow)
                table = table.filter { $0.value.lastFailure > cutoff }
                if table.count >= rules.capacity {
                    for stale in table.sorted(by: { $0.value.lastFailure < $1.value.lastFailure }).prefix(rules.capacity / 10) {
                        table[stale.key] = nil
                    }
                }
            }
            var record = table[device] ?? DeviceRecord()
            if now.timeIntervalSince(record.lastFailure) > rules.addressWindow { record = DeviceRecord() }
            record.failures += 1
            record.lastFailure = now
            if record.failedFrom.count < 64 { record.failedFrom.insert(key) }
            table[device] = record
        }
    }

    /// Forgets `device`'s failures once it proved itself.
    public func recordSuccess(device: String) {
        _ = devices.withLock { $0.removeValue(forKey: device) }
    }
}
