/// The registry schema for PostgreSQL, one versioned step at a time (the same model as SQLite's).
enum PostgresMigrations {
    struct Migration {
        var version: Int
        var statements: [String]
    }

    static let all: [Migration] = [
        Migration(
            version: 1,
            statements: [
                """
                CREATE TABLE devices (
                    id TEXT PRIMARY KEY,
                    state TEXT NOT NULL CHECK (state IN ('allowed', 'pending', 'active', 'suspended', 'revoked', 'stolen')),
                    owner TEXT,
                    model TEXT NOT NULL,
                    metadata TEXT NOT NULL DEFAULT '{}',
                    proof_kind TEXT NOT NULL CHECK (proof_kind IN ('secret', 'public-key', 'none')),
                    proof BYTEA,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX devices_by_state ON devices (state, id)",
                "CREATE INDEX devices_by_owner ON devices (owner, id) WHERE owner IS NOT NULL",
                "CREATE INDEX devices_by_model ON devices (model, id)",
                """
                CREATE TABLE enrollment_groups (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    ca_certificate BYTEA NOT NULL,
                    ca_sha256 TEXT NOT NULL UNIQUE,
                    auto_approve BOOLEAN NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE claim_codes (
                    device_id TEXT PRIMARY KEY REFERENCES devices (id),
                    salt BYTEA NOT NULL,
                    hash BYTEA NOT NULL,
                    iterations INTEGER NOT NULL,
                    claimed_by TEXT,
                    claimed_at BIGINT
                )
                """,
                """
                CREATE TABLE enrollment_tokens (
                    secret_hmac BYTEA PRIMARY KEY,
                    device_id TEXT NOT NULL REFERENCES devices (id),
                    owner TEXT,
                    expires_at BIGINT NOT NULL,
                    used_at BIGINT
                )
                """,
                """
                CREATE TABLE certificates (
                    serial TEXT PRIMARY KEY,
                    device_id TEXT REFERENCES devices (id),
                    profile TEXT NOT NULL,
                    owner TEXT,
                    not_before BIGINT NOT NULL,
                    not_after BIGINT NOT NULL,
                    sha256 TEXT NOT NULL UNIQUE,
                    issued_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX certificates_by_device ON certificates (device_id)",
                """
                CREATE TABLE revocations (
                    serial TEXT PRIMARY KEY REFERENCES certificates (serial),
                    reason INTEGER NOT NULL CHECK (reason BETWEEN 0 AND 10 AND reason <> 7),
                    revoked_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE api_tokens (
                    id TEXT PRIMARY KEY,
                    secret_hmac BYTEA NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin', 'manufacturer', 'operator', 'owner')),
                    owner TEXT,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT,
                    revoked_at BIGINT,
                    CHECK ((role = 'owner') = (owner IS NOT NULL))
                )
                """,
                """
                CREATE TABLE audit_log (
                    sequence BIGINT PRIMARY KEY,
                    time_ms BIGINT NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    before TEXT,
                    after TEXT,
                    previous_hash BYTEA NOT NULL,
                    hash BYTEA NOT NULL
                )
                """,
            ]
        ),
        Migration(
            version: 2,
            statements: [
                "CREATE TABLE owners (id TEXT PRIMARY KEY, name TEXT, created_at BIGINT NOT NULL)",
                """
                INSERT INTO owners (id, name, created_at)
                SELECT DISTINCT owner, NULL::text, (extract(epoch FROM now()) * 1000)::bigint FROM api_tokens WHERE owner IS NOT NULL
                UNION
                SELECT DISTINCT owner, NULL::text, (extract(epoch FROM now()) * 1000)::bigint FROM devices WHERE owner IS NOT NULL
                ON CONFLICT (id) DO NOTHING
                """,
                "CREATE UNIQUE INDEX enrollment_groups_by_name ON enrollment_groups (name)",
                "CREATE INDEX enrollment_tokens_by_device ON enrollment_tokens (device_id)",
            ]
        ),
        Migration(
            version: 3,
            statements: [
                """
                ALTER TABLE devices ADD COLUMN stolen_from TEXT
                    CHECK (stolen_from IS NULL OR stolen_from IN ('allowed', 'pending', 'active', 'suspended'))
                """
            ]
        ),
        // The serial identifies a certificate; a unique index over random fingerprints cost every
        // enrollment a random index page.
        Migration(
            version: 4,
            statements: ["ALTER TABLE certificates DROP CONSTRAINT IF EXISTS certificates_sha256_key"]
        ),
        Migration(
            version: 5,
            statements: [
                """
                CREATE TABLE telemetry (
                    sequence BIGSERIAL PRIMARY KEY,
                    device_id TEXT NOT NULL REFERENCES devices (id),
                    received_at BIGINT NOT NULL,
                    body TEXT NOT NULL
                )
                """,
                "CREATE INDEX telemetry_by_device ON telemetry (device_id, sequence)",
            ]
        ),
        // Signed telemetry: each message's nonce, unique per device, so a replay is refused on any node.
        Migration(
            version: 6,
            statements: [
                "ALTER TABLE telemetry ADD COLUMN nonce TEXT",
                "CREATE UNIQUE INDEX telemetry_nonce ON telemetry (device_id, nonce)",
            ]
        ),
        // Signed updates: each device's latest state per release version.
        Migration(
            version: 7,
            statements: [
                """
                CREATE TABLE update_status (
                    device_id TEXT NOT NULL REFERENCES devices (id),
                    version TEXT NOT NULL,
                    state TEXT NOT NULL,
                    detail TEXT,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (device_id, version)
                )
                """,
                "CREATE INDEX update_status_by_version ON update_status (version, state)",
            ]
        ),
        // Change notification: every statement that appends to the audit log notifies
        // `fleetward_audit` when its transaction commits, so other nodes catch up at once.
        Migration(
            version: 8,
            statements: [
                """
                CREATE OR REPLACE FUNCTION fleetward_audit_notify() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('\(PostgresRegistryStore.auditChannel)', '');
                    RETURN NULL;
                END
                $$
                """,
                """
                CREATE TRIGGER audit_log_notify AFTER INSERT ON audit_log
                    FOR EACH STATEMENT EXECUTE FUNCTION fleetward_audit_notify()
                """,
            ]
        ),
        // Hardening: the same as SQLite's migration 9.
        Migration(
            version: 9,
            statements: [
                "ALTER TABLE devices ADD COLUMN group_id TEXT",
                "ALTER TABLE devices ADD COLUMN registered_by TEXT",
                "ALTER TABLE enrollment_groups ADD COLUMN id_pattern TEXT",
                "ALTER TABLE audit_log ADD COLUMN mac BYTEA",
                """
                CREATE TABLE security_events (
                    sequence BIGSERIAL PRIMARY KEY,
                    time_ms BIGINT NOT NULL,
                    kind TEXT NOT NULL,
                    device_id TEXT,
                    serial TEXT,
                    address TEXT,
                    detail TEXT NOT NULL
                )
                """,
                "CREATE INDEX security_events_by_device ON security_events (device_id, sequence)",
            ]
        ),
        // MQTT policies: the same as SQLite's migration 10.
        Migration(
            version: 10,
            statements: [
                "CREATE TABLE mqtt_policies (scope TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at BIGINT NOT NULL)"
            ]
        ),
        // API tokens of the `metrics` role; certificates by expiry (the expiring counts).
        Migration(
            version: 11,
            statements: [
                "ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check",
                "ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('admin', 'manufacturer', 'operator', 'owner', 'metrics'))",
                "CREATE INDEX certificates_by_expiry ON certificates (not_after)",
                "CREATE INDEX audit_log_by_subject ON audit_log (subject, sequence)",
            ]
        ),
    ]
}
