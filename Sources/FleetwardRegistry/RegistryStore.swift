public import FleetwardPKI
public import Foundation

/// The result of importing one batch of allow-list rows.
public struct ImportBatchResult: Sendable, Equatable {
    /// Rows that became new devices.
    public var inserted: Int
    /// Rows whose ID was already registered (left unchanged).
    public var duplicates: Int

    public init(inserted: Int, duplicates: Int) {
        self.inserted = inserted
        self.duplicates = duplicates
    }
}

/// An API token as stored: its ID, the HMAC of its secret part, its role.
public struct APITokenRecord: Sendable, Equatable {
    public var id: String
    public var secretHMAC: [UInt8]
    public var role: Role
    public var owner: String?
    public var createdAt: Date
    public var expiresAt: Date?

    public init(id: String, secretHMAC: [UInt8], role: Role, owner: String?, createdAt: Date, expiresAt: Date?) {
        self.id = id
        self.secretHMAC = secretHMAC
        self.role = role
        self.owner = owner
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// One telemetry message as stored.
public struct TelemetryRecord: Sendable, Equatable, Encodable {
    public var sequence: Int64
    public var device: String
    public var receivedAt: Date
    /// The JSON document the device sent.
    public var body: String

    public init(sequence: Int64, device: String, receivedAt: Date, body: String) {
        self.sequence = sequence
        self.device = device
        self.receivedAt = receivedAt
        self.body = body
    }
}

/// One audit entry's place and subject, for change feeds.
public struct AuditSubject: Sendable, Equatable {
    public var sequence: Int64
    public var subject: String

    public init(sequence: Int64, subject: String) {
        self.sequence = sequence
        self.subject = subject
    }
}

/// Where the registry lives. One protocol, one behaviour: SQLite (embedded) and PostgreSQL.
///
/// Every method that changes rows does so in one transaction together with the audit entry that
/// records it: after a crash a change is there whole, audit entry included, or not at all.
public protocol RegistryStore: Sendable {
    /// Applies the schema migrations not yet applied, each in its own transaction; returns their versions.
    @discardableResult
    func migrate() async throws -> [Int]

    /// The device with `id`, or nil.
    func device(_ id: DeviceID) async throws -> Device?

    /// Devices matching `filter` in ID order, starting after `cursor`, at most `limit`.
    func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device]

    /// Counts devices per state.
    func deviceCounts() async throws -> [DeviceState: Int]

    /// Registers one device. - Throws: ``RegistryError`` `duplicate` when the ID exists.
    func insert(_ device: Device, by actor: Actor, at time: Date) async throws

    /// Registers a batch of devices in one transaction with one audit entry; existing IDs are
    /// counted as duplicates and left unchanged.
    func importBatch(_ devices: [Device], source: String, lines: ClosedRange<Int>, by actor: Actor, at time: Date) async throws
        -> ImportBatchResult

    /// Applies a lifecycle event (checked by ``LifecycleStateMachine``) and returns the device after it.
    func apply(_ event: LifecycleStateMachine.Event, to id: DeviceID, by actor: Actor, at time: Date) async throws -> Device

    /// Stores a new API token.
    func insert(_ token: APITokenRecord, by actor: Actor, at time: Date) async throws

    /// The token with `id`, or nil.
    func apiToken(id: String) async throws -> APITokenRecord?

    /// Every API token not revoked, in ID order (records only; secrets are never stored).
    func apiTokens() async throws -> [APITokenRecord]

    /// Revokes an API token. - Throws: ``RegistryError`` `notFound`.
    func revokeAPIToken(_ id: String, by actor: Actor, at time: Date) async throws

    /// Audit entries with sequence ≥ `sequence`, in order, at most `limit`.
    func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry]

    /// The subjects (`device:ID`, `certificate:SERIAL`, …) of audit entries after `sequence`, in
    /// order, at most `limit`: the change feed the gateway watches, whichever process made the change.
    func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject]

    /// The highest audit sequence; 0 when the log is empty.
    func auditHead() async throws -> Int64

    /// A signal each time the audit log may have grown, from any process, for stores that can
    /// push one (PostgreSQL LISTEN/NOTIFY); also signalled after every reconnection, since
    /// appends may have been missed meanwhile. Nil: followers poll ``auditHead()``.
    func auditAppends() -> AsyncStream<Void>?

    // MARK: Certificates

    /// Records an issued certificate (linked to its device when `deviceID` is set).
    /// - Throws: ``RegistryError`` `notFound` when the device is not registered, `duplicate` for a known serial.
    func insert(_ certificate: CertificateRecord, by actor: Actor, at time: Date) async throws

    /// Records a batch of issued certificates in one transaction, one audit entry each.
    func insert(_ certificates: [CertificateRecord], by actor: Actor, at time: Date) async throws

    /// Records an enrollment (``EnrollmentRules``): registers the device if it may be, makes it
    /// active, binds the owner, records the certificate, appends the audit entry; all or nothing.
    func enroll(_ record: EnrollmentRecord, by actor: Actor, at time: Date) async throws -> Device

    /// Records several enrollments in one transaction (one fsync), each in its own savepoint: a
    /// refused one is rolled back alone and reported in its slot; the rest commit together.
    func enroll(batch: [(record: EnrollmentRecord, actor: Actor)], at time: Date) async throws -> [Result<Device, RegistryError>]

    /// The certificate with `serial` (lowercase hex), or nil.
    func certificate(serial: String) async throws -> CertificateRecord?

    /// Revokes one certificate (the device's state is left alone).
    /// - Throws: ``RegistryError`` `notFound` for an unknown serial, `duplicate` when already revoked.
    func revokeCertificate(serial: String, reason: RevocationReason, by actor: Actor, at time: Date) async throws -> CertificateRecord

    /// The certificates issued to a device, newest first, with their revocation.
    func certificates(for id: DeviceID) async throws -> [CertificateRecord]

    /// Every revoked certificate whose profile is one of `profiles`, by serial: a CA's CRL entries.
    func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry]

    // MARK: Telemetry

    /// Stores one telemetry message (a JSON document) from `device` with its nonce.
    ///
    /// - Throws: ``RegistryError`` `duplicate` when `device` already sent a message with `nonce`
    ///   (a replay), `notFound` when there is no such device.
    func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws

    /// The newest `limit` telemetry messages of `device`, newest first.
    func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord]

    // MARK: Updates

    /// Records where `report.device` stands with `report.version` (one row per device and version;
    /// an `offered` never overwrites a state the device reported).
    ///
    /// - Throws: ``RegistryError`` `notFound` when there is no such device.
    func recordUpdate(_ report: UpdateReport, at time: Date) async throws

    /// How many devices are in each state for release `version`.
    func updateCounts(version: String) async throws -> [UpdateState: Int]

    /// How many certificates are revoked: revocations are never undone, so a CRL is current
    /// while this number is unchanged.
    func revocationCount() async throws -> Int

    // MARK: Owners

    /// Registers an owner. - Throws: ``RegistryError`` `duplicate`.
    func insert(_ owner: Owner, by actor: Actor, at time: Date) async throws

    /// The owner with `id`, or nil.
    func owner(_ id: String) async throws -> Owner?

    /// Owners in ID order after `cursor`, at most `limit`.
    func owners(after cursor: String?, limit: Int) async throws -> [Owner]

    /// Hands a device to another registered owner (checked by ``OwnershipRules``).
    func transfer(_ id: DeviceID, to newOwner: String, by actor: Actor, at time: Date) async throws -> Device

    // MARK: Claim codes

    /// Sets (or replaces, while unclaimed) the claim code of a device.
    func setClaimCode(_ record: ClaimCodeRecord, by actor: Actor, at time: Date) async throws

    /// The claim code record of a device, or nil.
    func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord?

    /// Binds a device to the actor's owner after the caller checked the typed code against the
    /// record whose hash is `verifiedHash`; fails if that record changed or was used meanwhile.
    func claim(_ id: DeviceID, verifiedHash: [UInt8], by actor: Actor, at time: Date) async throws -> Device

    // MARK: Enrollment tokens

    /// Stores a one-time enrollment token.
    func insert(_ token: EnrollmentTokenRecord, by actor: Actor, at time: Date) async throws

    /// The unused, unexpired token with `secretHMAC` for device `id`, without spending it (nil otherwise).
    func enrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord?

    /// Marks the unused, unexpired token with `secretHMAC` for device `id` used and returns it.
    /// - Throws: ``RegistryError`` `forbidden` when there is no such token, or it was used or expired.
    func redeemEnrollmentToken(secretHMAC: [UInt8], for id: DeviceID, at time: Date) async throws -> EnrollmentTokenRecord

    // MARK: Enrollment groups

    /// Registers an enrollment group. - Throws: ``RegistryError`` `duplicate` for a known CA or name.
    func insert(_ group: EnrollmentGroup, by actor: Actor, at time: Date) async throws

    /// The group with `id`, or nil.
    func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup?

    /// Every group, by name.
    func enrollmentGroups() async throws -> [EnrollmentGroup]

    /// Removes a group (devices it registered stay). - Throws: ``RegistryError`` `notFound`.
    func deleteEnrollmentGroup(_ id: String, by actor: Actor, at time: Date) async throws
}

extension RegistryStore {
    public func auditAppends() -> AsyncStream<Void>? { nil }

    /// Walks the whole audit log.
    public func verifyAudit(batchSize: Int = 10_000) async throws -> AuditChainVerifier.Outcome {
        var verifier = AuditChainVerifier()
        var next: Int64 = 1
        while true {
            let entries = try await auditEntries(from: next, limit: batchSize)
            for entry in entries where !verifier.check(entry) {
                return verifier.outcome
            }
            guard let last = entries.last, entries.count == batchSize else { break }
            next = last.sequence + 1
        }
        return verifier.outcome
    }
}
