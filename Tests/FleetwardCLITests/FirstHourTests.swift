import FleetwardTestSupport
import Foundation
import Testing

/// What a new user trips over in the first hour: commands that must say what is wrong in one
/// line before doing anything, options that must change only what they name, and `--json` that
/// must be typed JSON.
@Suite(.tags(.slow)) struct FirstHourTests {
    /// `release promote --rollout` widens the rollout and leaves the channel alone.
    @Test func promoteChangesOnlyWhatItIsGiven() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cli = try CLI()
        let data = directory.file("data")
        #expect(try cli.run(["init", "--data", data, "--kdf-iterations", "2000"]).succeeded)
        try directory.write("fw.img", String(repeating: "x", count: 4096))
        let published = try cli.run([
            "release", "publish", "--data", data, directory.file("fw.img"), "--version", "1.2.0", "--model", "sensor", "--channel", "beta",
            "--rollout", "10",
        ])
        #expect(published.succeeded, "\(published)")
        let widened = try cli.run(["release", "promote", "--data", data, "1.2.0", "--rollout", "100", "--json"])
        #expect(widened.succeeded, "\(widened)")
        let report = (try? JSONSerialization.jsonObject(with: Data(widened.stdout.utf8))) as? [String: Any] ?? [:]
        let manifest = report["manifest"] as? [String: Any] ?? [:]
        #expect(manifest["channel"] as? String == "beta", "the channel changed: \(widened.stdout)")
        #expect(manifest["rollout"] as? Int == 100, "\(widened.stdout)")
        let moved = try cli.run(["release", "promote", "--data", data, "1.2.0", "--channel", "stable"])
        #expect(moved.succeeded && moved.stdout.contains("on stable at 100%"), "\(moved)")
    }

    /// Without a CA, release commands say so and name `init`, like every other command.
    @Test func releaseCommandsWithoutACANameInit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cli = try CLI()
        for arguments in [["release", "list"], ["release", "halt", "1.0.0"], ["release", "status", "1.0.0"]] {
            let result = try cli.run(arguments + ["--data", directory.file("nothing")])
            cli.expectOneLineError(result, containing: "fleetward init")
        }
    }

    /// A port in use is named with its listener before anything else is printed; a second
    /// `serve` on the same SQLite data directory is refused.
    @Test func aBusyPortAndASecondServeAreOneClearLine() throws {
        let fixture = try ESTFixture()
        let busy = AgentTests.endpoint(fixture.est)
        let second = try fixture.cli.run([
            "serve", "--data", fixture.data, "--api-listen", "127.0.0.1:0", "--est-listen", busy, "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off",
        ])
        fixture.cli.expectOneLineError(second, containing: "the EST cannot listen on \(busy): the address is in use")
        #expect(second.stdout.isEmpty, "the banner came first: \(second.stdout)")

        let again = try fixture.cli.run([
            "serve", "--data", fixture.data, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen",
            "127.0.0.1:0", "--mqtt-listen", "off",
        ])
        fixture.cli.expectOneLineError(again, containing: "another fleetward serve")
        #expect(again.stderr.contains("pid \(fixture.server.process.processIdentifier)"), "\(again.stderr)")
    }

    /// Certificates point at the revocation URL of the data directory; `serve` warns when its API
    /// is elsewhere, and the URL can be changed, after which issued certificates carry the new one
    /// and openssl finds OCSP there.
    @Test func theRevocationURLIsASettingAndServeWarnsWhenItIsWrong() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cli = try CLI()
        let data = directory.file("data")
        #expect(try cli.run(["init", "--data", data, "--kdf-iterations", "2000"]).succeeded)
        #expect(try cli.run(["ca", "revocation-url", "--data", data]).stdout == "http://127.0.0.1:8080\n")
        cli.expectOneLineError(try cli.run(["ca", "revocation-url", "--data", data, "ftp://x"]), containing: "http(s)://HOST")

        // The API on a free port of its own choosing: not where the certificates point.
        let server = try RunningServer(
            executable: cli.fleetward.executable,
            arguments: ["serve", "--data", data, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off"],
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: directory.path, expectedListeners: 3)
        let api = try #require(server.listeners["management API"])
        #expect(try eventually(timeout: 5) { server.stderr.contains("point relying parties to http://127.0.0.1:8080") }, "\(server.stderr)")
        server.stop()

        // Set it to where the API is, restart: no warning, and a new certificate's OCSP URL answers.
        let set = try cli.run(["ca", "revocation-url", "--data", data, api])
        #expect(set.succeeded, "\(set)")
        let port = String(api.split(separator: ":").last ?? "")
        let again = try RunningServer(
            executable: cli.fleetward.executable,
            arguments: [
                "serve", "--data", data, "--api-listen", "127.0.0.1:\(port)", "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off",
            ],
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: directory.path, expectedListeners: 3)
        defer { again.stop() }
        let openssl = try Tool.openssl()
        _ = try openssl.run([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file("d.key"), "-subj", "/",
            "-out", directory.file("d.csr"),
        ])
        let issued = try cli.run(["cert", "issue", "--data", data, "--profile", "device", "--csr", directory.file("d.csr"), "--id", "URL-1", "--out", directory.file("d.pem")])
        #expect(issued.succeeded, "\(issued)")
        let uri = try openssl.run(["x509", "-in", directory.file("d.pem"), "-noout", "-ocsp_uri"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(uri == api + "/ocsp")
        let status = try openssl.run([
            "ocsp", "-issuer", data + "/ca/issuing.pem", "-cert", directory.file("d.pem"), "-url", uri, "-CAfile", data + "/ca/root.pem",
        ])
        #expect(status.stdout.contains(": good"), "\(status)")
        #expect(!again.stderr.contains("point relying parties"), "\(again.stderr)")
    }

    /// Ctrl-C during an import stops after a whole batch and says how far it got; the same command
    /// finishes the job.
    @Test func anInterruptedImportSaysHowFarItGotAndResumes() throws {
        let fixture = try ESTFixture()
        let rows = (0..<200_000).map { "INT-\($0),secret-int-\($0)-0123456789,,sensor," }
        try fixture.directory.write("big.csv", "id,secret,key_sha256,model,metadata\n" + rows.joined(separator: "\n") + "\n")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: fixture.cli.fleetward.executable)
        process.arguments = ["devices", "import"] + fixture.registry + [fixture.directory.file("big.csv"), "--batch", "500"]
        var environment = ProcessInfo.processInfo.environment
        environment["FLEETWARD_PASSPHRASE"] = CLI.passphrase
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Interrupt once some batches are in.
        let counted = try eventually(timeout: 60) {
            let list = try fixture.cli.run(["devices", "list"] + fixture.registry + ["--state", "allowed", "--limit", "1000", "--json"])
            return list.stdout.contains("INT-")
        }
        #expect(counted, "no batch was committed")
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 130, "exit \(process.terminationStatus): \(stderr)")
        let match = stderr.firstMatch(of: /interrupted: (\d+) of 200000 rows committed/)
        let committed = try #require(match.flatMap { Int($0.1) }, "\(stderr)")
        #expect(stderr.contains("run the same command again to finish"))
        #expect(committed % 500 == 0 && committed > 0 && committed < 200_000, "\(committed)")
        let audit = try fixture.cli.run(["audit", "verify", "--data", fixture.data, "--json"])
        #expect(audit.succeeded, "\(audit)")
        // Running it again finishes: every row is in, the ones before counted as already registered.
        let again = try fixture.cli.run(["devices", "import"] + fixture.registry + [fixture.directory.file("big.csv"), "--json"])
        let summary = (try? JSONSerialization.jsonObject(with: Data(again.stdout.utf8))) as? [String: Any] ?? [:]
        #expect(summary["inserted"] as? Int == 200_000 - committed, "\(again.stdout)")
        #expect(summary["duplicates"] as? Int == committed, "\(again.stdout)")
    }

    /// Every `--json` output is typed: numbers are numbers and flags are booleans, never strings.
    @Test func everyJSONOutputIsTyped() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["JSON-1,json-secret-0123456789,,sensor,site=a"])
        try fixture.directory.write("fw.img", String(repeating: "y", count: 2048))
        let openssl = try Tool.openssl()
        _ = try openssl.run([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", fixture.directory.file("j.key"),
            "-subj", "/", "-out", fixture.directory.file("j.csr"),
        ])
        let data = fixture.data
        let commands: [[String]] = [
            ["ca", "show", "--data", data],
            ["devices", "list", "--data", data],
            ["devices", "show", "--data", data, "JSON-1"],
            ["devices", "import", "--data", data, fixture.directory.file("allow.csv")],
            ["cert", "issue", "--data", data, "--profile", "device", "--csr", fixture.directory.file("j.csr"), "--id", "JSON-2", "--out", fixture.directory.file("j.pem")],
            ["cert", "inspect", fixture.directory.file("j.pem")],
            ["audit", "verify", "--data", data],
            ["release", "publish", "--data", data, fixture.directory.file("fw.img"), "--version", "1.0.0", "--model", "sensor"],
            ["release", "list", "--data", data],
            ["release", "promote", "--data", data, "1.0.0", "--rollout", "50"],
            ["release", "status", "--data", data, "1.0.0"],
        ]
        for arguments in commands {
            let result = try fixture.cli.run(arguments + ["--json"])
            #expect(result.succeeded, "\(arguments.prefix(2)): \(result)")
            guard let value = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) else {
                Issue.record("\(arguments.prefix(2).joined(separator: " ")) --json is not JSON: \(result.stdout)")
                continue
            }
            for problem in Self.untyped(value, path: arguments.prefix(2).joined(separator: " ")) { Issue.record("\(problem)") }
        }
    }

    /// Strings that should have been numbers or booleans: "true"/"false", and all-digit strings
    /// under keys that are counts or sizes (IDs and serials may be digits and stay strings).
    static func untyped(_ value: Any, path: String, key: String = "") -> [String] {
        switch value {
        case let object as [String: Any]:
            return object.flatMap { untyped($0.value, path: path + "." + $0.key, key: $0.key) }
        case let array as [Any]:
            return array.enumerated().flatMap { untyped($0.element, path: path + "[\($0.offset)]", key: key) }
        case let text as String:
            let identifiers: Set<String> = ["id", "serial", "serialNumber", "device", "version", "sha256", "owner", "name", "token", "site"]
            if text == "true" || text == "false" { return ["\(path) is the string \"\(text)\", not a boolean"] }
            if !identifiers.contains(key), !text.isEmpty, text.allSatisfy(\.isNumber) { return ["\(path) is the string \"\(text)\", not a number"] }
            return []
        default:
            return []
        }
    }

    /// `init --host` replaces the default names; a provisioning file whose endpoints the servers'
    /// certificate does not cover is refused, naming the names it does carry and what to give.
    @Test func provisioningConfigChecksTheServersCertificate() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cli = try CLI()
        let data = directory.file("data")
        let created = try cli.run(["init", "--data", data, "--kdf-iterations", "2000", "--host", "fleet.example.com"])
        #expect(created.succeeded && created.stderr.contains("for fleet.example.com (init --host sets these names)"), "\(created)")
        let refused = try cli.run(["provisioning-config", "--data", data, "--est", "127.0.0.1:8443", "--gateway", "127.0.0.1:9443"])
        cli.expectOneLineError(refused, containing: "carries fleet.example.com, not 127.0.0.1")
        #expect(refused.stderr.contains("--server-name fleet.example.com"), "\(refused.stderr)")
        let named = try cli.run([
            "provisioning-config", "--data", data, "--est", "127.0.0.1:8443", "--gateway", "127.0.0.1:9443", "--server-name", "fleet.example.com",
        ])
        #expect(named.succeeded, "\(named)")
    }

    /// The small things: versions, token list/revoke/expiry, list headers and the next-page hint,
    /// required options shown as required, the agent naming every way to give a proof.
    @Test func theSmallThingsANewUserLooksFor() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cli = try CLI()
        let agent = try FleetwardBinary.tool(named: "fleetward-agent")
        #expect(try cli.run(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
        #expect(try agent.run(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)

        let data = directory.file("data")
        #expect(try cli.run(["init", "--data", data, "--kdf-iterations", "2000"]).succeeded)
        let created = try cli.run(["token", "create", "--data", data, "--role", "operator", "--expires-in", "2h", "--json"])
        let token = (try? JSONSerialization.jsonObject(with: Data(created.stdout.utf8))) as? [String: Any] ?? [:]
        let id = try #require(token["id"] as? String, "\(created)")
        #expect(token["expiresAt"] is String, "\(created.stdout)")
        let listed = try cli.run(["token", "list", "--data", data])
        #expect(listed.stdout.hasPrefix("ID\tROLE\tOWNER\tCREATED\tEXPIRES\n") && listed.stdout.contains(id), "\(listed)")
        #expect(!listed.stdout.contains(token["token"] as? String ?? "fwt_"), "a secret was listed")
        #expect(try cli.run(["token", "revoke", "--data", data, id]).succeeded)
        #expect(!(try cli.run(["token", "list", "--data", data]).stdout.contains(id)))
        cli.expectOneLineError(try cli.run(["token", "revoke", "--data", data, "fwt_x"]), containing: "16 lowercase hex digits")

        try directory.write("allow.csv", "id,secret,model\n" + (1...3).map { "L-\($0),list-secret-0123456789-\($0),cam" }.joined(separator: "\n") + "\n")
        let imported = try cli.run(["devices", "import", "--data", data, directory.file("allow.csv")])
        #expect(imported.stdout.contains(" ms;"), "a tiny import reports milliseconds: \(imported.stdout)")
        let page = try cli.run(["devices", "list", "--data", data, "--limit", "2"])
        #expect(page.stdout.split(separator: "\n").first == "ID\tSTATE\tMODEL\tOWNER", "\(page.stdout)")
        #expect(page.stderr.contains("the next page is --after L-2"), "\(page.stderr)")
        let last = try cli.run(["devices", "list", "--data", data, "--after", "L-2"])
        #expect(last.stdout.contains("L-3") && !last.stderr.contains("next page"), "\(last)")

        let help = try cli.run(["release", "publish", "--help"]).stdout
        #expect(help.contains("--model <model> ...") && !help.contains("[--model"), "--model shown as optional: \(help)")
        let noProof = try agent.run(["enroll", "--id", "X-1", "--config", directory.file("none.json")])
        #expect(noProof.stderr.contains("--secret-file") && noProof.stderr.contains("--token-file"), "\(noProof.stderr)")
    }

    /// A PEM CSR sent to EST gets a sentence that says how to make the right body.
    @Test func aPEMCSRToESTSaysToSendBase64DER() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["PEM-1,pem-secret-0123456789,,sensor,"])
        let openssl = try Tool.openssl()
        _ = try openssl.run([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", fixture.directory.file("p.key"),
            "-subj", "/", "-out", fixture.directory.file("p.csr"),
        ])
        let answer = try fixture.curl.run([
            "-s", "--cacert", fixture.data + "/ca/root.pem", "-u", "PEM-1:pem-secret-0123456789", "-H", "Content-Type: application/pkcs10",
            "--data-binary", "@" + fixture.directory.file("p.csr"), "-w", "\n%{http_code}", fixture.est + "/simpleenroll",
        ])
        #expect(answer.stdout.hasSuffix("\n400"), "\(answer)")
        #expect(answer.stdout.contains("send base64 DER (openssl req -in dev.csr -outform DER | base64), not PEM"), "\(answer)")
        #expect(try fixture.state("PEM-1") == "allowed")
    }
}
