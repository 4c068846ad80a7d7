public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import NIOPosix
import Synchronization

/// The embedded registry: one SQLite file (WAL mode, full fsync on commit) inside the data directory.
///
/// Every call runs under one lock on one connection; several processes may open the same file
/// (the console and a running server) and SQLite's own locking orders their writes.
public final class SQLiteRegistryStore: RegistryStore {
    private let database: Mutex<Connection>
    /// A second connection for single-row reads on hot paths (token lookups, device reads):
    /// WAL lets it read while the writer waits on fsync, so readers never queue behind a commit.
    private let reader: Mutex<Connection>

    public let path: String

    final class Connection: @unchecked Sendable {
        let db: SQLiteDatabase
        var statements: [String: SQLiteStatement] = [:]

        init(db: SQLiteDatabase) { self.db = db }

        /// Statements handed out during the current call; reset when it ends.
        var used: [SQLiteStatement] = []

        func statement(_ sql: String) throws -> SQLiteStatement {
            if let cached = statements[sql] {
                cached.reset()
                used.append(cached)
                return cached
            }
            let statement = try db.prepare(sql)
            statements[sql] = statement
            used.append(statement)
            return statement
        }

        /// Resets every statement the call used. A statement left mid-result keeps its read
        /// transaction open, pinning this connection to an old snapshot: it would not see other
        /// processes' writes (the console's, while `serve` runs) and could not write ("database is locked").
        func finishCall() {
            for statement in used { statement.reset() }
            used.removeAll(keepingCapacity: true)
            db.checkpointIfLogHolds(frames: 1000, busyTimeoutMilliseconds: 10000)
        }
    }

    /// Opens (creating if needed) the database at `path`. Call ``migrate()`` before use.
    public init(path: String) throws {
        self.path = path
        let db = try SQLiteDatabase(path: path)
        try db.execute(
            """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = FULL;
            PRAGMA foreign_keys = ON;
            PRAGMA busy_timeout = 10000;
            PRAGMA journal_size_limit = 67108864;
            """
        )
        db.takeOverCheckpoints()
        database = Mutex(Connection(db: db))
        let readDB = try SQLiteDatabase(path: path)
        try readDB.execute("PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;")
        reader = Mutex(Connection(db: readDB))
    }

    /// Runs `body` on the connection, on a thread of NIO's blocking pool: SQLite calls block
    /// (and a commit waits for fsync), so they never run on an event loop or the cooperative pool.
    /// Runs a short read on the read-only connection, on the calling thread: a WAL reader never
    /// waits for the writer's fsync and takes microseconds, so the hop to the blocking pool (two
    /// context switches) would cost more than the read.
    func withReader<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        try reader.withLock { connection in
            defer { connection.finishCall() }
            return try body(connection)
        }
    }

    func withConnection<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive {
            try self.database.withLock { connection in
                defer { connection.finishCall() }
                return try body(connection)
            }
        }
    }

    // MARK: Migrations

    public func migrate() async throws -> [Int] {
        try await withConnection { connection in
            try connection.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            var applied: [Int] = []
            for migration in SQLiteMigrations.all {
                // PRAGMA foreign_keys is a no-op inside a transaction (sqlite.org/lang_altertable.html).
                if migration.rebuildsTables { try connection.db.execute("PRAGMA foreign_keys = OFF") }
                defer { if migration.rebuildsTables { try? connection.db.execute("PRAGMA foreign_keys = ON") } }
                let done = try connection.db.transaction { () -> Bool in
                    let check = try connection.statement("SELECT 1 FROM schema_migrations WHERE version = ?")
                    check.bind(1, Int64(migration.version))
                    if try check.step() { return false }
                    try connection.db.execute(migration.sql)
                    if migration.rebuildsTables {
                        let violations = try connection.statement("PRAGMA foreign_key_check")
                        if try violations.step() {
                            throw RegistryError(.storage, "migration \(migration.version) would break a foreign key")
                        }
                    }
                    let record = try connection.statement("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                    record.bind(1, Int64(migration.version))
                    record.bind(2, Int64(Date().timeIntervalSince1970 * 1000))
                    try record.step()
                    return true
                }
                if done { applied.append(migration.version) }
            }
            return applied
        }
    }

    // MARK: Devices

    private static let deviceColumns = "id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at"
    /// Built once: the statement cache is keyed by the SQL text.
    private static let selectDeviceByID = "SELECT \(deviceColumns) FROM devices WHERE id = ?"

    public func device(_ id: DeviceID) async throws -> Device? {
        try await withReader { connection in try Self.readDevice(id, connection) }
    }

    static func readDevice(_ id: DeviceID, _ connection: Connection) throws -> Device? {
        let statement = try connection.statement(selectDeviceByID)
        statement.bind(1, id.rawValue)
        guard try statement.step() else { return nil }
        return try decodeDevice(statement)
    }

    public func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device] {
        try await withConnection { connection in
            var conditions: [String] = []
            if filter.state != nil { conditions.append("state = ?1") }
            if filter.owner != nil { conditions.append("owner = ?2") }
            if filter.model != nil { conditions.append("model = ?3") }
            if cursor != nil { conditions.append("id > ?4") }
            let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let statement = try connection.statement("SELECT \(Self.deviceColumns) FROM devices \(whereClause) ORDER BY id LIMIT ?5")
            statement.bind(1, filter.state?.rawValue)
            statement.bind(2, filter.owner)
            statement.bind(3, filter.model)
            statement.bind(4, cursor?.rawValue)
            statement.bind(5, Int64(max(0, min(limit, 10_000))))
            var devices: [Device] = []
            while try statement.step() { devices.append(try Self.decodeDevice(statement)) }
            return devices
        }
    }

    public func deviceCounts() async throws -> [DeviceState: Int] {
        try await withConnection { connection in
            let statement = try connection.statement("SELECT state, COUNT(*) FROM devices GROUP BY state")
            var counts: [DeviceState: Int] = [:]
            while try statement.step() {
                if let state = statement.text(0).flatMap(DeviceState.init(rawValue:)) { counts[state] = Int(statement.int64(1)) }
            }
            return counts
        }
    }

    public func insert(_ device: Device, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                let statement = try Self.insertStatement(connection, orIgnore: false)
                Self.bind(device, to: statement)
                do {
                    try statement.step()
                } catch let error as RegistryError where error.code == .duplicate {
                    throw RegistryError(.duplicate, "device \(device.id) is already registered")
                }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "device.create", subject: "device:\(device.id)",
                    before: nil, after: RegistryEncoding.auditJSON(device)
                )
            }
        }
    }

    public func importBatch(
        _ devices: [Device], source: String, lines: ClosedRange<Int>, by actor: Actor, at time: Date
    ) async throws -> ImportBatchResult {
        try await withConnection { connection in
            try connection.db.transaction {
                let statement = try Self.insertStatement(connection, orIgnore: true)
                var inserted = 0
                for device in devices {
                    Self.bind(device, to: statement)
                    try statement.step()
                    inserted += connection.db.changes
                    statement.reset()
                }
                let result = ImportBatchResult(inserted: inserted, duplicates: devices.count - inserted)
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "devices.import", subject: "allow-list:\(source)",
                    before: nil,
                    after:
                        "{\"lines\":\"\(lines.lowerBound)-\(lines.upperBound)\",\"inserted\":\(result.inserted),\"duplicates\":\(result.duplicates)}"
                )
                return result
            }
        }
    }

    public func apply(_ event: LifecycleStateMachine.Event, to id: DeviceID, by actor: Actor, at time: Date) async throws -> Device {
        try await withConnection { connection in
            try connection.db.transaction {
                guard var device = try Self.readDevice(id, connection) else {
                    throw RegistryError(.notFound, "no device \(id)")
                }
                let before = RegistryEncoding.auditJSON(device)
                var stateBeforeTheft: DeviceState?
                if event == .recover {
                    let read = try connection.statement("SELECT stolen_from FROM devices WHERE id = ?")
                    read.bind(1, id.rawValue)
                    if try read.step() { stateBeforeTheft = read.text(0).flatMap(DeviceState.init(rawValue:)) }
                }
                let previous = device.state
                device.state = try LifecycleStateMachine.next(
                    from: device.state, on: event, by: actor, deviceOwner: device.owner, stateBeforeTheft: stateBeforeTheft)
                device.updatedAt = time
                let update = try connection.statement("UPDATE devices SET state = ?, updated_at = ?, stolen_from = ? WHERE id = ?")
                update.bind(1, device.state.rawValue)
                update.bind(2, RegistryEncoding.milliseconds(time))
                update.bind(3, event == .reportStolen ? previous.rawValue : nil)
                update.bind(4, id.rawValue)
                try update.step()
                if let reason = RegistryEncoding.revocationReason(for: event) {
                    let revoke = try connection.statement(
                        "INSERT INTO revocations (serial, reason, revoked_at) SELECT serial, ?, ? FROM certificates WHERE device_id = ? ON CONFLICT (serial) DO NOTHING"
                    )
                    revoke.bind(1, reason)
                    revoke.bind(2, RegistryEncoding.milliseconds(time))
                    revoke.bind(3, id.rawValue)
                    try revoke.step()
                }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "device.\(event)", subject: "device:\(id)",
                    before: before, after: RegistryEncoding.auditJSON(device)
                )
                return device
            }
        }
    }

    // MARK: Tokens

    public func insert(_ token: APITokenRecord, by actor: Actor, at time: Date) async throws {
        try await withConnection { connection in
            try connection.db.transaction {
                let statement = try connection.statement(
                    "INSERT INTO api_tokens (id, secret_hmac, role, owner, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
                )
                statement.bind(1, token.id)
                statement.bind(2, token.secretHMAC)
                statement.bind(3, token.role.rawValue)
                statement.bind(4, token.owner)
                statement.bind(5, RegistryEncoding.milliseconds(token.createdAt))
                statement.bind(6, token.expiresAt.map(RegistryEncoding.milliseconds))
                try statement.step()
                if let owner = token.owner, try Self.insertOwner(try Owner(id: owner, createdAt: time), connection) {
                    try Self.appendAudit(
                        connection, time: time, actor: actor, action: "owner.create", subject: "owner:\(owner)", before: nil,
                        after: RegistryEncoding.ownerJSON(try Owner(id: owner, createdAt: time))
                    )
                }
                try Self.appendAudit(
                    connection, time: time, actor: actor, action: "token.create", subject: "token:\(token.id)",
                    before: nil, after: RegistryEncoding.tokenJSON(token)
                )
            }
        }
    }

    public func apiToken(id: String) async throws -> APITokenRecord? {
        try await withReader { connection in
            let statement = try connection.statement(
                "SELECT id, secret_hmac, role, owner, created_at, expires_at FROM api_tokens WHERE id = ? AND revoked_at IS NULL"
            )
            statement.bind(1, id)
            guard try statement.step() else { return nil }
            guard let role = statement.text(2).flatMap(Role.init(rawValue:)), let hmac = statement.blob(1), let tokenID = statement.text(0)
            else {
                throw RegistryError(.storage, "api token \(id) has a malformed row")
            }
            return APITokenRecord(
                id: tokenID, secretHMAC: hmac, role: role, owner: statement.text(3),
                createdAt: RegistryEncoding.date(statement.int64(4)),
                expiresAt: statement.isNull(5) ? nil : RegistryEncoding.date(statement.int64(5))
            )
        }
    }

    // MARK: Audit

    public func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject] {
        try await withReader { connection in
            let statement = try connection.statement("SELECT sequence, subject FROM audit_log WHERE sequence > ? ORDER BY sequence LIMIT ?")
            statement.bind(1, sequence)
            statement.bind(2, Int64(limit))
            var subjects: [AuditSubject] = []
            while try statement.step() { subjects.append(AuditSubject(sequence: statement.int64(0), subject: statement.text(1) ?? "")) }
            return subjects
        }
    }

    public func auditHead() async throws -> Int64 {
        try await withReader { connection in
            let statement = try connection.statement("SELECT COALESCE(MAX(sequence), 0) FROM audit_log")
            return try statement.step() ? statement.int64(0) : 0
        }
    }

    public func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry] {
        try await withConnection { connection in
            let statement = try connection.statement(
                "SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash FROM audit_log WHERE sequence >= ? ORDER BY sequence LIMIT ?"
            )
            statement.bind(1, sequence)
            statement.bind(2, Int64(limit))
            var entries: [AuditEntry] = []
            while try statement.step() {
                entries.append(
                    AuditEntry(
                        sequence: statement.int64(0), timeMilliseconds: statement.int64(1), actor: statement.text(2) ?? "",
                        action: statement.text(3) ?? "", subject: statement.text(4) ?? "", before: statement.text(5),
                        after: statement.text(6), previousHash: statement.blob(7) ?? [], hash: statement.blob(8) ?? []
                    )
                )
            }
            return entries
        }
    }

    /// The last audit entry as a writer knows it inside its own transaction: `last` is nil for an
    /// empty log.
    struct AuditTail {
        var last: (sequence: Int64, hash: [UInt8])?
    }

    /// Appends an audit entry inside the caller's transaction, chained to the current last one.
    /// - Parameter tail: the last entry, when the caller knows it (it wrote it in this same
    ///   transaction); nil reads it. Updated to the entry appended.
    static func appendAudit(
        _ connection: Connection, time: Date, actor: Actor, action: String, subject: String, before: String?, after: String?,
        tail: inout AuditTail?
    ) throws {
        var previous: (sequence: Int64, hash: [UInt8])?
        if let tail {
            previous = tail.last
        } else {
            let last = try connection.statement("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1")
            if try last.step() { previous = (last.int64(0), last.blob(1) ?? []) }
            last.reset()
        }
        let entry = AuditEntry(
            following: previous, time: time, actor: actor.description, action: action, subject: subject, before: before, after: after
        )
        let insert = try connection.statement(
            "INSERT INTO audit_log (sequence, time_ms, actor, action, subject, before, after, previous_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        insert.bind(1, entry.sequence)
        insert.bind(2, entry.timeMilliseconds)
        insert.bind(3, entry.actor)
        insert.bind(4, entry.action)
        insert.bind(5, entry.subject)
        insert.bind(6, entry.before)
        insert.bind(7, entry.after)
        insert.bind(8, entry.previousHash)
        insert.bind(9, entry.hash)
        try insert.step()
        tail = AuditTail(last: (entry.sequence, entry.hash))
    }

    /// ``appendAudit(_:time:actor:action:subject:before:after:tail:)`` reading the last entry.
    static func appendAudit(
        _ connection: Connection, time: Date, actor: Actor, action: String, subject: String, before: String?, after: String?
    ) throws {
        var tail: AuditTail?
        try appendAudit(connection, time: time, actor: actor, action: action, subject: subject, before: before, after: after, tail: &tail)
    }

    // MARK: Encoding

    static func insertStatement(_ connection: Connection, orIgnore: Bool) throws -> SQLiteStatement {
        try connection.statement(
            "INSERT INTO devices (\(deviceColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)\(orIgnore ? " ON CONFLICT (id) DO NOTHING" : "")"
        )
    }

    static func bind(_ device: Device, to statement: SQLiteStatement) {
        statement.bind(1, device.id.rawValue)
        statement.bind(2, device.state.rawValue)
        statement.bind(3, device.owner)
        statement.bind(4, device.model)
        statement.bind(5, RegistryEncoding.metadataJSON(device.metadata))
        statement.bind(6, device.proof.kind)
        switch device.proof {
        case .secret(let hmac): statement.bind(7, hmac)
        case .publicKey(let sha256): statement.bind(7, sha256)
        case .none: statement.bind(7, nil as [UInt8]?)
        }
        statement.bind(8, RegistryEncoding.milliseconds(device.createdAt))
        statement.bind(9, RegistryEncoding.milliseconds(device.updatedAt))
    }

    static func decodeDevice(_ statement: SQLiteStatement) throws -> Device {
        guard let idText = statement.text(0), let id = try? DeviceID(idText),
            let state = statement.text(1).flatMap(DeviceState.init(rawValue:)), let model = statement.text(3)
        else {
            throw RegistryError(.storage, "a device row is malformed")
        }
        let proof: EnrollmentProof
        switch statement.text(5) {
        case "secret": proof = .secret(hmac: statement.blob(6) ?? [])
        case "public-key": proof = .publicKey(sha256: statement.blob(6) ?? [])
        default: proof = .none
        }
        let metadata = RegistryEncoding.metadata(fromJSON: statement.text(4) ?? "{}")
        return Device(
            id: id, state: state, owner: statement.text(2), model: model, metadata: metadata, proof: proof,
            createdAt: RegistryEncoding.date(statement.int64(7)), updatedAt: RegistryEncoding.date(statement.int64(8))
        )
    }

}
