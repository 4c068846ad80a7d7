public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
public import Logging
import NIOCore
import PostgresNIO

/// The registry on PostgreSQL, for several `fleetward serve` nodes sharing one database.
///
/// Rows only, like the SQLite store. An audited transaction takes a transaction-scoped advisory
/// lock first, so the audit hash chain is extended by one transaction at a time whatever the
/// number of nodes. Allow-list batches go in with COPY into a temporary table and one
/// `INSERT … ON CONFLICT DO NOTHING`.
public final class PostgresRegistryStore: RegistryStore {
    let client: PostgresClient
    private let runner: Task<Void, Never>
    let logger: Logger

    /// The advisory lock key that serialises audited writes (any constant; "FLWD").
    static let auditLockKey: Int64 = 0x464C_5744

    /// Connects to `url` (`postgres://user:password@host:port/database`, optional `?sslmode=disable`;
    /// TLS is not supported yet, so only loopback or a trusted network).
    ///
    /// - Throws: ``RegistryError`` `invalidInput` for a malformed URL.
    public init(url: String, logger: Logger = Logger(label: "fleetward.registry.postgres")) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty, let user = components.user
        else {
            throw RegistryError(.invalidInput, "the database URL must look like postgres://user:password@host:port/database")
        }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        var configuration = PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: user, password: components.password,
            database: database.isEmpty ? user : database, tls: .disable
        )
        configuration.options.maximumConnections = 8
        self.logger = logger
        // The pool's own background log: errors only. Its one warning in practice is a harmless
        // race between the first query and `run()` starting, which would break one-line CLI errors.
        var backgroundLogger = logger
        backgroundLogger.logLevel = .error
        client = PostgresClient(configuration: configuration, backgroundLogger: backgroundLogger)
        let client = self.client
        runner = Task { await client.run() }
    }

    deinit {
        runner.cancel()
    }

    /// Closes every connection.
    public func shutdown() {
        runner.cancel()
    }

    public func transaction<T: Sendable>(audited: Bool, _ body: (any RegistryTransaction) async throws -> T) async throws -> T {
        let logger = logger
        do {
            return try await client.withTransaction(logger: logger) { connection in
                if audited {
                    try await connection.query("SELECT pg_advisory_xact_lock(\(Self.auditLockKey))", logger: logger)
                }
                return try await body(PostgresTransaction(connection: connection, logger: logger, audited: audited))
            }
        } catch let error as PostgresTransactionError {
            // What the body threw goes out as it is; the driver's failures as registry errors.
            if let thrown = error.closureError, !(thrown is PSQLError) { throw thrown }
            throw Self.mapped(error.closureError ?? error.commitError ?? error.beginError ?? error)
        } catch {
            throw Self.mapped(error)
        }
    }

    /// A driver error as a ``RegistryError``: constraint violations are bad input or duplicates,
    /// anything else is a storage failure.
    static func mapped(_ error: any Error) -> RegistryError {
        if let registry = error as? RegistryError { return registry }
        if let psql = error as? PSQLError, let code = psql.serverInfo?[.sqlState] {
            if code == "23505" { return RegistryError(.duplicate, "the registry refused a duplicate row", underlying: error) }
            if code.hasPrefix("23") {
                return RegistryError(.invalidInput, "the registry refused a row: \(psql.serverInfo?[.message] ?? code)", underlying: error)
            }
            return RegistryError(.storage, "the registry database failed: \(psql.serverInfo?[.message] ?? code)", underlying: error)
        }
        return RegistryError(.storage, "the registry database failed: \(String(reflecting: error).prefix(200))", underlying: error)
    }

    /// Runs a read outside any transaction, mapping driver errors.
    func read<T: Sendable>(_ body: (Rows.Query) async throws -> T) async throws -> T {
        let client = client
        let logger = logger
        do {
            return try await body { try await client.query($0, logger: logger) }
        } catch {
            throw Self.mapped(error)
        }
    }

    // MARK: Migrations

    public func migrate() async throws -> [Int] {
        let logger = logger
        do {
            return try await client.withTransaction(logger: logger) { connection in
                try await Self.migrate(connection, logger)
            }
        } catch let error as PostgresTransactionError {
            throw Self.mapped(error.closureError ?? error.commitError ?? error.beginError ?? error)
        } catch {
            throw Self.mapped(error)
        }
    }

    private static func migrate(_ connection: PostgresConnection, _ logger: Logger) async throws -> [Int] {
        // One migrator at a time across nodes.
        try await connection.query("SELECT pg_advisory_xact_lock(\(Self.auditLockKey + 1))", logger: logger)
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)", logger: logger
        )
        var applied: [Int] = []
        for migration in PostgresMigrations.all {
            let rows = try await connection.query(
                "SELECT 1 FROM schema_migrations WHERE version = \(migration.version)", logger: logger)
            var exists = false
            for try await _ in rows { exists = true }
            if exists { continue }
            for statement in migration.statements {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            let now = RegistryEncoding.milliseconds(Date())
            try await connection.query(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (\(migration.version), \(now))", logger: logger)
            applied.append(migration.version)
        }
        return applied
    }

    // MARK: Reads

    public func device(_ id: DeviceID) async throws -> Device? {
        try await read { try await Rows.device(id, lock: false, $0) }
    }

    public func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device] {
        try await read { query in
            let state = filter.state?.rawValue
            let rows = try await query(
                """
                SELECT \(unescaped: Rows.deviceColumns) FROM devices
                WHERE (\(state)::text IS NULL OR state = \(state))
                  AND (\(filter.owner)::text IS NULL OR owner = \(filter.owner))
                  AND (\(filter.model)::text IS NULL OR model = \(filter.model))
                  AND (\(cursor?.rawValue)::text IS NULL OR id > \(cursor?.rawValue))
                ORDER BY id LIMIT \(max(0, min(limit, 10_000)))
                """)
            var devices: [Device] = []
            for try await row in rows.decode(Rows.DeviceRow.self) { devices.append(try Rows.device(row)) }
            return devices
        }
    }

    public func deviceCounts() async throws -> [DeviceState: Int] {
        try await read { query in
            var counts: [DeviceState: Int] = [:]
            for try await (state, count) in try await query("SELECT state, count(*) FROM devices GROUP BY state").decode((String, Int64).self) {
                if let state = DeviceState(rawValue: state) { counts[state] = Int(count) }
            }
            return counts
        }
    }

    public func expiringCertificateCounts(from: Date, until: Date) async throws -> [String: Int] {
        try await read { query in
            let start = RegistryEncoding.milliseconds(from)
            let end = RegistryEncoding.milliseconds(until)
            let rows = try await query(
                """
                SELECT profile, count(*) FROM certificates c WHERE not_after >= \(start) AND not_after < \(end)
                AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial) GROUP BY profile
                """)
            var counts: [String: Int] = [:]
            for try await (profile, count) in rows.decode((String, Int64).self) { counts[profile] = Int(count) }
            return counts
        }
    }

    public func apiToken(id: String) async throws -> APITokenRecord? {
        try await read { query in
            let rows = try await query(
                "SELECT \(unescaped: Rows.tokenColumns) FROM api_tokens WHERE id = \(id) AND revoked_at IS NULL")
            for try await row in rows.decode(Rows.TokenRow.self) { return try Rows.token(row) }
            return nil
        }
    }

    public func apiTokens() async throws -> [APITokenRecord] {
        try await read { query in
            let rows = try await query("SELECT \(unescaped: Rows.tokenColumns) FROM api_tokens WHERE revoked_at IS NULL ORDER BY id")
            var tokens: [APITokenRecord] = []
            for try await row in rows.decode(Rows.TokenRow.self) { tokens.append(try Rows.token(row)) }
            return tokens
        }
    }

    public func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject] {
        try await read { query in
            let rows = try await query(
                "SELECT sequence, subject, time_ms FROM audit_log WHERE sequence > \(sequence) ORDER BY sequence LIMIT \(limit)")
            var subjects: [AuditSubject] = []
            for try await (sequence, subject, time) in rows.decode((Int64, String, Int64).self) {
                subjects.append(AuditSubject(sequence: sequence, subject: subject, time: RegistryEncoding.date(time)))
            }
            return subjects
        }
    }

    public func auditHead() async throws -> Int64 {
        try await read { query in
            for try await head in try await query("SELECT COALESCE(MAX(sequence), 0)::BIGINT FROM audit_log").decode(Int64.self) {
                return head
            }
            return 0
        }
    }

    /// The notification channel the audit log's trigger (migration 8) notifies on commit.
    static let auditChannel = "fleetward_audit"

    /// Listens on ``auditChannel`` on a connection of its own (re-established after a second
    /// when it fails) and yields once per notification and once after each (re)connection.
    public func auditAppends() -> AsyncStream<Void>? {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let client = client
        let logger = logger
        let listener = Task {
            while !Task.isCancelled {
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: Self.auditChannel) { notifications in
                            continuation.yield()
                            for try await _ in notifications { continuation.yield() }
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.warning(
                        "lost the audit notification channel; listening again in a second",
                        metadata: ["error": "\(String(reflecting: error))"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in listener.cancel() }
        return stream
    }

    public func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry] {
        try await read { query in
            let rows = try await query(
                """
                SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac FROM audit_log
                WHERE sequence >= \(sequence) ORDER BY sequence LIMIT \(limit)
                """)
            return try await Self.auditEntries(rows)
        }
    }

    /// The rows of `SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac`.
    private static func auditEntries(_ rows: PostgresRowSequence) async throws -> [AuditEntry] {
        var entries: [AuditEntry] = []
        for try await row in rows.decode(
            (Int64, Int64, String, String, String, String?, String?, ByteBuffer, ByteBuffer, ByteBuffer?).self)
        {
            entries.append(
                AuditEntry(
                    sequence: row.0, timeMilliseconds: row.1, actor: row.2, action: row.3, subject: row.4, before: row.5,
                    after: row.6, previousHash: Array(row.7.readableBytesView), hash: Array(row.8.readableBytesView),
                    mac: row.9.map { Array($0.readableBytesView) }))
        }
        return entries
    }

    public func auditEntries(subjects: [String], limit: Int) async throws -> [AuditEntry] {
        guard !subjects.isEmpty else { return [] }
        return try await read { query in
            let rows = try await query(
                """
                SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash, mac FROM audit_log
                WHERE subject = ANY(\(subjects)) ORDER BY sequence DESC LIMIT \(limit)
                """)
            return try await Self.auditEntries(rows)
        }
    }

    public func certificate(serial: String) async throws -> CertificateRecord? {
        try await read { try await Rows.certificates(where: "c.serial = \(serial)", $0).first }
    }

    public func certificates(for id: DeviceID) async throws -> [CertificateRecord] {
        try await read { try await Rows.certificates(where: "c.device_id = \(id.rawValue)", $0) }
    }

    public func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        try await read { query in
            let rows = try await query(
                """
                SELECT r.serial, r.reason, r.revoked_at FROM revocations r JOIN certificates c ON c.serial = r.serial
                WHERE c.profile = ANY(\(profiles)) ORDER BY r.serial
                """)
            var entries: [RevokedEntry] = []
            for try await (serial, reason, time) in rows.decode((String, Int32, Int64).self) {
                entries.append(RevokedEntry(serialHex: serial, revocationDate: RegistryEncoding.date(time), reasonCode: Int(reason)))
            }
            return entries
        }
    }

    public func heldCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        try await read { query in
            let rows = try await query(
                """
                SELECT c.serial, d.updated_at FROM devices d JOIN certificates c ON c.device_id = d.id
                LEFT JOIN revocations r ON r.serial = c.serial
                WHERE d.state = 'suspended' AND r.serial IS NULL AND c.profile = ANY(\(profiles)) ORDER BY c.serial
                """)
            var entries: [RevokedEntry] = []
            for try await (serial, time) in rows.decode((String, Int64).self) {
                entries.append(
                    RevokedEntry(
                        serialHex: serial, revocationDate: RegistryEncoding.date(time), reasonCode: RevocationReason.certificateHold.rawValue))
            }
            return entries
        }
    }

    public func revocationCount() async throws -> Int {
        try await read { query in
            for try await count in try await query("SELECT count(*)::BIGINT FROM revocations").decode(Int64.self) { return Int(count) }
            return 0
        }
    }

    public func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord] {
        try await read { query in
            let rows = try await query(
                """
                SELECT sequence, received_at, body FROM telemetry WHERE device_id = \(device.rawValue)
                ORDER BY sequence DESC LIMIT \(Int64(limit))
                """)
            var records: [TelemetryRecord] = []
            for try await (sequence, time, body) in rows.decode((Int64, Int64, String).self) {
                records.append(
                    TelemetryRecord(sequence: sequence, device: device.rawValue, receivedAt: RegistryEncoding.date(time), body: body))
            }
            return records
        }
    }

    public func updateCounts(version: String) async throws -> [UpdateState: Int] {
        try await read { query in
            let rows = try await query("SELECT state, count(*)::BIGINT FROM update_status WHERE version = \(version) GROUP BY state")
            var counts: [UpdateState: Int] = [:]
            for try await (state, count) in rows.decode((String, Int64).self) {
                if let state = UpdateState(rawValue: state) { counts[state] = Int(count) }
            }
            return counts
        }
    }

    public func owner(_ id: String) async throws -> Owner? {
        try await read { try await Rows.owner(id, $0) }
    }

    public func owners(after cursor: String?, limit: Int) async throws -> [Owner] {
        try await read { query in
            let rows = try await query(
                """
                SELECT id, name, created_at FROM owners WHERE (\(cursor)::text IS NULL OR id > \(cursor))
                ORDER BY id LIMIT \(max(0, min(limit, 10_000)))
                """)
            var owners: [Owner] = []
            for try await row in rows.decode((String, String?, Int64).self) { owners.append(try Rows.owner(row)) }
            return owners
        }
    }

    public func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? {
        try await read { try await Rows.claimCode(for: id, $0) }
    }

    public func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord? {
        try await read { try await Rows.enrollmentToken(secretHMAC: secretHMAC, $0) }
    }

    public func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? {
        try await read { try await Rows.enrollmentGroups(where: "id = \(id)", $0).first }
    }

    public func securityEvents(after sequence: Int64, limit: Int) async throws -> [SecurityEvent] {
        try await read { query in
            let rows = try await query(
                """
                SELECT sequence, time_ms, kind, device_id, serial, address, detail FROM security_events
                WHERE sequence > \(sequence) ORDER BY sequence LIMIT \(Int64(max(0, min(limit, 10_000))))
                """)
            var events: [SecurityEvent] = []
            for try await row in rows.decode((Int64, Int64, String, String?, String?, String?, String).self) {
                events.append(
                    SecurityEvent(
                        sequence: row.0, time: RegistryEncoding.date(row.1), kind: row.2, device: row.3, serial: row.4, address: row.5,
                        detail: row.6))
            }
            return events
        }
    }

    public func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord? {
        try await read { try await Rows.mqttPolicies(where: "scope = \(scope.description)", $0).first }
    }

    public func mqttPolicies() async throws -> [MQTTPolicyRecord] {
        try await read { try await Rows.mqttPolicies(where: "true", $0) }
    }

    public func enrollmentGroups() async throws -> [EnrollmentGroup] {
        try await read { try await Rows.enrollmentGroups(where: "true", $0) }
    }
}
