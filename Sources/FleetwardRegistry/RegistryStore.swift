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

    /// Audit entries with sequence ≥ `sequence`, in order, at most `limit`.
    func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry]
}

extension RegistryStore {
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
