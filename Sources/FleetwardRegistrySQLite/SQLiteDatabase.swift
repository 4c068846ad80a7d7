import FleetwardRegistry
import VaporCSQLite

/// A thin wrapper over SQLite's C API (SQLite bundled through sqlite-nio, no system library).
///
/// Not thread-safe: ``SQLiteRegistryStore`` serialises every use behind one lock.
final class SQLiteDatabase {
    private(set) var handle: OpaquePointer?
    let path: String

    init(path: String) throws {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite_nio_sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite_nio_sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite_nio_sqlite3_close(db)
            throw RegistryError(.storage, "cannot open the registry database \(path): \(message)")
        }
        handle = db
        sqlite_nio_sqlite3_extended_result_codes(db, 1)
    }

    deinit {
        sqlite_nio_sqlite3_close_v2(handle)
    }

    /// Runs one or more statements without results.
    func execute(_ sql: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite_nio_sqlite3_exec(handle, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? lastError
            sqlite_nio_sqlite3_free(error)
            throw RegistryError(.storage, "the registry database failed: \(message)")
        }
    }

    func prepare(_ sql: String) throws -> SQLiteStatement {
        var statement: OpaquePointer?
        let rc = sqlite_nio_sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else {
            throw RegistryError(.storage, "the registry database refused a statement: \(lastError)")
        }
        return SQLiteStatement(statement, database: self)
    }

    /// Pages in the write-ahead log after the last commit (kept by the WAL hook).
    private(set) var logFrames: Int32 = 0

    /// Replaces SQLite's automatic checkpoint: the WAL hook only notes the log's size, and
    /// ``checkpointIfLogHolds(frames:)`` runs the checkpoint once the caller has reset its
    /// statements.
    ///
    /// SQLite's own automatic checkpoint runs inside the committing `sqlite3_step`, while
    /// statements of the same batch still hold a read transaction: it fails (SQLITE_LOCKED), the
    /// log is never restarted and grows without bound (125 MB in 5 s of enrollments), and every
    /// commit extends the file (new blocks to allocate and zero).
    func takeOverCheckpoints() {
        let hook: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32 = {
            context, _, _, frames in
            guard let context else { return SQLITE_OK }
            Unmanaged<SQLiteDatabase>.fromOpaque(context).takeUnretainedValue().logFrames = frames
            return SQLITE_OK
        }
        _ = sqlite_nio_sqlite3_wal_hook(handle, hook, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Checkpoints the log once it holds `frames` pages, in RESTART mode so that the next commit
    /// writes the log from its start again. Waits at most 5 ms for readers (they take
    /// microseconds); past that it has done what a PASSIVE checkpoint does and the next call
    /// tries again. Call with no statement of this connection in progress.
    func checkpointIfLogHolds(frames: Int32, busyTimeoutMilliseconds: Int32) {
        guard logFrames >= frames else { return }
        sqlite_nio_sqlite3_busy_timeout(handle, 5)
        defer { sqlite_nio_sqlite3_busy_timeout(handle, busyTimeoutMilliseconds) }
        var log: Int32 = 0
        var copied: Int32 = 0
        let rc = sqlite_nio_sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_RESTART, &log, &copied)
        if rc == SQLITE_OK { logFrames = 0 }
    }

    var lastError: String { String(cString: sqlite_nio_sqlite3_errmsg(handle)) }
    var changes: Int { Int(sqlite_nio_sqlite3_changes(handle)) }

    /// Runs `body` in a write transaction (BEGIN IMMEDIATE takes the write lock up front, so two
    /// processes never deadlock upgrading a read lock), committing on return and rolling back on throw.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

/// A prepared statement; reset after each use.
final class SQLiteStatement {
    private let statement: OpaquePointer
    private unowned let database: SQLiteDatabase

    init(_ statement: OpaquePointer, database: SQLiteDatabase) {
        self.statement = statement
        self.database = database
    }

    deinit { sqlite_nio_sqlite3_finalize(statement) }

    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    func bind(_ index: Int32, _ value: String?) {
        guard let value else {
            sqlite_nio_sqlite3_bind_null(statement, index)
            return
        }
        sqlite_nio_sqlite3_bind_text(statement, index, value, -1, Self.transient)
    }

    func bind(_ index: Int32, _ value: [UInt8]?) {
        guard let value else {
            sqlite_nio_sqlite3_bind_null(statement, index)
            return
        }
        _ = value.withUnsafeBytes { sqlite_nio_sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), Self.transient) }
    }

    func bind(_ index: Int32, _ value: Int64?) {
        guard let value else {
            sqlite_nio_sqlite3_bind_null(statement, index)
            return
        }
        sqlite_nio_sqlite3_bind_int64(statement, index, value)
    }

    /// Steps once; true when a row is available.
    @discardableResult
    func step() throws -> Bool {
        let rc = sqlite_nio_sqlite3_step(statement)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let message = database.lastError
            sqlite_nio_sqlite3_reset(statement)
            if rc & 0xFF == SQLITE_CONSTRAINT {
                // PRIMARYKEY (1555) and UNIQUE (2067) are duplicates; CHECK, NOT NULL and foreign
                // keys are bad input, as PostgreSQL's 23xxx codes map.
                if rc == 1555 || rc == 2067 {
                    throw RegistryError(.duplicate, "the registry refused a duplicate row")
                }
                throw RegistryError(.invalidInput, "the registry refused a row: \(message)")
            }
            throw RegistryError(.storage, "the registry database failed: \(message)")
        }
    }

    func reset() {
        sqlite_nio_sqlite3_reset(statement)
        sqlite_nio_sqlite3_clear_bindings(statement)
    }

    func text(_ column: Int32) -> String? {
        guard let pointer = sqlite_nio_sqlite3_column_text(statement, column) else { return nil }
        return String(cString: pointer)
    }

    func blob(_ column: Int32) -> [UInt8]? {
        let count = Int(sqlite_nio_sqlite3_column_bytes(statement, column))
        guard let pointer = sqlite_nio_sqlite3_column_blob(statement, column) else { return count == 0 && !isNull(column) ? [] : nil }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    func int64(_ column: Int32) -> Int64 { sqlite_nio_sqlite3_column_int64(statement, column) }

    func isNull(_ column: Int32) -> Bool { sqlite_nio_sqlite3_column_type(statement, column) == SQLITE_NULL }
}
