/// The registry schema, one versioned step at a time. Applied steps are recorded in
/// `schema_migrations` and never edited: a change is a new step.
enum SQLiteMigrations {
    struct Migration {
        var version: Int
        var sql: String
        /// Rebuilds a table that others reference: runs with foreign keys off, then checks them.
        var rebuildsTables = false
    }

    static let all: [Migration] = [
        Migration(
            version: 1,
            sql: """
                CREATE TABLE devices (
                    id TEXT PRIMARY KEY,
                    state TEXT NOT NULL CHECK (state IN ('allowed', 'pending', 'active', 'suspended', 'revoked', 'stolen')),
                    owner TEXT,
                    model TEXT NOT NULL,
                    metadata TEXT NOT NULL DEFAULT '{}',
                    proof_kind TEXT NOT NULL CHECK (proof_kind IN ('secret', 'public-key', 'none')),
                    proof BLOB,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX devices_by_state ON devices (state, id);
                CREATE INDEX devices_by_owner ON devices (owner, id) WHERE owner IS NOT NULL;
                CREATE INDEX devices_by_model ON devices (model, id);

                CREATE TABLE enrollment_groups (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    ca_certificate BLOB NOT NULL,
                    ca_sha256 TEXT NOT NULL UNIQUE,
                    auto_approve INTEGER NOT NULL CHECK (auto_approve IN (0, 1)),
                    created_at INTEGER NOT NULL
                );

                CREATE TABLE claim_codes (
                    device_id TEXT PRIMARY KEY REFERENCES devices (id),
                    salt BLOB NOT NULL,
                    hash BLOB NOT NULL,
                    iterations INTEGER NOT NULL,
                    claimed_by TEXT,
                    claimed_at INTEGER
                );

                CREATE TABLE enrollment_tokens (
                    secret_hmac BLOB PRIMARY KEY,
                    device_id TEXT NOT NULL REFERENCES devices (id),
                    owner TEXT,
                    expires_at INTEGER NOT NULL,
                    used_at INTEGER
                );

                CREATE TABLE certificates (
                    serial TEXT PRIMARY KEY,
                    device_id TEXT REFERENCES devices (id),
                    profile TEXT NOT NULL,
                    owner TEXT,
                    not_before INTEGER NOT NULL,
                    not_after INTEGER NOT NULL,
                    sha256 TEXT NOT NULL UNIQUE,
                    issued_at INTEGER NOT NULL
                );
                CREATE INDEX certificates_by_device ON certificates (device_id);

                CREATE TABLE revocations (
                    serial TEXT PRIMARY KEY REFERENCES certificates (serial),
                    reason INTEGER NOT NULL CHECK (reason BETWEEN 0 AND 10 AND reason <> 7),
                    revoked_at INTEGER NOT NULL
                );

                CREATE TABLE api_tokens (
                    id TEXT PRIMARY KEY,
                    secret_hmac BLOB NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin', 'manufacturer', 'operator', 'owner')),
                    owner TEXT,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER,
                    CHECK ((role = 'owner') = (owner IS NOT NULL))
                );

                CREATE TABLE audit_log (
                    sequence INTEGER PRIMARY KEY,
                    time_ms INTEGER NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    before TEXT,
                    after TEXT,
                    previous_hash BLOB NOT NULL,
                    hash BLOB NOT NULL
                );
                """
        ),
        Migration(
            version: 2,
            sql: """
                CREATE TABLE owners (
                    id TEXT PRIMARY KEY,
                    name TEXT,
                    created_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                INSERT OR IGNORE INTO owners (id, name, created_at)
                    SELECT DISTINCT owner, NULL, CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM api_tokens WHERE owner IS NOT NULL;
                INSERT OR IGNORE INTO owners (id, name, created_at)
                    SELECT DISTINCT owner, NULL, CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM devices WHERE owner IS NOT NULL;
                CREATE UNIQUE INDEX enrollment_groups_by_name ON enrollment_groups (name);
                CREATE INDEX enrollment_tokens_by_device ON enrollment_tokens (device_id);
                """
        ),
        Migration(
            version: 3,
            sql: """
                ALTER TABLE devices ADD COLUMN stolen_from TEXT
                    CHECK (stolen_from IS NULL OR stolen_from IN ('allowed', 'pending', 'active', 'suspended'));
                """
        ),
        // The certificate fingerprint loses its UNIQUE index: the serial already identifies a
        // certificate, and an index over random hashes cost every enrollment a random page write.
        // SQLite cannot drop a constraint, so the table is rebuilt (foreign keys off around it).
        Migration(
            version: 4,
            sql: """
                CREATE TABLE certificates_v4 (
                    serial TEXT PRIMARY KEY,
                    device_id TEXT REFERENCES devices (id),
                    profile TEXT NOT NULL,
                    owner TEXT,
                    not_before INTEGER NOT NULL,
                    not_after INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    issued_at INTEGER NOT NULL
                );
                INSERT INTO certificates_v4 (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at)
                    SELECT serial, device_id, profile, owner, not_before, not_after, sha256, issued_at FROM certificates;
                DROP TABLE certificates;
                ALTER TABLE certificates_v4 RENAME TO certificates;
                CREATE INDEX certificates_by_device ON certificates (device_id);
                """,
            rebuildsTables: true
        ),
        // Telemetry the gateway received, per device, in arrival order.
        Migration(
            version: 5,
            sql: """
                CREATE TABLE telemetry (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    device_id TEXT NOT NULL REFERENCES devices (id),
                    received_at INTEGER NOT NULL,
                    body TEXT NOT NULL
                );
                CREATE INDEX telemetry_by_device ON telemetry (device_id, sequence);
                """
        ),
        // Signed telemetry: each message's nonce, unique per device, so a replay is refused on any node.
        Migration(
            version: 6,
            sql: """
                ALTER TABLE telemetry ADD COLUMN nonce TEXT;
                CREATE UNIQUE INDEX telemetry_nonce ON telemetry (device_id, nonce);
                """
        ),
        // Signed updates: each device's latest state per release version.
        Migration(
            version: 7,
            sql: """
                CREATE TABLE update_status (
                    device_id TEXT NOT NULL REFERENCES devices (id),
                    version TEXT NOT NULL,
                    state TEXT NOT NULL,
                    detail TEXT,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (device_id, version)
                );
                CREATE INDEX update_status_by_version ON update_status (version, state);
                """
        ),
        // Hardening: a device remembers the enrollment group that registered it and who registered
        // it; a group may be bound to an ID pattern; each audit entry carries a MAC under the
        // sealed registry key; security events (refused stolen or revoked devices) have a table.
        Migration(
            version: 9,
            sql: """
                ALTER TABLE devices ADD COLUMN group_id TEXT;
                ALTER TABLE devices ADD COLUMN registered_by TEXT;
                ALTER TABLE enrollment_groups ADD COLUMN id_pattern TEXT;
                ALTER TABLE audit_log ADD COLUMN mac BLOB;
                CREATE TABLE security_events (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    time_ms INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    device_id TEXT,
                    serial TEXT,
                    address TEXT,
                    detail TEXT NOT NULL
                );
                CREATE INDEX security_events_by_device ON security_events (device_id, sequence);
                """
        ),
        // MQTT policies per model or enrollment group (the front door's per-scope documents).
        Migration(
            version: 10,
            sql: """
                CREATE TABLE mqtt_policies (
                    scope TEXT PRIMARY KEY,
                    document TEXT NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                """
        ),
        // The operator's view: API tokens of the `metrics` role (a Prometheus scraper), which
        // SQLite's CHECK cannot gain without rebuilding the table; certificates by expiry, for the
        // "expiring within 7 and 30 days" counts of /metrics and the console; the audit log by
        // subject, for one device's timeline in the console.
        Migration(
            version: 11,
            sql: """
                CREATE TABLE api_tokens_v11 (
                    id TEXT PRIMARY KEY,
                    secret_hmac BLOB NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin', 'manufacturer', 'operator', 'owner', 'metrics')),
                    owner TEXT,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER,
                    CHECK ((role = 'owner') = (owner IS NOT NULL))
                );
                INSERT INTO api_tokens_v11 (id, secret_hmac, role, owner, created_at, expires_at, revoked_at)
                    SELECT id, secret_hmac, role, owner, created_at, expires_at, revoked_at FROM api_tokens;
                DROP TABLE api_tokens;
                ALTER TABLE api_tokens_v11 RENAME TO api_tokens;
                CREATE INDEX certificates_by_expiry ON certificates (not_after);
                CREATE INDEX audit_log_by_subject ON audit_log (subject, sequence);
                """,
            rebuildsTables: true
        ),
    ]
}
