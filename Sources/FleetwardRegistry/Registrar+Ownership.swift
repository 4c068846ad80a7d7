public import FleetwardPKI
public import Foundation

// Owners, transfers, claim codes and claims (DESIGN: provisioning flow 3).
extension Registrar {
    /// Registers an owner. - Throws: ``RegistryError`` `duplicate`.
    public func createOwner(_ owner: Owner, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            guard try await transaction.insertOwner(owner) else { throw RegistryError(.duplicate, "owner \(owner.id) exists") }
            try await audit.record(.ownerCreate, .owner(owner.id), by: actor, at: time, after: RegistryEncoding.ownerJSON(owner))
        }
    }

    /// Registers owner `id` unless it exists, recording it when it is new.
    static func ensureOwner(_ id: String, by actor: Actor, at time: Date, _ transaction: any RegistryTransaction, _ audit: AuditTrail)
        async throws
    {
        let owner = try Owner(id: id, createdAt: time)
        if try await transaction.insertOwner(owner) {
            try await audit.record(.ownerCreate, .owner(id), by: actor, at: time, after: RegistryEncoding.ownerJSON(owner))
        }
    }

    /// Hands a device to another registered owner (checked by ``OwnershipRules``).
    /// - Throws: ``RegistryError`` `notFound` (no such device or not the actor's; no such owner),
    ///   `forbidden`, `illegalTransition` (revoked or stolen), `invalidInput` (already theirs).
    public func transfer(_ id: DeviceID, to newOwner: String, by actor: Actor, at time: Date) async throws -> Device {
        try await change { transaction, audit in
            let device = try await Self.visibleDevice(id, transaction, as: actor)
            guard Owner.isValidID(newOwner) else {
                throw RegistryError(.invalidInput, "the new owner's ID is not valid (1 to 64 letters, digits, '-', '_', '.', '@')")
            }
            try OwnershipRules.checkTransfer(of: device, to: newOwner, by: actor)
            guard try await transaction.owner(newOwner) != nil else {
                throw RegistryError(.invalidInput, "no owner \(newOwner) is registered: create the owner first")
            }
            return try await Self.changeOwner(of: device, to: newOwner, .deviceTransfer, by: actor, at: time, transaction, audit)
        }
    }

    /// Sets the device's owner and records it, inside the caller's transaction.
    static func changeOwner(
        of device: Device, to owner: String, _ action: AuditAction, by actor: Actor, at time: Date, _ transaction: any RegistryTransaction,
        _ audit: AuditTrail
    ) async throws -> Device {
        var changed = device
        changed.owner = owner
        changed.updatedAt = time
        try await transaction.updateDevice(changed)
        // A new owner starts from a clean slate: no key enrolled before the change (a spare the
        // seller kept, the factory's) works after it; the device re-enrolls with a token from the
        // new owner.
        try await revokeCertificates(of: device.id, reason: .affiliationChanged, at: time, transaction)
        try await audit.record(
            action, .device(device.id), by: actor, at: time, before: RegistryEncoding.auditJSON(device),
            after: RegistryEncoding.auditJSON(changed))
        return changed
    }

    /// Sets the claim code printed on a device that has no owner.
    ///
    /// A manufacturer acts only on the devices it registered. A code that exists and is unused is
    /// replaced only when `rotate` says so (a reprinted label), recorded as a rotation: the
    /// printed one would otherwise stop working without anyone noticing.
    /// - Throws: ``RegistryError`` `notFound` (no such device, or not the manufacturer's),
    ///   `duplicate` when the device has an owner or already has an unused code and `rotate` is false.
    public func setClaimCode(_ record: ClaimCodeRecord, rotate: Bool = false, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            let device = try await Self.visibleDevice(record.deviceID, transaction, as: actor)
            if actor.role == .manufacturer, device.registeredBy != actor.name {
                throw RegistryError(.notFound, "no device \(device.id) registered by this token")
            }
            guard device.owner == nil else { throw RegistryError(.duplicate, "device \(device.id) is already claimed") }
            let existing = try await transaction.claimCode(for: device.id)
            if let existing, existing.claimedBy == nil, !rotate {
                throw RegistryError(
                    .duplicate, "device \(device.id) already has a claim code; replacing it invalidates the printed one (rotate it explicitly)")
            }
            var fresh = record
            fresh.claimedBy = nil
            fresh.claimedAt = nil
            try await transaction.saveClaimCode(fresh)
            try await audit.record(existing == nil ? .deviceClaimCode : .deviceClaimCodeRotate, .device(device.id), by: actor, at: time)
        }
    }

    /// Binds a device to the actor's owner once the caller has checked the typed code against the
    /// record whose hash is `verifiedHash`.
    /// - Throws: ``RegistryError`` `forbidden` when the code record changed or was used meanwhile,
    ///   or the actor is not an owner; `duplicate` when the device has an owner; `notFound`.
    public func claim(_ id: DeviceID, verifiedHash: [UInt8], by actor: Actor, at time: Date) async throws -> Device {
        try await change { transaction, audit in
            guard let device = try await transaction.device(id) else { throw RegistryError(.notFound, "no device \(id)") }
            let owner = try OwnershipRules.checkClaim(of: device, by: actor)
            guard var code = try await transaction.claimCode(for: id), code.claimedBy == nil, code.hash == verifiedHash else {
                throw RegistryError(.forbidden, "the claim code of device \(id) is not valid")
            }
            code.claimedBy = owner
            code.claimedAt = time
            try await transaction.saveClaimCode(code)
            try await Self.ensureOwner(owner, by: actor, at: time, transaction, audit)
            return try await Self.changeOwner(of: device, to: owner, .deviceClaim, by: actor, at: time, transaction, audit)
        }
    }
}

// API tokens and one-time enrollment tokens.
extension Registrar {
    /// Stores a new API token (registering its owner when it is new).
    public func createAPIToken(_ token: APITokenRecord, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            guard try await transaction.insertAPIToken(token) else { throw RegistryError(.duplicate, "API token \(token.id) exists") }
            if let owner = token.owner { try await Self.ensureOwner(owner, by: actor, at: time, transaction, audit) }
            try await audit.record(.tokenCreate, .token(id: token.id), by: actor, at: time, after: RegistryEncoding.tokenJSON(token))
        }
    }

    /// Revokes an API token. - Throws: ``RegistryError`` `notFound`.
    public func revokeAPIToken(_ id: String, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            guard try await transaction.revokeAPIToken(id, at: time) else { throw RegistryError(.notFound, "no API token \(id)") }
            try await audit.record(.tokenRevoke, .token(id: id), by: actor, at: time)
        }
    }

    /// Stores a one-time enrollment token for device `id`, bound to the device's owner.
    /// - Throws: ``RegistryError`` `notFound` (no such device or not the actor's),
    ///   `illegalTransition` for a revoked or stolen device, which may not enroll.
    public func createEnrollmentToken(
        for id: DeviceID, secretHMAC: [UInt8], expiresAt: Date, by actor: Actor, at time: Date
    ) async throws -> EnrollmentTokenRecord {
        try await change { transaction, audit in
            let device = try await Self.visibleDevice(id, transaction, as: actor)
            guard device.state != .revoked, device.state != .stolen else {
                throw RegistryError(.illegalTransition, "device \(device.id) is \(device.state); it cannot enroll")
            }
            let token = EnrollmentTokenRecord(secretHMAC: secretHMAC, deviceID: id, owner: device.owner, expiresAt: expiresAt)
            guard try await transaction.insertEnrollmentToken(token) else {
                throw RegistryError(.duplicate, "this enrollment token exists")
            }
            try await audit.record(
                .deviceEnrollmentToken, .device(id), by: actor, at: time, after: RegistryEncoding.enrollmentTokenJSON(token))
            return token
        }
    }

    /// The token with `secretHMAC` if it is for device `id`, unused and unexpired at `time`;
    /// without spending it.
    public func usableEnrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord? {
        guard let token = try await store.enrollmentToken(secretHMAC: secretHMAC), EnrollmentRules.isUsable(token, for: id, at: time)
        else { return nil }
        return token
    }

    /// Spends the token with `secretHMAC` for device `id` on its own and returns it.
    /// - Throws: ``RegistryError`` `forbidden` when there is no such token, or it is for another
    ///   device, used or expired.
    public func redeemEnrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord {
        try await change { transaction, audit in
            var token = try await Self.spendEnrollmentToken(secretHMAC, for: id, at: time, transaction)
            token.usedAt = time
            try await audit.record(
                .enrollmentTokenRedeem, .device(id), by: Actor(role: .owner, name: "device:\(id)", owner: token.owner), at: time)
            return token
        }
    }

    /// Marks the token used inside `transaction`, after checking it is usable.
    static func spendEnrollmentToken(_ secretHMAC: [UInt8], for id: DeviceID, at time: Date, _ transaction: any RegistryTransaction)
        async throws -> EnrollmentTokenRecord
    {
        guard let token = try await transaction.enrollmentToken(secretHMAC: secretHMAC), EnrollmentRules.isUsable(token, for: id, at: time)
        else {
            throw RegistryError(.forbidden, "the enrollment token for device \(id) is not valid, used or expired")
        }
        try await transaction.markEnrollmentTokenUsed(secretHMAC: secretHMAC, at: time)
        return token
    }
}

// Enrollment groups (DESIGN: provisioning flow 4).
extension Registrar {
    /// Registers an enrollment group. - Throws: ``RegistryError`` `duplicate` for a known CA or name.
    public func createGroup(_ group: EnrollmentGroup, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            guard try await transaction.insertEnrollmentGroup(group) else {
                throw RegistryError(.duplicate, "an enrollment group with this name or CA exists")
            }
            try await audit.record(.groupCreate, .group(id: group.id), by: actor, at: time, after: RegistryEncoding.groupJSON(group))
        }
    }

    /// Removes a group (devices it registered stay). - Throws: ``RegistryError`` `notFound`.
    public func deleteGroup(_ id: String, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            guard let group = try await transaction.enrollmentGroup(id) else { throw RegistryError(.notFound, "no enrollment group \(id)") }
            try await transaction.deleteEnrollmentGroup(id)
            try await audit.record(.groupDelete, .group(id: id), by: actor, at: time, before: RegistryEncoding.groupJSON(group))
        }
    }
}

// MQTT policies (per model or per enrollment group).
extension Registrar {
    /// Stores `record`, replacing the scope's previous policy; the audit entry holds both
    /// documents. Live sessions of the devices in scope are re-checked by the front door, which
    /// follows the audit log. - Throws: ``RegistryError`` `notFound` for a group that does not exist.
    public func setMQTTPolicy(_ record: MQTTPolicyRecord, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            if case .group(let id) = record.scope, try await transaction.enrollmentGroup(id) == nil {
                throw RegistryError(.notFound, "no enrollment group \(id)")
            }
            let before = try await transaction.mqttPolicy(record.scope)
            try await transaction.saveMQTTPolicy(record)
            try await audit.record(
                .mqttPolicySet, .mqttPolicy(record.scope), by: actor, at: time, before: before?.document, after: record.document)
        }
    }

    /// Removes the policy of `scope` (its devices fall back to the next policy that applies).
    /// - Throws: ``RegistryError`` `notFound` when there is none.
    public func deleteMQTTPolicy(_ scope: MQTTPolicyScope, by actor: Actor, at time: Date) async throws {
        try await change { transaction, audit in
            guard let before = try await transaction.mqttPolicy(scope), try await transaction.deleteMQTTPolicy(scope) else {
                throw RegistryError(.notFound, "no MQTT policy for \(scope)")
            }
            try await audit.record(.mqttPolicyDelete, .mqttPolicy(scope), by: actor, at: time, before: before.document)
        }
    }
}
