import FleetwardPKI
import FleetwardRegistry
import FleetwardRegistryPostgres
@testable import FleetwardRegistrySQLite
import FleetwardTestSupport
import Foundation
import Testing

/// Migrations applied to databases that already hold data, as an upgrade meets them.
@Suite(.tags(.database)) struct MigrationTests {
    /// Version 4 rebuilds `certificates` (SQLite cannot drop a UNIQUE constraint): rows,
    /// revocations that reference them and foreign keys survive, and the fingerprint index is gone.
    @Test func sqliteVersionFourKeepsCertificatesAndTheirRevocations() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("registry.sqlite")
        let earlier = SQLiteMigrations.all.filter { $0.version < 4 }
        var script = "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);\n"
        for migration in earlier {
            script += migration.sql + ";\nINSERT INTO schema_migrations VALUES (\(migration.version), 0);\n"
        }
        script += """
            INSERT INTO devices (id, state, model, proof_kind, created_at, updated_at) VALUES ('D-1', 'active', 'm', 'none', 0, 0);
            INSERT INTO certificates VALUES ('01aa', 'D-1', 'device', NULL, 0, 1000, 'ff00', 5);
            INSERT INTO certificates VALUES ('01bb', 'D-1', 'device', NULL, 0, 1000, 'ff11', 6);
            INSERT INTO revocations VALUES ('01aa', 1, 7);
            """
        let sqlite3 = try Tool("sqlite3")
        let setup = try sqlite3.run([path], stdin: Array(script.utf8))
        try #require(setup.succeeded, "\(setup)")

        let store = try SQLiteRegistryStore(path: path)
        #expect(try await store.migrate() == SQLiteMigrations.all.map(\.version).filter { $0 >= 4 })
        let revoked = try #require(try await store.certificate(serial: "01aa"))
        #expect(revoked.revocation?.reason == 1)
        #expect(revoked.deviceID?.rawValue == "D-1")
        #expect(try await store.certificate(serial: "01bb")?.revocation == nil)

        let check = try sqlite3.run([path, "PRAGMA foreign_key_check; PRAGMA integrity_check; SELECT count(*) FROM certificates;"])
        #expect(check.stdout.split(separator: "\n") == ["ok", "2"], "\(check)")
        let indexes = try sqlite3.run([path, "SELECT name FROM pragma_index_list('certificates') ORDER BY name"])
        // No unique index on the fingerprint (version 4); by device, by serial, and by expiry (version 11).
        #expect(
            indexes.stdout.split(separator: "\n") == ["certificates_by_device", "certificates_by_expiry", "sqlite_autoindex_certificates_1"],
            "\(indexes)")
    }

    @Test(.disabled(if: StoreKind.postgresSkipped, "FLEETWARD_TEST_SKIP_POSTGRES=1"))
    func postgresVersionFourDropsTheFingerprintConstraint() async throws {
        let database = try TestPostgres.makeDatabase()
        defer { database.drop() }
        let store = try PostgresRegistryStore(url: database.url)
        defer { store.shutdown() }
        #expect(try await store.migrate().contains(4))
        let constraints = try database.psql(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'certificates'::regclass AND contype = 'u'")
        #expect(constraints.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }
}
