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
    /// When the entry was written (how long a change took to reach a follower).
    public var time: Date?

    public init(sequence: Int64, subject: String, time: Date? = nil) {
        self.sequence = sequence
        self.subject = subject
        self.time = time
    }
}

/// The last entry of the audit log, which the next one chains to.
public struct AuditLink: Sendable, Equatable {
    public var sequence: Int64
    public var hash: [UInt8]

    public init(sequence: Int64, hash: [UInt8]) {
        self.sequence = sequence
        self.hash = hash
    }
}

/// Where the registry lives: SQLite (embedded) or PostgreSQL. Rows only.
///
/// A store reads and writes rows; it decides nothing. Every rule (who may, which state may follow
/// which, what an owner change revokes, what the audit log says) lives once in ``Registrar``,
/// which runs each change inside ``transaction(audited:_:)`` over ``RegistryTransaction``'s row
/// operations. After a crash a change is there whole, audit entry included, or not at all.
public protocol RegistryStore: Sendable {
    /// Applies the schema migrations not yet applied, each in its own transaction; returns their versions.
    @discardableResult
    func migrate() async throws -> [Int]

    /// Runs `body` in one write transaction: committed when it returns, rolled back when it throws.
    ///
    /// - Parameter audited: the transaction appends to the audit log. Appends are serialised
    ///   across every process sharing the database (PostgreSQL takes its audit lock first), so the
    ///   hash chain grows one transaction at a time.
    /// - Throws: what `body` throws; ``RegistryError`` `storage` when the database fails.
    func transaction<T: Sendable>(audited: Bool, _ body: (any RegistryTransaction) async throws -> T) async throws -> T

    // MARK: Reads outside a transaction

    /// The device with `id`, or nil.
    func device(_ id: DeviceID) async throws -> Device?

    /// Devices matching `filter` in ID order, starting after `cursor`, at most `limit`.
    func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device]

    /// Counts devices per state.
    func deviceCounts() async throws -> [DeviceState: Int]

    /// Counts unrevoked certificates whose validity ends in `from..<until`, per profile.
    func expiringCertificateCounts(from: Date, until: Date) async throws -> [String: Int]

    /// The unrevoked API token with `id`, or nil.
    func apiToken(id: String) async throws -> APITokenRecord?

    /// Every API token not revoked, in ID order (records only; secrets are never stored).
    func apiTokens() async throws -> [APITokenRecord]

    /// Audit entries with sequence ≥ `sequence`, in order, at most `limit`.
    func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry]

    /// The newest `limit` audit entries whose subject is one of `subjects` (`device:ID`,
    /// `certificate:SERIAL`), newest first: one device's timeline.
    func auditEntries(subjects: [String], limit: Int) async throws -> [AuditEntry]

    /// The subjects (`device:ID`, `certificate:SERIAL`, …) of audit entries after `sequence`, in
    /// order, at most `limit`: the change feed the gateway watches, whichever process made the change.
    func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject]

    /// The highest audit sequence; 0 when the log is empty.
    func auditHead() async throws -> Int64

    /// A signal each time the audit log may have grown, from any process, for stores that can
    /// push one (PostgreSQL LISTEN/NOTIFY); also signalled after every reconnection, since
    /// appends may have been missed meanwhile. Nil: followers poll ``auditHead()``.
    func auditAppends() -> AsyncStream<Void>?

    /// The certificate with `serial` (lowercase hex), or nil.
    func certificate(serial: String) async throws -> CertificateRecord?

    /// The certificates issued to a device, newest first, with their revocation.
    func certificates(for id: DeviceID) async throws -> [CertificateRecord]

    /// Every revoked certificate whose profile is one of `profiles`, by serial: a CA's CRL entries.
    func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry]

    /// How many certificates are revoked: revocations are never undone, so a CRL is current
    /// while this number is unchanged.
    func revocationCount() async throws -> Int

    /// Every unrevoked certificate whose profile is one of `profiles` and whose device is
    /// suspended, by serial, as `certificateHold` (RFC 5280 §5.3.1) since the device's last
    /// change: on the CRL while the suspension lasts.
    func heldCertificates(profiles: [String]) async throws -> [RevokedEntry]

    /// The newest `limit` telemetry messages of `device`, newest first.
    func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord]

    /// How many devices are in each state for release `version`.
    func updateCounts(version: String) async throws -> [UpdateState: Int]

    /// The owner with `id`, or nil.
    func owner(_ id: String) async throws -> Owner?

    /// Owners in ID order after `cursor`, at most `limit`.
    func owners(after cursor: String?, limit: Int) async throws -> [Owner]

    /// The claim code record of a device, or nil.
    func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord?

    /// The enrollment token whose secret has HMAC `secretHMAC`, used or not, or nil.
    func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord?

    /// The group with `id`, or nil.
    func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup?

    /// Every group, by name.
    func enrollmentGroups() async throws -> [EnrollmentGroup]

    /// The MQTT policy stored for `scope`, if any.
    func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord?

    /// Every stored MQTT policy, by scope.
    func mqttPolicies() async throws -> [MQTTPolicyRecord]

    /// Security events after `sequence`, oldest first, at most `limit`.
    func securityEvents(after sequence: Int64, limit: Int) async throws -> [SecurityEvent]
}

/// The row operations of one write transaction. No rule lives here: ``Registrar`` reads, decides
/// and writes through these, the same code over every store.
///
/// Reads inside a transaction see its own writes, and the rows they return stay as read until it
/// ends (SQLite holds the database's write lock for the whole transaction; PostgreSQL locks the
/// rows read with `FOR UPDATE`).
public protocol RegistryTransaction {
    // MARK: Devices

    /// The device with `id`, or nil.
    func device(_ id: DeviceID) async throws -> Device?
    /// Inserts `device`; false when its ID is taken (nothing written).
    func insertDevice(_ device: Device) async throws -> Bool
    /// Inserts every device whose ID is free; returns how many were inserted.
    func insertDevices(_ devices: [Device]) async throws -> Int
    /// Writes every field of `device` to its row.
    func updateDevice(_ device: Device) async throws

    // MARK: Certificates

    /// The certificate with `serial`, or nil.
    func certificate(serial: String) async throws -> CertificateRecord?
    /// The certificates of device `id`, newest first.
    func certificates(for id: DeviceID) async throws -> [CertificateRecord]
    /// Inserts a certificate row; false when its serial is taken (nothing written).
    func insertCertificate(_ certificate: CertificateRecord) async throws -> Bool
    /// Records the revocation of `serial`; false when it was already revoked.
    func insertRevocation(serial: String, reason: Int, at time: Date) async throws -> Bool

    // MARK: Owners

    /// The owner with `id`, or nil.
    func owner(_ id: String) async throws -> Owner?
    /// Inserts `owner`; false when the ID is taken.
    func insertOwner(_ owner: Owner) async throws -> Bool

    // MARK: API tokens

    /// Inserts a token record; false when its ID is taken.
    func insertAPIToken(_ token: APITokenRecord) async throws -> Bool
    /// Marks the unrevoked token `id` revoked; false when there is none.
    func revokeAPIToken(_ id: String, at time: Date) async throws -> Bool

    // MARK: Claim codes and enrollment tokens

    /// The claim code record of device `id`, or nil.
    func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord?
    /// Inserts or replaces the claim code record of its device.
    func saveClaimCode(_ record: ClaimCodeRecord) async throws
    /// The enrollment token with `secretHMAC`, or nil.
    func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord?
    /// Inserts an enrollment token; false when its HMAC is taken.
    func insertEnrollmentToken(_ token: EnrollmentTokenRecord) async throws -> Bool
    /// Sets the used time of the token with `secretHMAC`.
    func markEnrollmentTokenUsed(secretHMAC: [UInt8], at time: Date) async throws

    // MARK: Enrollment groups

    /// The group with `id`, or nil.
    func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup?
    /// Inserts a group; false when its ID, name or CA is taken.
    func insertEnrollmentGroup(_ group: EnrollmentGroup) async throws -> Bool
    /// Deletes group `id`'s row.
    func deleteEnrollmentGroup(_ id: String) async throws

    // MQTT policies
    func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord?
    /// Inserts or replaces the policy of `record.scope`.
    func saveMQTTPolicy(_ record: MQTTPolicyRecord) async throws
    /// - Returns: whether a policy was there.
    func deleteMQTTPolicy(_ scope: MQTTPolicyScope) async throws -> Bool

    // MARK: Telemetry and updates

    /// Inserts a telemetry message; false when the device already used `nonce`.
    func insertTelemetry(_ body: String, from device: DeviceID, nonce: String, at time: Date) async throws -> Bool
    /// Device `device`'s state for release `version`, or nil.
    func updateState(of device: DeviceID, version: String) async throws -> UpdateState?
    /// Inserts or replaces the (device, version) update row.
    func saveUpdateState(_ report: UpdateReport, at time: Date) async throws
    /// Deletes the oldest telemetry rows received before `time`, at most `limit`; returns how many.
    func deleteTelemetry(receivedBefore time: Date, limit: Int) async throws -> Int
    /// Deletes device `id`'s telemetry beyond its newest `count` rows; returns how many.
    func trimTelemetry(of id: DeviceID, keeping count: Int) async throws -> Int

    // MARK: Security events

    /// Appends a security event.
    func insertSecurityEvent(_ event: SecurityEvent) async throws
    /// Deletes all but the newest `count` security events.
    func trimSecurityEvents(keeping count: Int) async throws

    // MARK: Audit log

    /// The last audit entry, or nil for an empty log. Only in an audited transaction.
    func auditTail() async throws -> AuditLink?
    /// Appends `entry` (already chained to ``auditTail()``).
    func insertAuditEntry(_ entry: AuditEntry) async throws

    // MARK: Savepoints

    /// Runs `body` in a savepoint: its writes are rolled back alone when it throws, and the
    /// transaction goes on.
    func savepoint<T>(_ body: () async throws -> T) async throws -> T
}

extension RegistryStore {
    public func auditAppends() -> AsyncStream<Void>? { nil }

    /// Walks the whole audit log; with `sealer`, each entry's MAC is checked as well.
    public func verifyAudit(sealer: AuditSealer? = nil, batchSize: Int = 10_000) async throws -> AuditChainVerifier.Outcome {
        var verifier = AuditChainVerifier(sealer: sealer)
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

/// A refusal an operator must see: a stolen, revoked or suspended device (or a revoked
/// certificate) trying to enroll or connect.
public struct SecurityEvent: Sendable, Equatable, Codable {
    /// Its place in the log (0 before it is stored).
    public var sequence: Int64
    public var time: Date
    /// `enrollment-refused` or `handshake-refused`.
    public var kind: String
    public var device: String?
    public var serial: String?
    /// Where the attempt came from.
    public var address: String?
    /// Why it was refused (one sentence, never a secret).
    public var detail: String

    public init(sequence: Int64 = 0, time: Date, kind: String, device: String?, serial: String?, address: String?, detail: String) {
        self.sequence = sequence
        self.time = time
        self.kind = kind
        self.device = device
        self.serial = serial
        self.address = address
        self.detail = String(detail.prefix(300))
    }
}
