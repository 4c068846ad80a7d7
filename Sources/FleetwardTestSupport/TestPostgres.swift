import Foundation

/// The private PostgreSQL cluster that `scripts/test.sh` starts (`scripts/postgres-cluster.sh`).
///
/// Without it the PostgreSQL tests fail with instructions; they never skip silently.
public enum TestPostgres {
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String
    }

    /// The admin URL of the cluster.
    public static func adminURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["FLEETWARD_TEST_POSTGRES_URL"], !url.isEmpty else {
            throw Unavailable(
                description:
                    "FLEETWARD_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts a private PostgreSQL cluster"
            )
        }
        return url
    }

    /// A fresh, empty database; `drop()` removes it.
    public struct Database: Sendable {
        public let url: String
        public let name: String
        let adminURL: String

        /// Runs SQL through the psql shell (a tool nobody here wrote), returning its trimmed output.
        @discardableResult
        public func psql(_ sql: String) throws -> String {
            let result = try Tool("psql").run(["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", url, "-c", sql], timeout: 60)
            guard result.succeeded else { throw Unavailable(description: "psql failed: \(result.stderr)") }
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        public func drop() {
            _ = try? Tool("psql").run(["-X", "-q", adminURL, "-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"], timeout: 60)
        }
    }

    public static func makeDatabase() throws -> Database {
        let admin = try adminURL()
        let name = "fw_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        let created = try Tool("psql").run(["-X", "-q", admin, "-c", "CREATE DATABASE \(name)"], timeout: 60)
        guard created.succeeded else { throw Unavailable(description: "cannot create a test database: \(created.stderr)") }
        guard let slash = admin.lastIndex(of: "/") else { throw Unavailable(description: "malformed FLEETWARD_TEST_POSTGRES_URL") }
        return Database(url: String(admin[..<slash]) + "/" + name, name: name, adminURL: admin)
    }
}
