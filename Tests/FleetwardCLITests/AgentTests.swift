import FleetwardTestSupport
import Foundation
import Testing

/// `fleetward-agent` against a real `fleetward serve`: a device enrolls by each flow with a key
/// made and sealed on the device, sends signed telemetry, renews, and is cut off when suspended,
/// saying why; a tampered store and untrusted servers are refused with one clear line.
@Suite(.tags(.slow)) struct AgentTests {
    /// One device's agent: its provisioning file, credential directory and device-unique key.
    struct Device {
        let agent: Tool
        let directory: TemporaryDirectory
        let name: String
        var config: String

        var credentials: String { directory.file("\(name)/credentials") }
        var uniqueKey: String { directory.file("\(name)-partition/device.key") }

        var options: [String] { ["--config", config, "--credentials", credentials, "--unique-key", uniqueKey] }

        @discardableResult
        func run(_ command: String, _ arguments: [String] = [], timeout: Double = 60) throws -> Tool.Result {
            try agent.run([command] + options + arguments, timeout: timeout)
        }
    }

    /// An agent command running in the background, its stdout and stderr in files.
    struct Background {
        let process = Process()
        let output: String
        let errors: String

        init(_ device: Device, _ arguments: [String]) throws {
            let name = UUID().uuidString.prefix(8)
            output = device.directory.file("\(name).out")
            errors = device.directory.file("\(name).err")
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            _ = FileManager.default.createFile(atPath: errors, contents: nil)
            process.executableURL = URL(fileURLWithPath: device.agent.executable)
            process.arguments = arguments
            let out = FileHandle(forWritingAtPath: output)
            let err = FileHandle(forWritingAtPath: errors)
            process.standardOutput = out
            process.standardError = err
            process.standardInput = FileHandle.nullDevice
            try process.launchSerialized()
            try? out?.close()
            try? err?.close()
        }

        func log() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }

        /// Whether `fragment` shows in stdout within `seconds` (false at once if the process ended without it).
        func wait(for fragment: String, seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline, process.isRunning {
                if log().contains(fragment) { return true }
                Thread.sleep(forTimeInterval: 0.1)
            }
            return log().contains(fragment)
        }

        func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// `HOST:PORT` of a listener URL.
    static func endpoint(_ url: String) -> String {
        String(url.split(separator: "/")[1])
    }

    static func provisioning(_ fixture: ESTFixture, serverName: String? = nil, est: String? = nil) throws -> String {
        let mqtt = fixture.mqtt.map { ["--mqtt", endpoint($0)] } ?? []
        let file = fixture.directory.file("provisioning-\(UUID().uuidString.prefix(6)).json")
        let result = try fixture.cli.run(
            [
                "provisioning-config", "--data", fixture.data, "--est", est ?? endpoint(fixture.est), "--gateway",
                endpoint(fixture.gateway),
                "--out", file,
            ] + mqtt + (serverName.map { ["--server-name", $0, "--skip-certificate-check"] } ?? []))
        #expect(result.succeeded, "\(result)")
        return file
    }

    static func device(_ fixture: ESTFixture, _ name: String) throws -> Device {
        Device(
            agent: try FleetwardBinary.tool(named: "fleetward-agent"), directory: fixture.directory, name: name,
            config: try provisioning(fixture))
    }

    /// Asserts one `fleetward-agent: error:` line containing `fragment`, and the exit code.
    static func expectError(
        _ result: Tool.Result, exit: Int32, containing fragment: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(result.status == exit, "exit \(result.status), expected \(exit): \(result)", sourceLocation: sourceLocation)
        #expect(result.stderrLines.count == 1, "stderr was not one line: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("fleetward-agent: error: "), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(fragment), "'\(fragment)' not in: \(result.stderr)", sourceLocation: sourceLocation)
    }

    static func json(_ result: Tool.Result) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
    }

    /// Every file under `path`, recursively, with its bytes.
    static func files(_ path: String) -> [String: Data] {
        var found: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: path)
        while let name = enumerator?.nextObject() as? String {
            if let data = FileManager.default.contents(atPath: path + "/" + name) { found[name] = data }
        }
        return found
    }

    @Test func aDeviceEnrollsByEachFlowAndSendsSignedTelemetry() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["agent-secret,secret-agent-secret-0123456789,,sensor,", "agent-token,secret-agent-token-0123456789,,lock,"])

        // 1. Factory secret (from a file, out of the process list).
        let first = try Self.device(fixture, "first")
        try fixture.directory.write("first-secret", "secret-agent-secret-0123456789\n")
        let wrong = try first.run("enroll", ["--id", "agent-secret", "--secret", "guessed-secret-0123456789"])
        // A secret on the command line is visible to every user of the host: the agent says so.
        #expect(wrong.status == 4, "\(wrong)")
        #expect(wrong.stderrLines.count == 2, "\(wrong.stderr)")
        #expect(wrong.stderrLines.first?.contains("warning: --secret on the command line is visible to other users") == true)
        #expect(wrong.stderrLines.last?.hasPrefix("fleetward-agent: error: ") == true && wrong.stderr.contains("simpleenroll refused (401)"))
        let enrolled = try first.run("enroll", ["--id", "agent-secret", "--secret-file", fixture.directory.file("first-secret"), "--json"])
        #expect(enrolled.succeeded, "\(enrolled)")
        let status = Self.json(try first.run("status", ["--json"]))
        #expect(status["device"] as? String == "agent-secret")
        #expect(status["expired"] as? Bool == false)
        let serial = try #require(status["serial"] as? String)
        let (_, certificates) = try fixture.apiCall("GET", "/devices/agent-secret/certificates", token: fixture.admin)
        let recorded = (certificates["certificates"] as? [[String: Any]])?.compactMap { $0["serial"] as? String } ?? []
        #expect(recorded.map { $0.lowercased() } == [serial], "the certificate the agent holds is the one on record: \(certificates)")
        #expect(try fixture.state("agent-secret") == "active")

        let sent = try first.run("send", [#"{"temperature": 20.5}"#])
        #expect(sent.succeeded && sent.stdout.contains("as agent-secret"), "\(sent)")
        let (_, telemetry) = try fixture.apiCall("GET", "/devices/agent-secret/telemetry", token: fixture.admin)
        let messages = telemetry["telemetry"] as? [[String: Any]] ?? []
        #expect(messages.count == 1 && (messages.first?["body"] as? String)?.contains("20.5") == true, "\(telemetry)")
        Self.expectError(try first.run("send", ["[1]"]), exit: 2, containing: "one JSON object")

        // Nothing in the credential directory is a readable key or names the device.
        let stored = Self.files(first.credentials)
        #expect(stored.keys.contains("credential.sealed") && stored.keys.contains { $0.hasPrefix("keys/") }, "\(stored.keys)")
        for (name, bytes) in stored {
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(!text.contains("PRIVATE KEY") && !text.contains("agent-secret"), "\(name) is not sealed")
        }

        // 2. An owner's one-time token: the device learns its owner from the gateway.
        let alice = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "owner", "--owner", "alice"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (_, code) = try fixture.apiCall("POST", "/devices/agent-token/claim-code", token: fixture.admin)
        let claimCode = try #require(code["claimCode"] as? String)
        #expect(
            try fixture.apiCall("POST", "/claims", token: alice, json: #"{"device":"agent-token","claimCode":"\#(claimCode)"}"#).0 == 200)
        let (_, tokenBody) = try fixture.apiCall("POST", "/devices/agent-token/enrollment-tokens", token: alice, json: "{}")
        let token = try #require(tokenBody["token"] as? String)
        try fixture.directory.write("agent-token.token", token + "\n")
        let tokenFile = fixture.directory.file("agent-token.token")
        let second = try Self.device(fixture, "second")
        let byToken = try second.run("enroll", ["--id", "agent-token", "--token-file", tokenFile])
        #expect(byToken.succeeded && byToken.stdout.contains("owner alice"), "\(byToken)")
        #expect(Self.json(try second.run("status", ["--json"]))["owner"] as? String == "alice")
        let replay = try Self.device(fixture, "replay")
        Self.expectError(try replay.run("enroll", ["--id", "agent-token", "--token-file", tokenFile]), exit: 4, containing: "401")

        // 3. Birth certificate: the birth key is made on the device, the factory signs its CSR.
        let third = try Self.device(fixture, "third")
        let request = try third.run(
            "factory-request", ["--id", "agent-birth", "--out", fixture.directory.file("factory-csr/agent-birth.csr")])
        #expect(request.status != 0, "no such directory yet")
        try FileManager.default.createDirectory(atPath: fixture.directory.file("factory-csr"), withIntermediateDirectories: true)
        #expect(
            try third.run("factory-request", ["--id", "agent-birth", "--out", fixture.directory.file("factory-csr/agent-birth.csr")])
                .succeeded)
        let issued = try fixture.cli.run([
            "factory", "issue", "--data", fixture.data, "--csr-dir", fixture.directory.file("factory-csr"), "--out",
            fixture.directory.file("factory-certs"),
        ])
        #expect(issued.succeeded, "\(issued)")
        // A birth certificate for another key is refused before anything is sent.
        let stranger = try fixture.birthCertificate("agent-stranger")
        Self.expectError(
            try third.run("enroll", ["--id", "agent-birth", "--birth-cert", stranger.certificate]), exit: 1, containing: "another key")
        let byBirth = try third.run(
            "enroll", ["--id", "agent-birth", "--birth-cert", fixture.directory.file("factory-certs/agent-birth.pem")])
        #expect(byBirth.succeeded, "\(byBirth)")
        #expect(try fixture.state("agent-birth") == "active")
        #expect(try third.run("send", [#"{"born": true}"#]).succeeded)
    }

    @Test func runRenewsInTimeAndStopsSayingWhyWhenTheDeviceIsSuspended() throws {
        // 60-second certificates: renewal is due 20 s after issuance (two thirds of notBefore−60 s … +60 s).
        let fixture = try ESTFixture(serveArguments: ["--device-lifetime", "60s"])
        try fixture.allow(["agent-run,secret-agent-run-0123456789,,sensor,"])
        let device = try Self.device(fixture, "run")
        #expect(try device.run("enroll", ["--id", "agent-run", "--secret", "secret-agent-run-0123456789"]).succeeded)
        let before = try #require(Self.json(try device.run("status", ["--json"]))["serial"] as? String)

        let running = try Background(device, ["run"] + device.options + ["--interval", "1", "--duration", "120"])
        defer { running.stop() }
        let process = running.process
        func log() -> String { running.log() }
        func wait(for fragment: String, seconds: Double) -> Bool { running.wait(for: fragment, seconds: seconds) }
        let errors = running.errors
        #expect(wait(for: "connected to the gateway as agent-run", seconds: 20), "\(log())")
        #expect(wait(for: "renewed: certificate", seconds: 45), "no renewal: \(log())")
        #expect(wait(for: "connected to the gateway as agent-run", seconds: 10))
        let after = try #require(Self.json(try device.run("status", ["--json"]))["serial"] as? String)
        #expect(after != before, "the stored credential switched to the renewed certificate")
        let (_, certificates) = try fixture.apiCall("GET", "/devices/agent-run/certificates", token: fixture.admin)
        #expect((certificates["certificates"] as? [[String: Any]])?.count == 2, "\(certificates)")
        let (_, telemetry) = try fixture.apiCall("GET", "/devices/agent-run/telemetry?limit=100", token: fixture.admin)
        #expect((telemetry["telemetry"] as? [[String: Any]] ?? []).count >= 10, "a message a second: \(telemetry)")

        #expect(try fixture.cli.run(["devices", "suspend"] + fixture.registry + ["agent-run"]).succeeded)
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!process.isRunning, "the agent kept running after its device was suspended: \(log())")
        if !process.isRunning {
            #expect(process.terminationStatus == 4)
        }
        let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        // Whether the cut arrived on a live connection or on the next reconnect (a renewal is due
        // every 20 s here), the agent stops with the server's reason.
        #expect(stderr.hasPrefix("fleetward-agent: error: the gateway refused this device"), "\(stderr)")
        #expect(stderr.contains("suspended"), "the agent says why: \(stderr)")
    }

    @Test func theAgentPublishesSignedTelemetryTakesCommandsOverMQTTAndStopsWhenRevoked() throws {
        let fixture = try ESTFixture(mqtt: true)
        try fixture.allow(["agent-mq,secret-agent-mq-0123456789,,sensor,"])
        let device = try Self.device(fixture, "mq")
        #expect(try device.run("enroll", ["--id", "agent-mq", "--secret", "secret-agent-mq-0123456789"]).succeeded)
        let sub = try Tool("mosquitto_sub")
        let pub = try Tool("mosquitto_pub")
        let socket = fixture.data + "/mqtt/broker.sock"

        // A backend on the broker sees the message and the device's signature as user properties.
        let backend = Process()
        backend.executableURL = URL(fileURLWithPath: sub.executable)
        backend.arguments = ["--unix", socket, "-V", "mqttv5", "-t", "devices/agent-mq/telemetry", "-C", "1", "-W", "15", "-F", "%t %p %P"]
        backend.standardOutput = Pipe()
        backend.standardError = Pipe()
        try backend.run()
        // Until the backend's subscription is in place and it has the message.
        for _ in 0..<20 where backend.isRunning {
            let published = try device.agent.run(["mqtt", "publish"] + device.options + ["--message", #"{"t":21}"#])
            #expect(published.succeeded && published.stdout.contains("devices/agent-mq/telemetry"), "\(published)")
            Thread.sleep(forTimeInterval: 0.5)
        }
        let seen = MQTTFrontDoorTests.output(backend, seconds: 1)
        #expect(seen.contains(#"devices/agent-mq/telemetry {"t":21}"#), "\(seen)")
        #expect(seen.contains("Fleetward-Signature"), "the signature travels as a user property: \(seen)")
        // Outside the device's policy: one clear refusal.
        let refused = try device.agent.run(["mqtt", "publish"] + device.options + ["--topic", "devices/other/telemetry", "--message", "x"])
        Self.expectError(refused, exit: 4, containing: "not authorized")

        // `mqtt run`: telemetry every half second, commands printed as they come.
        let running = try Background(device, ["mqtt", "run"] + device.options + ["--interval", "0.5", "--duration", "60"])
        defer { running.stop() }
        let process = running.process
        func log() -> String { running.log() }
        func wait(for fragment: String, seconds: Double) -> Bool { running.wait(for: fragment, seconds: seconds) }
        let errors = running.errors
        #expect(wait(for: "connected over MQTT as agent-mq", seconds: 20), "\(log())")
        #expect(wait(for: "published telemetry", seconds: 10), "\(log())")
        var commanded = false
        for _ in 0..<20 where !commanded {
            _ = try pub.run(["--unix", socket, "-V", "mqttv5", "-t", "devices/agent-mq/commands", "-q", "1", "-m", "reboot"])
            commanded = wait(for: "command devices/agent-mq/commands reboot", seconds: 0.5)
        }
        #expect(commanded, "\(log())")

        // Revoked: the session is cut, the reconnect refused, EST names the reason, the agent stops.
        #expect(try fixture.cli.run(["devices", "revoke"] + fixture.registry + ["agent-mq"]).succeeded)
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!process.isRunning, "the agent kept running after its device was revoked: \(log())")
        if !process.isRunning { #expect(process.terminationStatus == 4, "\(log())") }
        let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        #expect(stderr.hasPrefix("fleetward-agent: error: "), "\(stderr)")
        #expect(stderr.contains("revoked"), "the agent says why: \(stderr) \(log())")
    }

    @Test func aTamperedStoreAndServersThatAreNotThePinnedOneAreRefusedClearly() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["agent-tamper,secret-agent-tamper-0123456789,,sensor,"])
        let device = try Self.device(fixture, "tamper")
        #expect(try device.run("enroll", ["--id", "agent-tamper", "--secret", "secret-agent-tamper-0123456789"]).succeeded)

        // A man in the middle with a valid certificate from the pinned CA, but not for the name
        // the device was programmed with.
        var misnamed = device
        misnamed.config = try Self.provisioning(fixture, serverName: "est.fleet.example")
        let wrongName = try misnamed.run("send", [#"{"a":1}"#])
        Self.expectError(wrongName, exit: 5, containing: "not for est.fleet.example")
        // It names what the certificate is for, so the operator sees which --server-name fits.
        #expect(wrongName.stderr.contains("a certificate for localhost, 127.0.0.1, ::1"), "\(wrongName.stderr)")

        try fixture.directory.write("tamper-secret", "secret-agent-tamper-0123456789\n")
        // A server from another CA (openssl s_server with its own CA) where EST should be.
        let impostor = try OpenSSLImpostor(openssl: fixture.cli.openssl, directory: fixture.directory)
        defer { impostor.stop() }
        var elsewhere = try Self.device(fixture, "elsewhere")
        elsewhere.config = try Self.provisioning(fixture, est: "127.0.0.1:\(impostor.port)")
        Self.expectError(
            try elsewhere.run("enroll", ["--id", "agent-tamper", "--secret-file", fixture.directory.file("tamper-secret")]), exit: 5,
            containing: "does not chain to the pinned root")
        #expect(!FileManager.default.fileExists(atPath: elsewhere.credentials + "/credential.sealed"), "nothing stored")
        #expect(
            (try? FileManager.default.contentsOfDirectory(atPath: elsewhere.credentials + "/keys"))?.isEmpty ?? true, "no key left behind")

        // Nothing listening.
        var nowhere = device
        nowhere.config = try Self.provisioning(fixture, est: "127.0.0.1:1")
        Self.expectError(try nowhere.run("renew"), exit: 3, containing: "cannot reach 127.0.0.1:1")

        // A swapped device-unique key opens nothing.
        try FileManager.default.createDirectory(atPath: fixture.directory.file("swapped"), withIntermediateDirectories: true)
        try Data((0..<32).map { _ in UInt8.random(in: 0...255) }).write(
            to: URL(fileURLWithPath: fixture.directory.file("swapped/device.key")))
        chmod(fixture.directory.file("swapped/device.key"), 0o600)
        let swappedResult = try device.agent.run(
            [
                "status", "--config", device.config, "--credentials", device.credentials, "--unique-key",
                fixture.directory.file("swapped/device.key"),
            ])
        Self.expectError(swappedResult, exit: 6, containing: "sealed under another device-unique key")
        // A missing device-unique key beside existing credentials (partition not mounted) is not replaced.
        let unmounted = try device.agent.run(
            [
                "enroll", "--config", device.config, "--credentials", device.credentials, "--unique-key",
                fixture.directory.file("unmounted/device.key"), "--id", "agent-tamper", "--secret-file", fixture.directory.file("tamper-secret"),
            ])
        Self.expectError(unmounted, exit: 6, containing: "is missing but")
        #expect(!FileManager.default.fileExists(atPath: fixture.directory.file("unmounted/device.key")))

        // One flipped byte in the sealed key file.
        let keys = try FileManager.default.contentsOfDirectory(atPath: device.credentials + "/keys")
        let keyFile = device.credentials + "/keys/" + (try #require(keys.first))
        var sealed = try Data(contentsOf: URL(fileURLWithPath: keyFile))
        sealed[sealed.count - 5] ^= 0x04
        try sealed.write(to: URL(fileURLWithPath: keyFile))
        Self.expectError(try device.run("status"), exit: 6, containing: "cannot be opened")
        Self.expectError(try device.run("send", [#"{"a":1}"#]), exit: 6, containing: "cannot be opened")
    }

    @Test func simulateRunsTwoThousandDevicesWithoutAnError() throws {
        let fixture = try ESTFixture()
        let rows = (0..<2000).map { "sim-\($0),secret-sim-\($0)-0123456789,,sensor," }
        try fixture.allow(rows)
        let config = try Self.provisioning(fixture)
        let agent = try FleetwardBinary.tool(named: "fleetward-agent")
        let result = try agent.run(
            [
                "simulate", "--config", config, "--allow-list", fixture.directory.file("allow.csv"), "--devices", "2000", "--rate", "400",
                "--duration", "4", "--interval", "5", "--json",
            ], timeout: 300)
        #expect(result.succeeded, "\(result.stdout)\n\(result.stderr.suffix(2000))")
        let summary = Self.json(result)
        #expect(summary["enrolled"] as? Int == 2000, "\(result.stdout)")
        #expect(summary["connections"] as? Int == 2000)
        #expect(summary["refused"] as? Int == 0 && summary["errors"] as? Int == 0)
        #expect(
            (summary["messages"] as? Int ?? 0) >= 2000,
            "every device sent at least once (each within its first 5 s, and all hold 4 s after the last connected)")
        let latency = summary["latencyMilliseconds"] as? [String: [String: Any]] ?? [:]
        #expect(Set(latency.keys) == ["enroll", "connect", "telemetry"])
        #expect(result.stderr.contains("enrolled"), "live counts on stderr")
        let (_, telemetry) = try fixture.apiCall("GET", "/devices/sim-1999/telemetry", token: fixture.admin)
        #expect(!(telemetry["telemetry"] as? [[String: Any]] ?? []).isEmpty)
    }
}

/// `openssl s_server` with a CA of its own: a server that is not the pinned one.
final class OpenSSLImpostor {
    let process: Process
    let port: Int

    init(openssl: Tool, directory: TemporaryDirectory) throws {
        func run(_ arguments: [String]) throws {
            let result = try openssl.run(arguments, currentDirectory: directory.path)
            guard result.succeeded else { throw Tool.Missing(description: "openssl: \(result.stderr)") }
        }
        try run([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "impostor.key", "-out",
            "impostor.pem", "-subj", "/CN=127.0.0.1", "-days", "30", "-addext", "subjectAltName=IP:127.0.0.1",
        ])
        (process, port) = try Listening.start("openssl s_server") { candidate in
            (
                openssl.executable,
                [
                    "s_server", "-accept", "127.0.0.1:\(candidate)", "-cert", directory.file("impostor.pem"), "-key",
                    directory.file("impostor.key"), "-www", "-quiet",
                ]
            )
        }
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
