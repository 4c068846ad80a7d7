import FleetwardTestSupport
import Foundation
import Testing

/// schemathesis (PyPI) against a real `fleetward serve`: for an admin, a manufacturer and an owner
/// token, every check (schemathesis.toml turns them all on: no 5xx, every status and body as the document says, bad
/// input refused, schema-valid input accepted, 405 for undeclared methods, 401 for bad
/// credentials) over the examples, coverage, fuzzing and stateful phases, each role for
/// FLEETWARD_SCHEMATHESIS_SECONDS (default 40). Then the audit chain of all those writes verifies.
@Suite(.tags(.slow)) struct SchemathesisTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func theManagementAPIKeepsItsDocumentForEveryRole() throws {
        let python = try Tool("python3")
        try #require(
            try python.run(["-c", "import schemathesis"]).succeeded,
            "schemathesis is not installed: scripts/test.sh installs it (python3 -m pip install schemathesis)")
        let fixture = try ESTFixture(serveArguments: ["--sign-in-failures", "1000000"])
        func token(_ arguments: [String]) throws -> String {
            let result = try fixture.cli.run(["token", "create", "--data", fixture.data] + arguments)
            try #require(result.succeeded, "\(result)")
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let roles = [
            ("admin", fixture.admin), ("manufacturer", try token(["--role", "manufacturer"])),
            ("owner", try token(["--role", "owner", "--owner", "alice"])),
        ]
        let seconds = ProcessInfo.processInfo.environment["FLEETWARD_SCHEMATHESIS_SECONDS"] ?? "40"
        // The fixture's `api` ends in /api/v1; the document's paths carry it themselves.
        let base = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        for (role, token) in roles {
            let result = try python.run(
                [
                    "-c", "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()",
                    "--config-file", Self.repository.appendingPathComponent("schemathesis.toml").path, "--no-color",
                    "run", base + "/api/v1/openapi.json", "--url", base, "-H", "Authorization: Bearer \(token)",
                    // Every check is on in schemathesis.toml (`--checks all` here would also turn on
                    // the two it switches off for reasons JSON Schema cannot state).
                    "--max-time", seconds, "--workers", "1", "--seed", "20261206",
                ], currentDirectory: Self.repository.path, timeout: (Double(seconds) ?? 40) * 3 + 60)
            let summary = result.stdout.split(separator: "\n").suffix(40).joined(separator: "\n")
            #expect(result.succeeded, "schemathesis as \(role) found problems:\n\(String(result.stdout.suffix(12_000)))")
            #expect(summary.contains("Test cases:"), "no summary from schemathesis as \(role):\n\(summary)\n\(result.stderr.suffix(2000))")
        }
        let verify = try fixture.cli.run(["audit", "verify", "--data", fixture.data])
        #expect(verify.succeeded, "\(verify)")
        #expect(!fixture.server.stderr.contains("request failed"), "a 5xx was logged: \(fixture.server.stderr.suffix(2000))")
    }
}
