import FleetwardPKI
import FleetwardRegistry
import Foundation

// The conformance suites call each use case by the name it had when every store implemented it
// whole (`store.apply`, `store.transfer`, …). The rules now live once, in ``Registrar``, over the
// stores' row operations; these names forward to it, so each test still reads as the behaviour it
// checks and runs against SQLite and PostgreSQL alike.
extension RegistryStore {
    var registrar: Registrar { Registrar(store: self) }

    func insert(_ device: Device, by actor: Actor, at time: Date) async throws {
        try await registrar.register(device, by: actor, at: time)
    }

    func importBatch(_ devices: [Device], source: String, lines: ClosedRange<Int>, by actor: Actor, at time: Date) async throws
        -> ImportBatchResult
    {
        try await registrar.importBatch(devices, source: source, lines: lines, by: actor, at: time)
    }

    func apply(_ event: LifecycleStateMachine.Event, to id: DeviceID, by actor: Actor, at time: Date) async throws -> Device {
        try await registrar.apply(event, to: id, by: actor, at: time)
    }

    func insert(_ token: APITokenRecord, by actor: Actor, at time: Date) async throws {
        try await registrar.createAPIToken(token, by: actor, at: time)
    }

    func revokeAPIToken(_ id: String, by actor: Actor, at time: Date) async throws {
        try await registrar.revokeAPIToken(id, by: actor, at: time)
    }

    func insert(_ owner: Owner, by actor: Actor, at time: Date) async throws {
        try await registrar.createOwner(owner, by: actor, at: time)
    }

    func transfer(_ id: DeviceID, to newOwner: String, by actor: Actor, at time: Date) async throws -> Device {
        try await registrar.transfer(id, to: newOwner, by: actor, at: time)
    }

    func setClaimCode(_ record: ClaimCodeRecord, by actor: Actor, at time: Date) async throws {
        try await registrar.setClaimCode(record, by: actor, at: time)
    }

    func claim(_ id: DeviceID, verifiedHash: [UInt8], by actor: Actor, at time: Date) async throws -> Device {
        try await registrar.claim(id, verifiedHash: verifiedHash, by: actor, at: time)
    }

    /// The token's owner is the device's, as ``Registrar/createEnrollmentToken(for:secretHMAC:expiresAt:by:at:)`` binds it.
    func insert(_ token: EnrollmentTokenRecord, by actor: Actor, at time: Date) async throws {
        _ = try await registrar.createEnrollmentToken(
            for: token.deviceID, secretHMAC: token.secretHMAC, expiresAt: token.expiresAt, by: actor, at: time)
    }

    func enrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord? {
        try await registrar.usableEnrollmentToken(secretHMAC: secretHMAC, for: id, at: time)
    }

    func redeemEnrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord {
        try await registrar.redeemEnrollmentToken(secretHMAC: secretHMAC, for: id, at: time)
    }

    func insert(_ group: EnrollmentGroup, by actor: Actor, at time: Date) async throws {
        try await registrar.createGroup(group, by: actor, at: time)
    }

    func deleteEnrollmentGroup(_ id: String, by actor: Actor, at time: Date) async throws {
        try await registrar.deleteGroup(id, by: actor, at: time)
    }

    func insert(_ certificate: CertificateRecord, by actor: Actor, at time: Date) async throws {
        try await registrar.recordCertificates([certificate], by: actor, at: time)
    }

    func enroll(_ record: EnrollmentRecord, by actor: Actor, at time: Date) async throws -> Device {
        try await registrar.enroll(record, by: actor, at: time)
    }

    func enroll(batch: [(record: EnrollmentRecord, actor: Actor)], at time: Date) async throws -> [Result<Device, RegistryError>] {
        try await registrar.enroll(batch: batch, at: time)
    }

    func revokeCertificate(serial: String, reason: RevocationReason, by actor: Actor, at time: Date) async throws -> CertificateRecord {
        try await registrar.revokeCertificate(serial: serial, reason: reason, by: actor, at: time)
    }

    func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws {
        try await registrar.recordTelemetry(body, from: device, nonce: nonce, at: time)
    }

    func recordUpdate(_ report: UpdateReport, at time: Date) async throws {
        try await registrar.recordUpdate(report, at: time)
    }
}
