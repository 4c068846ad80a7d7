public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import Synchronization

/// The embedded registry: one SQLite file (WAL mode, full fsync on commit) inside the data directory.
///
/// Writes and longer reads run on one connection, one at a time, on a thread of their own
/// (``WriterThread``); single-row reads on hot paths use a second, read-only connection on the
/// calling thread. Several processes may open the same file (the console and a running server):
/// SQLite's own locking orders their writes.
public final class SQLiteRegistryStore: RegistryStore {
    /// The connection that writes, and reads lists, guarded by ``writeLock``.
    private let writer: Connection
    private let writeLock = AsyncLock()
    private let writerThread: WriterThread
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
        writer = Connection(db: db)
        let readDB = try SQLiteDatabase(path: path)
        try readDB.execute("PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;")
        reader = Mutex(Connection(db: readDB))
        writerThread = WriterThread(name: "fleetward-sqlite")
    }

    deinit {
        writerThread.stop()
    }

    /// Runs a short read on the read-only connection, on the calling thread: a WAL reader never
    /// waits for the writer's fsync and takes microseconds, so a hop to another thread (two
    /// context switches) would cost more than the read.
    func withReader<T: Sendable>(_ body: (Connection) throws -> T) throws -> T {
        try reader.withLock { connection in
            defer { connection.finishCall() }
            return try body(connection)
        }
    }

    /// Runs `body` with the writing connection, on the writer thread, alone.
    func withWriter<T: Sendable>(_ body: (Connection) async throws -> T) async throws -> T {
        try await withTaskExecutorPreference(writerThread) {
            await writeLock.lock()
            defer { writeLock.unlock() }
            defer { writer.finishCall() }
            return try await body(writer)
        }
    }

    public func transaction<T: Sendable>(audited: Bool, _ body: (any RegistryTransaction) async throws -> T) async throws -> T {
        // BEGIN IMMEDIATE takes the write lock up front, so two processes never deadlock
        // upgrading a read lock; every transaction here writes.
        try await withWriter { connection in
            try connection.db.execute("BEGIN IMMEDIATE")
            do {
                let result = try await body(SQLiteTransaction(connection: connection))
                try connection.db.execute("COMMIT")
                return result
            } catch {
                try? connection.db.execute("ROLLBACK")
                throw error
            }
        }
    }

    // MARK: Migrations

    public func migrate() async throws -> [Int] {
        try await withWriter { connection in
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

    // MARK: Reads

    public func device(_ id: DeviceID) async throws -> Device? {
        try withReader { try Rows.device(id, $0) }
    }

    public func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device] {
        try await withWriter { connection in
            var conditions: [String] = []
            if filter.state != nil { conditions.append("state = ?1") }
            if filter.owner != nil { conditions.append("owner = ?2") }
            if filter.model != nil { conditions.append("model = ?3") }
            if cursor != nil { conditions.append("id > ?4") }
            let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let statement = try connection.statement("SELECT \(Rows.deviceColumns) FROM devices \(whereClause) ORDER BY id LIMIT ?5")
            statement.bind(1, filter.state?.rawValue)
            statement.bind(2, filter.owner)
            statement.bind(3, filter.model)
            statement.bind(4, cursor?.rawValue)
            statement.bind(5, Int64(max(0, min(limit, 10_000))))
            var devices: [Device] = []
            while try statement.step() { devices.append(try Rows.decodeDevice(statement)) }
            return devices
        }
    }

    public func deviceCounts() async throws -> [DeviceState: Int] {
        try await withWriter { connection in
            let statement = try connection.statement("SELECT state, COUNT(*) FROM devices GROUP BY state")
            var counts: [DeviceState: Int] = [:]
            while try statement.step() {
                if let state = statement.text(0).flatMap(DeviceState.init(rawValue:)) { counts[state] = Int(statement.int64(1)) }
            }
            return counts
        }
    }

    public func expiringCertificateCounts(from: Date, until: Date) async throws -> [String: Int] {
        try withReader { connection in
            let statement = try connection.statement(
                """
                SELECT profile, COUNT(*) FROM certificates c WHERE not_after >= ? AND not_after < ?
                AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial) GROUP BY profile
                """)
            statement.bind(1, RegistryEncoding.milliseconds(from))
            statement.bind(2, RegistryEncoding.milliseconds(until))
            var counts: [String: Int] = [:]
            while try statement.step() { counts[statement.text(0) ?? ""] = Int(statement.int64(1)) }
            return counts
        }
    }

    public func apiToken(id: String) async throws -> APITokenRecord? {
        try withReader { connection in
            let statement = try connection.statement("SELECT \(Rows.tokenColumns) FROM api_tokens WHERE id = ? AND revoked_at IS NULL")
            statement.bind(1, id)
            return try statement.step() ? try Rows.decodeToken(statement) : nil
        }
    }

    public func apiTokens() async throws -> [APITokenRecord] {
        try await withWriter { connection in
            let statement = try connection.statement("SELECT \(Rows.tokenColumns) FROM api_tokens WHERE revoked_at IS NULL ORDER BY id")
            var tokens: [APITokenRecord] = []
            while try statement.step() { tokens.append(try Rows.decodeToken(statement)) }
            return tokens
        }
    }

    public func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject] {
        try withReader { connection in
            let statement = try connection.statement(
                "SELECT sequence, subject, time_ms FROM audit_log WHERE sequence > ? ORDER BY sequence LIMIT ?")
            statement.bind(1, sequence)
            statement.bind(2, Int64(limit))
            var subjects: [AuditSubject] = []
            while try statement.step() {
                subjects.append(
                    AuditSubject(sequence: statement.int64(0), subject: statement.text(1) ?? "", time: RegistryEncoding.date(statement.int64(2))))
            }
            return subjects
        }
    }

    public func auditHead() async throws -> Int64 {
        try withReader { connection in
            let statement = try connection.statement("SELECT COALESCE(MAX(sequence), 0) FROM audit_log")
            return try statement.step() ? statement.int64(0) : 0
        }
    }

    public func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry] {
        try await withWriter { connection in
            let statement = try connection.statement(
                "SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac FROM audit_log WHERE sequence >= ? ORDER BY sequence LIMIT ?"
            )
            statement.bind(1, sequence)
            statement.bind(2, Int64(limit))
            return try Self.auditEntries(statement)
        }
    }

    /// The rows of `SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac`.
    private static func auditEntries(_ statement: SQLiteStatement) throws -> [AuditEntry] {
        var entries: [AuditEntry] = []
        while try statement.step() {
            entries.append(
                AuditEntry(
                    sequence: statement.int64(0), timeMilliseconds: statement.int64(1), actor: statement.text(2) ?? "",
                    action: statement.text(3) ?? "", subject: statement.text(4) ?? "", before: statement.text(5),
                    after: statement.text(6), previousHash: statement.blob(7) ?? [], hash: statement.blob(8) ?? [],
                    mac: statement.blob(9)
                )
            )
        }
        return entries
    }

    public func auditEntries(subjects: [String], limit: Int) async throws -> [AuditEntry] {
        guard !subjects.isEmpty else { return [] }
        return try await withWriter { connection in
            let statement = try connection.statement(
                "SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac FROM audit_log WHERE subject IN ("
                    + Array(repeating: "?", count: subjects.count).joined(separator: ", ") + ") ORDER BY sequence DESC LIMIT ?"
            )
            for (index, subject) in subjects.enumerated() { statement.bind(Int32(index + 1), subject) }
            statement.bind(Int32(subjects.count + 1), Int64(limit))
            return try Self.auditEntries(statement)
        }
    }

    public func certificate(serial: String) async throws -> CertificateRecord? {
        try withReader { try Rows.certificate(serial: serial, $0) }
    }

    public func certificates(for id: DeviceID) async throws -> [CertificateRecord] {
        try await withWriter { try Rows.certificates(for: id, $0) }
    }

    public func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        try revocationEntries(
            """
            SELECT r.serial, r.revoked_at, r.reason FROM revocations r JOIN certificates c ON c.serial = r.serial
            WHERE c.profile IN (%@) ORDER BY r.serial
            """, profiles: profiles)
    }

    public func heldCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        try revocationEntries(
            """
            SELECT c.serial, d.updated_at, \(RevocationReason.certificateHold.rawValue) FROM devices d
            JOIN certificates c ON c.device_id = d.id LEFT JOIN revocations r ON r.serial = c.serial
            WHERE d.state = 'suspended' AND r.serial IS NULL AND c.profile IN (%@) ORDER BY c.serial
            """, profiles: profiles)
    }

    /// Rows of (serial, time, reason) for certificates of these profiles; `%@` in `sql` stands
    /// for the list of profile placeholders.
    private func revocationEntries(_ sql: String, profiles: [String]) throws -> [RevokedEntry] {
        try withReader { connection in
            let placeholders = Array(repeating: "?", count: max(1, profiles.count)).joined(separator: ", ")
            let statement = try connection.statement(sql.replacingOccurrences(of: "%@", with: placeholders))
            for (index, profile) in profiles.enumerated() { statement.bind(Int32(index + 1), profile) }
            if profiles.isEmpty { statement.bind(1, "") }
            var entries: [RevokedEntry] = []
            while try statement.step() {
                entries.append(
                    RevokedEntry(
                        serialHex: statement.text(0) ?? "", revocationDate: RegistryEncoding.date(statement.int64(1)),
                        reasonCode: Int(statement.int64(2))))
            }
            return entries
        }
    }

    public func revocationCount() async throws -> Int {
        try withReader { connection in
            let statement = try connection.statement("SELECT count(*) FROM revocations")
            return try statement.step() ? Int(statement.int64(0)) : 0
        }
    }

    public func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord] {
        try withReader { connection in
            let statement = try connection.statement(
                "SELECT sequence, received_at, body FROM telemetry WHERE device_id = ? ORDER BY sequence DESC LIMIT ?")
            statement.bind(1, device.rawValue)
            statement.bind(2, Int64(limit))
            var records: [TelemetryRecord] = []
            while try statement.step() {
                records.append(
                    TelemetryRecord(
                        sequence: statement.int64(0), device: device.rawValue, receivedAt: RegistryEncoding.date(statement.int64(1)),
                        body: statement.text(2) ?? ""))
            }
            return records
        }
    }

    public func updateCounts(version: String) async throws -> [UpdateState: Int] {
        try withReader { connection in
            let statement = try connection.statement("SELECT state, count(*) FROM update_status WHERE version = ? GROUP BY state")
            statement.bind(1, version)
            var counts: [UpdateState: Int] = [:]
            while try statement.step() {
                if let state = statement.text(0).flatMap(UpdateState.init(rawValue:)) { counts[state] = Int(statement.int64(1)) }
            }
            return counts
        }
    }

    public func owner(_ id: String) async throws -> Owner? {
        try withReader { try Rows.owner(id, $0) }
    }

    public func owners(after cursor: String?, limit: Int) async throws -> [Owner] {
        try await withWriter { connection in
            let statement = try connection.statement(
                "SELECT id, name, created_at FROM owners WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2")
            statement.bind(1, cursor)
            statement.bind(2, Int64(max(0, min(limit, 10_000))))
            var owners: [Owner] = []
            while try statement.step() { owners.append(try Rows.decodeOwner(statement)) }
            return owners
        }
    }

    public func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? {
        try withReader { try Rows.claimCode(for: id, $0) }
    }

    public func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord? {
        try withReader { try Rows.enrollmentToken(secretHMAC: secretHMAC, $0) }
    }

    public func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? {
        try withReader { try Rows.enrollmentGroup(id, $0) }
    }

    public func securityEvents(after sequence: Int64, limit: Int) async throws -> [SecurityEvent] {
        try await withWriter { connection in
            let statement = try connection.statement(
                "SELECT sequence, time_ms, kind, device_id, serial, address, detail FROM security_events WHERE sequence > ? ORDER BY sequence LIMIT ?")
            statement.bind(1, sequence)
            statement.bind(2, Int64(max(0, min(limit, 10_000))))
            var events: [SecurityEvent] = []
            while try statement.step() {
                events.append(
                    SecurityEvent(
                        sequence: statement.int64(0), time: RegistryEncoding.date(statement.int64(1)), kind: statement.text(2) ?? "",
                        device: statement.text(3), serial: statement.text(4), address: statement.text(5), detail: statement.text(6) ?? ""))
            }
            return events
        }
    }

    public func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord? {
        try withReader { try Rows.mqttPolicy(scope, $0) }
    }

    public func mqttPolicies() async throws -> [MQTTPolicyRecord] {
        try withReader { connection in
            let statement = try connection.statement("SELECT scope, document, updated_at FROM mqtt_policies ORDER BY scope")
            var records: [MQTTPolicyRecord] = []
            while try statement.step() { records.append(try Rows.decodeMQTTPolicy(statement)) }
            return records
        }
    }

    public func enrollmentGroups() async throws -> [EnrollmentGroup] {
        try withReader { connection in
            let statement = try connection.statement("SELECT \(Rows.groupColumns) FROM enrollment_groups ORDER BY name")
            var groups: [EnrollmentGroup] = []
            while try statement.step() { groups.append(try Rows.decodeGroup(statement)) }
            return groups
        }
    }
}
