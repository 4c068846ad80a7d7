public import FleetwardPKI
public import Foundation

/// The registry's use cases, each written once over any ``RegistryStore``: register and import
/// devices, change their state, hand them to owners, claim them, make enrollment tokens and
/// groups, record enrollments and certificates, revoke, store telemetry and update reports.
///
/// Every change runs in one store transaction: read the rows it needs, decide by the rules
/// (``LifecycleStateMachine``, ``OwnershipRules``, ``EnrollmentRules``, ``AccessPolicy``), write the
/// rows and append its audit entry. The stores only read and write rows, so both behave alike by
/// construction.
///
/// Secrets arrive already hashed: the registrar never sees a factory secret, token or claim code.
public struct Registrar: Sendable {
    public let store: any RegistryStore
    /// Seals each audit entry with a MAC under the sealed registry key (nil: entries carry none;
    /// for tests of the rules alone).
    public let sealer: AuditSealer?

    public init(store: any RegistryStore, sealer: AuditSealer? = nil) {
        self.store = store
        self.sealer = sealer
    }

    /// Runs `body` in an audited transaction with an ``AuditTrail`` to record in.
    func change<T: Sendable>(_ body: (any RegistryTransaction, AuditTrail) async throws -> T) async throws -> T {
        try await store.transaction(audited: true) { transaction in
            try await body(transaction, AuditTrail(transaction, sealer: sealer))
        }
    }

    // MARK: Reads

    /// The device `id` as `actor` may see it.
    ///
    /// - Throws: ``RegistryError`` `notFound` when there is no such device, or it belongs to
    ///   another owner (so an owner cannot probe which IDs exist).
    public func device(_ id: DeviceID, as actor: Actor) async throws -> Device {
        guard let device = try await store.device(id), AccessPolicy.canSee(device, actor) else {
            throw RegistryError(.notFound, "no device \(id)")
        }
        return device
    }

    /// Reads `id` inside a transaction; `notFound` unless `actor` may see it.
    static func visibleDevice(_ id: DeviceID, _ transaction: any RegistryTransaction, as actor: Actor) async throws -> Device {
        guard let device = try await transaction.device(id), AccessPolicy.canSee(device, actor) else {
            throw RegistryError(.notFound, "no device \(id)")
        }
        return device
    }

    // MARK: Devices

    /// Registers one device.
    /// - Throws: ``RegistryError`` `duplicate` when the ID is registered.
    public func register(_ device: Device, by actor: Actor, at time: Date) async throws {
        var device = device
        device.registeredBy = device.registeredBy ?? actor.name
        try await change { [device] transaction, audit in
            guard try await transaction.insertDevice(device) else {
                throw RegistryError(.duplicate, "device \(device.id) is already registered")
            }
            try await audit.record(
                .deviceCreate, .device(device.id), by: actor, at: time, after: RegistryEncoding.auditJSON(device))
        }
    }

    /// Registers a batch of devices in one transaction with one audit entry; IDs already
    /// registered are counted as duplicates and left unchanged.
    public func importBatch(
        _ devices: [Device], source: String, lines: ClosedRange<Int>, by actor: Actor, at time: Date
    ) async throws -> ImportBatchResult {
        var devices = devices
        for index in devices.indices where devices[index].registeredBy == nil { devices[index].registeredBy = actor.name }
        return try await change { [devices] transaction, audit in
            let inserted = try await transaction.insertDevices(devices)
            let result = ImportBatchResult(inserted: inserted, duplicates: devices.count - inserted)
            try await audit.record(
                .devicesImport, .allowList(source: source), by: actor, at: time, after: RegistryEncoding.importJSON(lines: lines, result))
            return result
        }
    }

    /// Applies a lifecycle event and returns the device after it.
    ///
    /// Revoking a device or reporting it stolen also revokes all its certificates
    /// (cessationOfOperation, keyCompromise); a recovered device returns to the state it was
    /// stolen from.
    /// - Throws: ``RegistryError`` `notFound` (no such device, or not the actor's), `forbidden`,
    ///   `illegalTransition` (both states named).
    public func apply(_ event: LifecycleStateMachine.Event, to id: DeviceID, by actor: Actor, at time: Date) async throws -> Device {
        try await change { transaction, audit in
            var device = try await Self.visibleDevice(id, transaction, as: actor)
            let before = device
            device.state = try LifecycleStateMachine.next(
                from: device.state, on: event, by: actor, deviceOwner: device.owner, stateBeforeTheft: device.stateBeforeTheft)
            device.stateBeforeTheft = event == .reportStolen ? before.state : nil
            device.updatedAt = time
            try await transaction.updateDevice(device)
            if let reason = LifecycleStateMachine.revocationReason(for: event) {
                try await Self.revokeCertificates(of: id, reason: reason, at: time, transaction)
            }
            try await audit.record(
                .lifecycle(event), .device(id), by: actor, at: time, before: RegistryEncoding.auditJSON(before),
                after: RegistryEncoding.auditJSON(device))
            return device
        }
    }

    /// Revokes every unrevoked certificate of device `id` inside `transaction`.
    static func revokeCertificates(of id: DeviceID, reason: RevocationReason, at time: Date, _ transaction: any RegistryTransaction)
        async throws
    {
        for certificate in try await transaction.certificates(for: id) where certificate.revocation == nil {
            _ = try await transaction.insertRevocation(serial: certificate.serial, reason: reason.rawValue, at: time)
        }
    }

    // MARK: Certificates

    /// Records issued certificates in one transaction, one audit entry each.
    /// - Throws: ``RegistryError`` `notFound` when a certificate's device is not registered,
    ///   `duplicate` for a serial already recorded; nothing is recorded then.
    public func recordCertificates(
        _ certificates: [CertificateRecord], registering devices: [Device] = [], by actor: Actor, at time: Date
    ) async throws {
        try await change { transaction, audit in
            for var device in devices {
                device.registeredBy = device.registeredBy ?? actor.name
                if try await transaction.insertDevice(device) {
                    try await audit.record(
                        .deviceCreate, .device(device.id), by: actor, at: time, after: RegistryEncoding.auditJSON(device))
                }
            }
            for certificate in certificates {
                if let id = certificate.deviceID, try await transaction.device(id) == nil {
                    throw RegistryError(.notFound, "no device \(id)")
                }
                guard try await transaction.insertCertificate(certificate) else {
                    throw RegistryError(.duplicate, "certificate \(certificate.serial) is already recorded")
                }
                try await audit.record(
                    .certificateIssue, .certificate(serial: certificate.serial), by: actor, at: time,
                    after: RegistryEncoding.certificateJSON(certificate))
            }
        }
    }

    /// Revokes one certificate; the device keeps its state.
    /// - Throws: ``RegistryError`` `notFound` for an unknown serial, `duplicate` when already revoked.
    public func revokeCertificate(serial: String, reason: RevocationReason, by actor: Actor, at time: Date) async throws
        -> CertificateRecord
    {
        try await change { transaction, audit in
            guard var record = try await transaction.certificate(serial: serial) else {
                throw RegistryError(.notFound, "no certificate \(serial)")
            }
            guard record.revocation == nil, try await transaction.insertRevocation(serial: serial, reason: reason.rawValue, at: time)
            else {
                throw RegistryError(.duplicate, "certificate \(serial) is already revoked")
            }
            record.revocation = CertificateRecord.Revocation(reason: reason.rawValue, time: time)
            try await audit.record(
                .certificateRevoke, .certificate(serial: serial), by: actor, at: time,
                after: "{\"reason\":\"\(reason)\"}")
            return record
        }
    }

    // MARK: Telemetry and updates

    /// Stores one telemetry message (a JSON document) from `device` with its nonce.
    /// - Throws: ``RegistryError`` `duplicate` when `device` already sent a message with `nonce`
    ///   (a replay), `notFound` when there is no such device.
    /// - Parameter keeping: the most messages kept per device: older ones go with this write.
    public func recordTelemetry(_ body: String, from device: DeviceID, nonce: String, keeping: Int? = nil, at time: Date) async throws {
        try await store.transaction(audited: false) { transaction in
            guard try await transaction.device(device) != nil else { throw RegistryError(.notFound, "no device \(device)") }
            guard try await transaction.insertTelemetry(body, from: device, nonce: nonce, at: time) else {
                throw RegistryError(.duplicate, "device \(device) already sent a message with this nonce")
            }
            if let keeping { _ = try await transaction.trimTelemetry(of: device, keeping: keeping) }
        }
    }

    /// Deletes telemetry received before `time`, at most `batch` rows in one short transaction,
    /// so retention never holds the database for long; returns how many went.
    public func expireTelemetry(receivedBefore time: Date, batch: Int = 1000) async throws -> Int {
        try await store.transaction(audited: false) { transaction in
            try await transaction.deleteTelemetry(receivedBefore: time, limit: batch)
        }
    }

    /// The most security events kept; older ones go as new ones come.
    public static let securityEventsKept = 100_000

    /// Appends a security event (the caller limits how often: see the server's `SecurityEventLog`).
    public func recordSecurityEvent(_ event: SecurityEvent) async throws {
        try await store.transaction(audited: false) { transaction in
            try await transaction.insertSecurityEvent(event)
            try await transaction.trimSecurityEvents(keeping: Self.securityEventsKept)
        }
    }

    /// Records where `report.device` stands with `report.version`: one row per device and
    /// version, and an `offered` never overwrites a state the device reported.
    /// - Throws: ``RegistryError`` `notFound` when there is no such device.
    public func recordUpdate(_ report: UpdateReport, at time: Date) async throws {
        try await store.transaction(audited: false) { transaction in
            guard try await transaction.device(report.device) != nil else {
                throw RegistryError(.notFound, "no device \(report.device)")
            }
            if report.state == .offered, let current = try await transaction.updateState(of: report.device, version: report.version),
                current != .offered
            {
                return
            }
            try await transaction.saveUpdateState(report, at: time)
        }
    }
}

/// The audit entries of one transaction, chained to the log's last entry: read once, then kept,
/// so a transaction that appends many (a batch of enrollments) reads the tail only once.
final class AuditTrail {
    private let transaction: any RegistryTransaction
    private let sealer: AuditSealer?
    private var tail: AuditLink??

    init(_ transaction: any RegistryTransaction, sealer: AuditSealer?) {
        self.transaction = transaction
        self.sealer = sealer
    }

    /// The tail as known now, to restore when a savepoint rolls back what was appended since.
    var mark: AuditLink?? {
        get { tail }
        set { tail = newValue }
    }

    /// Appends one entry.
    func record(
        _ action: AuditAction, _ target: AuditTarget, by actor: Actor, at time: Date, before: String? = nil, after: String? = nil
    ) async throws {
        let previous: AuditLink?
        if let known = tail {
            previous = known
        } else {
            previous = try await transaction.auditTail()
        }
        var entry = AuditEntry(
            following: previous.map { ($0.sequence, $0.hash) }, time: time, actor: actor.description, action: action.rawValue,
            subject: target.description, before: before, after: after)
        entry.mac = sealer?.mac(entry)
        try await transaction.insertAuditEntry(entry)
        tail = .some(AuditLink(sequence: entry.sequence, hash: entry.hash))
    }
}
