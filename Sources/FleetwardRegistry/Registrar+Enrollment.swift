public import Foundation

// Enrollments: the registry's side of every provisioning flow.
extension Registrar {
    /// Records an enrollment (``EnrollmentRules``): spends its one-time token, registers the
    /// device if it may be, makes it active, binds the owner, records the certificate, appends the
    /// audit entry; all or nothing.
    /// - Throws: ``RegistryError`` `forbidden` (token not valid, device in a state this flow does
    ///   not accept), `notFound`, `duplicate` (another owner's device).
    public func enroll(_ record: EnrollmentRecord, by actor: Actor, at time: Date) async throws -> Device {
        try await change { transaction, audit in
            try await Self.enrollOne(record, by: actor, at: time, transaction, audit)
        }
    }

    /// Records several enrollments in one transaction (one fsync), each in its own savepoint: a
    /// refused one is rolled back alone and reported in its slot; the rest commit together.
    /// A storage failure fails them all.
    public func enroll(batch: [(record: EnrollmentRecord, actor: Actor)], at time: Date) async throws -> [Result<Device, RegistryError>] {
        try await change { transaction, audit in
            var results: [Result<Device, RegistryError>] = []
            results.reserveCapacity(batch.count)
            for (record, actor) in batch {
                let mark = audit.mark
                do {
                    let device = try await transaction.savepoint {
                        try await Self.enrollOne(record, by: actor, at: time, transaction, audit)
                    }
                    results.append(.success(device))
                } catch let error as RegistryError where error.code != .storage {
                    audit.mark = mark
                    results.append(.failure(error))
                }
            }
            return results
        }
    }

    /// One enrollment inside the caller's transaction.
    static func enrollOne(
        _ record: EnrollmentRecord, by actor: Actor, at time: Date, _ transaction: any RegistryTransaction, _ audit: AuditTrail
    ) async throws -> Device {
        if let tokenHMAC = record.tokenHMAC {
            _ = try await spendEnrollmentToken(tokenHMAC, for: record.device.id, at: time, transaction)
        }
        let stored = try await transaction.device(record.device.id)
        let (device, isNew) = try EnrollmentRules.apply(record, to: stored, at: time)
        if isNew {
            guard try await transaction.insertDevice(device) else {
                throw RegistryError(.duplicate, "device \(device.id) is already registered")
            }
        } else {
            try await transaction.updateDevice(device)
        }
        if let owner = device.owner { try await ensureOwner(owner, by: actor, at: time, transaction, audit) }
        var certificate = record.certificate
        certificate.owner = device.owner
        certificate.deviceID = device.id
        guard try await transaction.insertCertificate(certificate) else {
            throw RegistryError(.duplicate, "certificate \(certificate.serial) is already recorded")
        }
        try await audit.record(
            .deviceEnroll, .device(device.id), by: actor, at: time, before: stored.map(RegistryEncoding.auditJSON),
            after: EnrollmentRules.auditJSON(record, device))
        return device
    }
}
