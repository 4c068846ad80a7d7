import FleetwardTestSupport
import Foundation
import Testing

/// The README's shell examples, run as written by bash against a real `serve`: the EST pipeline
/// (openssl, curl, base64), the provisioning file and the agent's walk through the flows. The
/// only change is the endpoints: the README's default ports become this server's.
@Suite(.tags(.slow)) struct ReadmeExamplesTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The README's ```sh blocks.
    static func shellBlocks() throws -> [String] {
        let readme = try String(contentsOf: repository.appendingPathComponent("README.md"), encoding: .utf8)
        var blocks: [String] = []
        var current: [Substring]?
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```sh" {
                current = []
            } else if current != nil, line == "```" {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(line)
            }
        }
        return blocks
    }

    static func block(containing fragments: String...) throws -> String {
        try #require(try shellBlocks().first { block in fragments.allSatisfy { block.contains($0) } }, "no README block with \(fragments)")
    }

    @Test func theESTPipelineAndTheAgentWalkRunAsWritten() throws {
        let fixture = try ESTFixture()
        let secret = "factory-secret-0123456789"
        try fixture.allow([
            "SN-000001,\(secret),,sensor,", "SN-000002,another-secret-0123456789,,sensor,", "SN-000004,\(secret),,sensor,",
        ])
        // SN-000002 is claimed by alice, who makes it a one-time enrollment token.
        let alice = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "owner", "--owner", "alice"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (_, code) = try fixture.apiCall("POST", "/devices/SN-000002/claim-code", token: fixture.admin)
        let claimCode = try #require(code["claimCode"] as? String)
        #expect(try fixture.apiCall("POST", "/claims", token: alice, json: #"{"device":"SN-000002","claimCode":"\#(claimCode)"}"#).0 == 200)
        let (_, tokenBody) = try fixture.apiCall("POST", "/devices/SN-000002/enrollment-tokens", token: alice, json: "{}")
        let token = try #require(tokenBody["token"] as? String)

        // The reader's working directory: the data directory as the README names it, the files it mentions.
        let work = fixture.directory.file("readme")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: work + "/fleetward-data", withDestinationPath: fixture.data)
        try Data((secret + "\n").utf8).write(to: URL(fileURLWithPath: work + "/factory-secret"))
        try Data((token + "\n").utf8).write(to: URL(fileURLWithPath: work + "/owner-token"))
        chmod(work + "/factory-secret", 0o600)
        chmod(work + "/owner-token", 0o600)

        // Both binaries on PATH; `run` (which stays connected for ever) is stopped after a few seconds.
        let fleetward = try FleetwardBinary.tool()
        let agent = try FleetwardBinary.tool(named: "fleetward-agent")
        let bin = work + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: bin + "/fleetward", withDestinationPath: fleetward.executable)
        try Data(
            """
            #!/bin/sh
            case " $* " in
              *" run "*) timeout -s INT 6 "\(agent.executable)" "$@"; status=$?; [ $status -eq 124 ] && exit 0; exit $status ;;
            esac
            exec "\(agent.executable)" "$@"

            """.utf8
        ).write(to: URL(fileURLWithPath: bin + "/fleetward-agent"))
        chmod(bin + "/fleetward-agent", 0o755)

        let est = AgentTests.endpoint(fixture.est)
        let gateway = AgentTests.endpoint(fixture.gateway)
        func run(_ block: String) throws -> Tool.Result {
            let script = block.replacingOccurrences(of: "127.0.0.1:8443", with: est).replacingOccurrences(of: "127.0.0.1:9443", with: gateway)
            return try Tool("bash").run(
                ["-euo", "pipefail", "-c", script],
                environment: [
                    "PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"),
                    "FLEETWARD_PASSPHRASE": CLI.passphrase, "FACTORY_SECRET": secret,
                ], currentDirectory: work, timeout: 180)
        }

        // EST by hand: openssl makes the key and CSR, curl enrolls, openssl reads the answer.
        let pipeline = try run(try Self.block(containing: "openssl req -new", "simpleenroll"))
        #expect(pipeline.succeeded, "\(pipeline)")
        let certificate = try fixture.cli.openssl(["x509", "-in", work + "/dev.pem", "-noout", "-subject"]).stdout
        #expect(certificate.contains("SN-000004"), "\(certificate)")

        // A refusal shows the server's reason, not a base64 error.
        try Data("wrong-secret-0123456789\n".utf8).write(to: URL(fileURLWithPath: work + "/ignored"))
        let refusedScript = try Self.block(containing: "openssl req -new", "simpleenroll")
            .replacingOccurrences(of: "$FACTORY_SECRET", with: "wrong-secret-0123456789")
        let refused = try run(refusedScript)
        #expect(refused.stdout.contains("SN-000004") || refused.stdout.contains("secret"), "the reason was not shown: \(refused)")
        #expect(!refused.stderr.contains("base64: invalid input"), "\(refused)")

        // The agent: provisioning file, then every flow, status, telemetry, renewal, run.
        let provisioning = try run(try Self.block(containing: "fleetward provisioning-config"))
        #expect(provisioning.succeeded, "\(provisioning)")
        let walk = try run(try Self.block(containing: "A=\"fleetward-agent"))
        #expect(walk.succeeded, "\(walk)")
        #expect(walk.stdout.contains("owner alice"), "the token flow did not learn its owner: \(walk.stdout)")
        #expect(walk.stdout.contains("connected to the gateway as SN-000001"), "run did not connect: \(walk.stdout)")
        for id in ["SN-000001", "SN-000002", "SN-000003"] { #expect(try fixture.state(id) == "active", "\(id)") }
    }
}
