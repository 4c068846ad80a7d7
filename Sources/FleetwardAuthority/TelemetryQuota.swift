public import Foundation
import Synchronization

/// How much telemetry one device may send and how long it is kept.
public struct TelemetryLimits: Sendable, Equatable {
    /// Messages a minute a device may send on average…
    public var messagesPerMinute: Double
    /// …with bursts of up to this many.
    public var burst: Double
    /// Bytes an hour a device may send.
    public var bytesPerHour: Double
    /// The newest messages kept per device; older ones go as new ones come.
    public var keptPerDevice: Int
    /// Messages older than this are deleted (in small batches, in the background).
    public var retention: TimeInterval

    public init(
        messagesPerMinute: Double = 60, burst: Double = 30, bytesPerHour: Double = 8 * 1024 * 1024, keptPerDevice: Int = 10_000,
        retention: TimeInterval = 30 * 86_400
    ) {
        self.messagesPerMinute = messagesPerMinute
        self.burst = burst
        self.bytesPerHour = bytesPerHour
        self.keptPerDevice = keptPerDevice
        self.retention = retention
    }
}

/// Per-device rate and size quotas for telemetry (token buckets, in memory per node): one
/// device's key cannot fill the disk.
public final class TelemetryQuota: Sendable {
    public let limits: TelemetryLimits

    private struct Buckets {
        var messages: Double
        var bytes: Double
        var refilled: Date
    }

    private let buckets = Mutex<[String: Buckets]>([:])
    /// Devices tracked at most; idle ones (full buckets) go first.
    private let capacity = 200_000

    public init(_ limits: TelemetryLimits = TelemetryLimits()) {
        self.limits = limits
    }

    /// Counts a message of `bytes` from `device`; nil when it fits its quotas, else the seconds
    /// until it would (nothing is counted then).
    public func admit(device: String, bytes: Int, now: Date) -> Int? {
        let messageRate = limits.messagesPerMinute / 60
        let byteRate = limits.bytesPerHour / 3600
        return buckets.withLock { table -> Int? in
            if table.count >= capacity, table[device] == nil {
                table = table.filter { now.timeIntervalSince($0.value.refilled) < 3600 }
            }
            var bucket = table[device] ?? Buckets(messages: limits.burst, bytes: limits.bytesPerHour, refilled: now)
            let elapsed = max(0, now.timeIntervalSince(bucket.refilled))
            bucket.messages = min(limits.burst, bucket.messages + elapsed * messageRate)
            bucket.bytes = min(limits.bytesPerHour, bucket.bytes + elapsed * byteRate)
            bucket.refilled = now
            let size = Double(bytes)
            guard bucket.messages >= 1, bucket.bytes >= size else {
                table[device] = bucket
                let waitMessages = bucket.messages >= 1 ? 0 : (1 - bucket.messages) / messageRate
                let waitBytes = bucket.bytes >= size ? 0 : (size - bucket.bytes) / byteRate
                return max(1, Int(max(waitMessages, waitBytes).rounded(.up)))
            }
            bucket.messages -= 1
            bucket.bytes -= size
            table[device] = bucket
            return nil
        }
    }
}
