public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
public import Logging
import NIOCore
import PostgresNIO

/// The registry on PostgreSQL, for several `fleetward serve` nodes sharing one database.
///
/// Same behaviour as the SQLite store. Writers that append to the audit log take a
/// transaction-scoped advisory lock first, so the hash chain is extended by one transaction at a
/// time whatever the number of nodes. Allow-list batches go in with COPY into a temporary table
/// and one `INSERT … ON CONFLICT DO NOTHING`.
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

    func transaction<T: Sendable>(audited: Bool, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await client.withTransaction(logger: logger) { connection in
                if audited {
                    try await connection.query("SELECT pg_advisory_xact_lock(\(Self.auditLockKey))", logger: logger)
                }
                return try await body(connection)
            }
        } catch let error as PostgresTransactionError {
            if let inner = error.closureError as? RegistryError { throw inner }
            throw Self.mapped(error.closureError ?? error.commitError ?? error.beginError ?? error)
        } catch let error as RegistryError {
            throw error
        } catch {
            throw Self.mapped(error)
        }
    }

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

    // MARK: Migrations

    public func migrate() async throws -> [Int] {
        try await transaction(audited: false) { connection in
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
    }

    // MARK: Devices

    typealias DeviceRow = (String, String, String?, String, String, String, ByteBuffer?, Int64, Int64)

    public func device(_ id: DeviceID) async throws -> Device? {
        do {
            let rows = try await client.query(
                "SELECT id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at FROM devices WHERE id = \(id.rawValue)",
                logger: logger
            )
            for try await row in rows.decode(DeviceRow.self) { return try Self.device(row) }
            return nil
        } catch {
            throw Self.mapped(error)
        }
    }

    static func readDevice(_ id: DeviceID, _ connection: PostgresConnection, _ logger: Logger) async throws -> Device? {
        let rows = try await connection.query(
            "SELECT id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at FROM devices WHERE id = \(id.rawValue) FOR UPDATE",
            logger: logger
        )
        for try await row in rows.decode(DeviceRow.self) { return try device(row) }
        return nil
    }

    public func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device] {
        do {
            let state = filter.state?.rawValue
            let rows = try await client.query(
                """
                SELECT id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at FROM devices
                WHERE (\(state)::text IS NULL OR state = \(state))
                  AND (\(filter.owner)::text IS NULL OR owner = \(filter.owner))
                  AND (\(filter.model)::text IS NULL OR model = \(filter.model))
                  AND (\(cursor?.rawValue)::text IS NULL OR id > \(cursor?.rawValue))
                ORDER BY id LIMIT \(max(0, min(limit, 10_000)))
                """,
                logger: logger
            )
            var devices: [Device] = []
            for try await row in rows.decode(DeviceRow.self) { devices.append(try Self.device(row)) }
            return devices
        } catch {
            throw Self.mapped(error)
        }
    }

    public func deviceCounts() async throws -> [DeviceState: Int] {
        do {
            let rows = try await client.query("SELECT state, count(*) FROM devices GROUP BY state", logger: logger)
            var counts: [DeviceState: Int] = [:]
            for try await (state, count) in rows.decode((String, Int64).self) {
                if let state = DeviceState(rawValue: state) { counts[state] = Int(count) }
            }
            return counts
        } catch {
            throw Self.mapped(error)
        }
    }

    public func insert(_ device: Device, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            let proof = Self.proofBytes(device.proof)
            let rows = try await connection.query(
                """
                INSERT INTO devices (id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at)
                VALUES (\(device.id.rawValue), \(device.state.rawValue), \(device.owner), \(device.model),
                        \(RegistryEncoding.metadataJSON(device.metadata)), \(device.proof.kind), \(proof),
                        \(RegistryEncoding.milliseconds(device.createdAt)), \(RegistryEncoding.milliseconds(device.updatedAt)))
                ON CONFLICT (id) DO NOTHING RETURNING 1
                """,
                logger: logger
            )
            var inserted = false
            for try await _ in rows { inserted = true }
            guard inserted else { throw RegistryError(.duplicate, "device \(device.id) is already registered") }
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "device.create", subject: "device:\(device.id)",
                before: nil, after: RegistryEncoding.auditJSON(device)
            )
        }
    }

    public func importBatch(
        _ devices: [Device], source: String, lines: ClosedRange<Int>, by actor: Actor, at time: Date
    ) async throws -> ImportBatchResult {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            try await connection.query(
                """
                CREATE TEMP TABLE import_staging (
                    id TEXT, state TEXT, owner TEXT, model TEXT, metadata TEXT, proof_kind TEXT, proof BYTEA,
                    created_at BIGINT, updated_at BIGINT
                ) ON COMMIT DROP
                """,
                logger: logger
            )
            try await connection.copyFrom(table: "import_staging", logger: logger) { writer in
                var buffer = ByteBuffer()
                buffer.reserveCapacity(256 * 1024)
                for device in devices {
                    Self.appendCopyRow(device, to: &buffer)
                    if buffer.readableBytes > 240 * 1024 {
                        try await writer.write(buffer)
                        buffer.clear()
                    }
                }
                if buffer.readableBytes > 0 { try await writer.write(buffer) }
            }
            let rows = try await connection.query(
                """
                WITH inserted AS (
                    INSERT INTO devices (id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at)
                    SELECT id, state, owner, model, metadata, proof_kind, proof, created_at, updated_at FROM import_staging
                    ON CONFLICT (id) DO NOTHING RETURNING 1
                ) SELECT count(*) FROM inserted
                """,
                logger: logger
            )
            var inserted = 0
            for try await count in rows.decode(Int64.self) { inserted = Int(count) }
            let result = ImportBatchResult(inserted: inserted, duplicates: devices.count - inserted)
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "devices.import", subject: "allow-list:\(source)",
                before: nil,
                after: RegistryEncoding.importJSON(lines: lines, result)
            )
            return result
        }
    }

    public func apply(_ event: LifecycleStateMachine.Event, to id: DeviceID, by actor: Actor, at time: Date) async throws -> Device {
        let logger = self.logger
        return try await transaction(audited: true) { connection in
            guard var device = try await Self.readDevice(id, connection, logger) else {
                throw RegistryError(.notFound, "no device \(id)")
            }
            let before = RegistryEncoding.auditJSON(device)
            var stateBeforeTheft: DeviceState?
            if event == .recover {
                let rows = try await connection.query("SELECT stolen_from FROM devices WHERE id = \(id.rawValue)", logger: logger)
                for try await value in rows.decode(String?.self) { stateBeforeTheft = value.flatMap(DeviceState.init(rawValue:)) }
            }
            let previous = device.state
            device.state = try LifecycleStateMachine.next(
                from: device.state, on: event, by: actor, deviceOwner: device.owner, stateBeforeTheft: stateBeforeTheft)
            device.updatedAt = time
            let stolenFrom: String? = event == .reportStolen ? previous.rawValue : nil
            try await connection.query(
                """
                UPDATE devices SET state = \(device.state.rawValue), updated_at = \(RegistryEncoding.milliseconds(time)),
                    stolen_from = \(stolenFrom) WHERE id = \(id.rawValue)
                """,
                logger: logger
            )
            if let reason = RegistryEncoding.revocationReason(for: event) {
                try await connection.query(
                    """
                    INSERT INTO revocations (serial, reason, revoked_at)
                    SELECT serial, \(reason), \(RegistryEncoding.milliseconds(time)) FROM certificates WHERE device_id = \(id.rawValue)
                    ON CONFLICT (serial) DO NOTHING
                    """,
                    logger: logger
                )
            }
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "device.\(event)", subject: "device:\(id)",
                before: before, after: RegistryEncoding.auditJSON(device)
            )
            return device
        }
    }

    // MARK: Tokens

    public func insert(_ token: APITokenRecord, by actor: Actor, at time: Date) async throws {
        let logger = self.logger
        try await transaction(audited: true) { connection in
            try await connection.query(
                """
                INSERT INTO api_tokens (id, secret_hmac, role, owner, created_at, expires_at)
                VALUES (\(token.id), \(ByteBuffer(bytes: token.secretHMAC)), \(token.role.rawValue), \(token.owner),
                        \(RegistryEncoding.milliseconds(token.createdAt)), \(token.expiresAt.map(RegistryEncoding.milliseconds)))
                """,
                logger: logger
            )
            if let owner = token.owner, try await Self.insertOwner(try Owner(id: owner, createdAt: time), connection, logger) {
                try await Self.appendAudit(
                    connection, logger, time: time, actor: actor, action: "owner.create", subject: "owner:\(owner)", before: nil,
                    after: RegistryEncoding.ownerJSON(try Owner(id: owner, createdAt: time))
                )
            }
            try await Self.appendAudit(
                connection, logger, time: time, actor: actor, action: "token.create", subject: "token:\(token.id)",
                before: nil, after: RegistryEncoding.tokenJSON(token)
            )
        }
    }

    public func apiToken(id: String) async throws -> APITokenRecord? {
        do {
            let rows = try await client.query(
                "SELECT id, secret_hmac, role, owner, created_at, expires_at FROM api_tokens WHERE id = \(id) AND revoked_at IS NULL",
                logger: logger
            )
            for try await (tokenID, hmac, role, owner, created, expires) in rows.decode(
                (String, ByteBuffer, String, String?, Int64, Int64?).self)
            {
                guard let role = Role(rawValue: role) else { throw RegistryError(.storage, "api token \(id) has a malformed row") }
                return APITokenRecord(
                    id: tokenID, secretHMAC: Array(hmac.readableBytesView), role: role, owner: owner,
                    createdAt: RegistryEncoding.date(created), expiresAt: expires.map(RegistryEncoding.date)
                )
            }
            return nil
        } catch {
            throw Self.mapped(error)
        }
    }

    // MARK: Audit

    public func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject] {
        do {
            let rows = try await client.query(
                "SELECT sequence, subject FROM audit_log WHERE sequence > \(sequence) ORDER BY sequence LIMIT \(limit)", logger: logger)
            var subjects: [AuditSubject] = []
            for try await (sequence, subject) in rows.decode((Int64, String).self) {
                subjects.append(AuditSubject(sequence: sequence, subject: subject))
            }
            return subjects
        } catch {
            throw Self.mapped(error)
        }
    }

    public func auditHead() async throws -> Int64 {
        do {
            let rows = try await client.query("SELECT COALESCE(MAX(sequence), 0)::BIGINT FROM audit_log", logger: logger)
            for try await head in rows.decode(Int64.self) { return head }
            return 0
        } catch {
            throw Self.mapped(error)
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
        do {
            let rows = try await client.query(
                """
                SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash, hash FROM audit_log
                WHERE sequence >= \(sequence) ORDER BY sequence LIMIT \(limit)
                """,
                logger: logger
            )
            var entries: [AuditEntry] = []
            for try await row in rows.decode((Int64, Int64, String, String, String, String?, String?, ByteBuffer, ByteBuffer).self) {
                entries.append(
                    AuditEntry(
                        sequence: row.0, timeMilliseconds: row.1, actor: row.2, action: row.3, subject: row.4, before: row.5,
                        after: row.6, previousHash: Array(row.7.readableBytesView), hash: Array(row.8.readableBytesView)
                    )
                )
            }
            return entries
        } catch {
            throw Self.mapped(error)
        }
    }

    /// Appends an audit entry in the caller's transaction, which holds the audit advisory lock.
    static func appendAudit(
        _ connection: PostgresConnection, _ logger: Logger, time: Date, actor: Actor, action: String, subject: String,
        before: String?, after: String?
    ) async throws {
        let rows = try await connection.query("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1", logger: logger)
        var previous: (sequence: Int64, hash: [UInt8])?
        for try await (sequence, hash) in rows.decode((Int64, ByteBuffer).self) { previous = (sequence, Array(hash.readableBytesView)) }
        let entry = AuditEntry(
            following: previous, time: time, actor: actor.description, action: action, subject: subject, before: before, after: after
        )
        try await connection.query(
            """
            INSERT INTO audit_log (sequence, time_ms, actor, action, subject, before, after, previous_hash, hash)
            VALUES (\(entry.sequence), \(entry.timeMilliseconds), \(entry.actor), \(entry.action), \(entry.subject),
                    \(entry.before), \(entry.after), \(ByteBuffer(bytes: entry.previousHash)), \(ByteBuffer(bytes: entry.hash)))
            """,
            logger: logger
        )
    }

    // MARK: Encoding

    private static func device(_ row: DeviceRow) throws -> Device {
        guard let id = try? DeviceID(row.0), let state = DeviceState(rawValue: row.1) else {
            throw RegistryError(.storage, "a device row is malformed")
        }
        let bytes = row.6.map { Array($0.readableBytesView) } ?? []
        let proof: EnrollmentProof
        switch row.5 {
        case "secret": proof = .secret(hmac: bytes)
        case "public-key": proof = .publicKey(sha256: bytes)
        default: proof = .none
        }
        let metadata = RegistryEncoding.metadata(fromJSON: row.4)
        return Device(
            id: id, state: state, owner: row.2, model: row.3, metadata: metadata, proof: proof,
            createdAt: RegistryEncoding.date(row.7), updatedAt: RegistryEncoding.date(row.8)
        )
    }

    private static func proofBytes(_ proof: EnrollmentProof) -> ByteBuffer? {
        switch proof {
        case .secret(let hmac): ByteBuffer(bytes: hmac)
        case .publicKey(let sha256): ByteBuffer(bytes: sha256)
        case .none: nil
        }
    }

    /// One row of COPY text format: tab-separated, `\N` for NULL, backslash escapes, bytea as `\\x<hex>`.
    static func appendCopyRow(_ device: Device, to buffer: inout ByteBuffer) {
        func text(_ value: String?) {
            guard let value else {
                buffer.writeStaticString("\\N")
                return
            }
            for byte in value.utf8 {
                switch byte {
                case 0x5C: buffer.writeStaticString("\\\\")
                case 0x09: buffer.writeStaticString("\\t")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                default: buffer.writeInteger(byte)
                }
            }
        }
        let hexDigits = Array("0123456789abcdef".utf8)
        text(device.id.rawValue); buffer.writeInteger(UInt8(0x09))
        text(device.state.rawValue); buffer.writeInteger(UInt8(0x09))
        text(device.owner); buffer.writeInteger(UInt8(0x09))
        text(device.model); buffer.writeInteger(UInt8(0x09))
        text(RegistryEncoding.metadataJSON(device.metadata)); buffer.writeInteger(UInt8(0x09))
        text(device.proof.kind); buffer.writeInteger(UInt8(0x09))
        switch device.proof {
        case .secret(let bytes), .publicKey(let bytes):
            buffer.writeStaticString("\\\\x")
            for byte in bytes {
                buffer.writeInteger(hexDigits[Int(byte >> 4)])
                buffer.writeInteger(hexDigits[Int(byte & 0x0F)])
            }
        case .none:
            buffer.writeStaticString("\\N")
        }
        buffer.writeInteger(UInt8(0x09))
        buffer.writeString(String(RegistryEncoding.milliseconds(device.createdAt))); buffer.writeInteger(UInt8(0x09))
        buffer.writeString(String(RegistryEncoding.milliseconds(device.updatedAt))); buffer.writeInteger(UInt8(0x0A))
    }

}
