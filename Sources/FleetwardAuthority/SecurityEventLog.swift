public import FleetwardRegistry
public import Foundation
import Synchronization

/// Records refusals an operator must see (a stolen, revoked or suspended device, or a revoked
/// certificate, trying to enroll or connect) in the registry's security-event log, which the
/// management API serves at `/api/v1/security-events`.
///
/// A flood cannot fill the disk: one event per device and kind per minute, at most
/// ``maximumPerMinute`` in all, and the registry keeps the newest
/// ``Registrar/securityEventsKept``. Writing happens off the refusing request's path.
public final class SecurityEventLog: Sendable {
    public static let maximumPerMinute = 120

    public static let enrollmentRefused = "enrollment-refused"
    public static let handshakeRefused = "handshake-refused"

    private let registrar: Registrar
    private let now: @Sendable () -> Date
    private struct Window {
        var started = Date.distantPast
        var written = 0
        var lastByKey: [String: Date] = [:]
    }
    private let window = Mutex(Window())

    public init(registrar: Registrar, now: @escaping @Sendable () -> Date = Date.init) {
        self.registrar = registrar
        self.now = now
    }

    /// Records the event unless the limits say it repeats one just recorded.
    public func record(kind: String, device: String?, serial: String?, address: String?, detail: String) {
        let time = now()
        let key = "\(kind)|\(device ?? serial ?? address ?? "-")"
        let admitted = window.withLock { window -> Bool in
            if time.timeIntervalSince(window.started) >= 60 {
                window.started = time
                window.written = 0
                window.lastByKey = window.lastByKey.filter { time.timeIntervalSince($0.value) < 60 }
            }
            if let last = window.lastByKey[key], time.timeIntervalSince(last) < 60 { return false }
            guard window.written < Self.maximumPerMinute else { return false }
            window.written += 1
            window.lastByKey[key] = time
            return true
        }
        guard admitted else { return }
        let event = SecurityEvent(time: time, kind: kind, device: device, serial: serial, address: address, detail: detail)
        let registrar = registrar
        Task { try? await registrar.recordSecurityEvent(event) }
    }
}

extension Optional {
    /// `map` with an async transform.
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
