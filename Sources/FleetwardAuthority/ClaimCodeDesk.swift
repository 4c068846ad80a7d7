import Dispatch
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation

/// Claim codes, the code printed on a device's label that binds it to the owner who types it
/// (DESIGN: provisioning flow 3): making them, and checking them with limits on guessing.
///
/// A code is stored as a salted PBKDF2 hash (``ClaimCodes``), slow on purpose (about 0.1 s); that
/// work runs on a thread of its own, never on the threads that serve requests.
public struct ClaimCodeDesk: Sendable {
    public let registrar: Registrar
    /// PBKDF2 iterations for new claim codes.
    let iterations: Int
    /// Failed claims allowed per device and per address before `tooManyRequests`.
    let limiter: AttemptLimiter

    public init(
        registrar: Registrar, iterations: Int = ClaimCodes.defaultIterations,
        limiter: AttemptLimiter = AttemptLimiter(.init(maximumFailures: 5, window: 900))
    ) {
        self.registrar = registrar
        self.iterations = iterations
        self.limiter = limiter
    }

    /// A new claim code for device `id` (with `rotate`, replacing one not yet used); returns the
    /// code to print (shown once, stored only hashed).
    /// - Throws: ``RegistryError`` from ``Registrar/setClaimCode(_:rotate:by:at:)``.
    public func issue(for id: DeviceID, rotate: Bool = false, by actor: Actor, at time: Date) async throws -> String {
        let code = ClaimCodes.generate()
        let iterations = iterations
        let record = try await Self.offload { try ClaimCodes.record(for: code, device: id, iterations: iterations) }
        try await registrar.setClaimCode(record, rotate: rotate, by: actor, at: time)
        return code
    }

    /// Binds device `id` to the actor's owner when `typed` is its claim code.
    ///
    /// Unknown device, no code, a used code and a wrong code all answer alike, after the same
    /// work (a missing or used code is checked against a dummy record), so a code cannot be
    /// probed by timing. The attempt counts before the slow hash runs, so parallel guesses cannot
    /// all slip under the limit; a success takes it back.
    /// - Throws: ``AuthorityError`` `tooManyRequests`, `forbidden` (the code does not match);
    ///   ``RegistryError`` from ``Registrar/claim(_:verifiedHash:by:at:)``.
    public func claim(_ id: DeviceID, code typed: String, by actor: Actor, from address: String?, at time: Date) async throws -> Device {
        let keys = ["claim-device:\(id)", "claim-address:\(AttemptLimiter.addressKey(address))"]
        if let wait = keys.compactMap({ limiter.retryAfter($0, now: time) }).max() {
            throw AuthorityError(.tooManyRequests, "too many failed claims; try again later", retryAfter: wait)
        }
        for key in keys { limiter.recordFailure(key, now: time) }
        let stored = try await registrar.store.claimCode(for: id)
        let usable = stored.flatMap { $0.claimedBy == nil ? $0 : nil }
        let candidate = usable ?? ClaimCodes.dummyRecord(for: id)
        let matched = await Self.offload { ClaimCodes.matches(typed, candidate) }
        guard matched, let record = usable else {
            throw AuthorityError(.forbidden, "the claim code does not match device \(id)")
        }
        let device = try await registrar.claim(id, verifiedHash: record.hash, by: actor, at: time)
        for key in keys { limiter.forgiveLast(key) }
        return device
    }

    /// Runs slow, blocking work on a Dispatch thread and waits for it without blocking.
    static func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
        }
    }

    static func offload<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: work()) }
        }
    }
}
