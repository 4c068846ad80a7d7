public import FleetwardRegistry
public import Foundation
import Synchronization

/// Group commit for enrollments: requests that arrive while a transaction is committing wait
/// and go together in the next one, so one fsync covers many enrollments while each still
/// answers only once its row is durable.
///
/// No timer: with one request at a time every enrollment is its own transaction (no added
/// latency); under load batches grow by themselves up to ``maximumBatch``.
public final class EnrollmentBatcher: Sendable {
    public static let maximumBatch = 512

    private struct Pending: Sendable {
        var record: EnrollmentRecord
        var actor: Actor
        var continuation: CheckedContinuation<Device, any Error>
    }

    private struct State: Sendable {
        var queue: [Pending] = []
        var flushing = false
    }

    private let registrar: Registrar
    private let now: @Sendable () -> Date
    private let state = Mutex(State())

    public init(registrar: Registrar, now: @escaping @Sendable () -> Date = Date.init) {
        self.registrar = registrar
        self.now = now
    }

    /// Records `record` in the next group commit; returns the device once it is durable.
    public func enroll(_ record: EnrollmentRecord, by actor: Actor) async throws -> Device {
        try await withCheckedThrowingContinuation { continuation in
            let startFlusher = state.withLock { state -> Bool in
                state.queue.append(Pending(record: record, actor: actor, continuation: continuation))
                guard !state.flushing else { return false }
                state.flushing = true
                return true
            }
            if startFlusher { Task { await self.flush() } }
        }
    }

    private func flush() async {
        while true {
            let batch = state.withLock { state -> [Pending] in
                guard !state.queue.isEmpty else {
                    state.flushing = false
                    return []
                }
                let taken = Array(state.queue.prefix(Self.maximumBatch))
                state.queue.removeFirst(taken.count)
                return taken
            }
            guard !batch.isEmpty else { return }
            do {
                let results = try await registrar.enroll(batch: batch.map { ($0.record, $0.actor) }, at: now())
                for (pending, result) in zip(batch, results) {
                    pending.continuation.resume(with: result.mapError { $0 as any Error })
                }
            } catch {
                for pending in batch { pending.continuation.resume(throwing: error) }
            }
        }
    }
}
