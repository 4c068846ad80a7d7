import FleetwardTestSupport
import Foundation
import Testing

/// The MQTT front door against real clients: Debian's mosquitto_pub and mosquitto_sub and
/// paho-mqtt, with device certificates over mutual TLS, MQTT 3.1.1 and 5, in front of the
/// mosquitto that `serve` supervises (a backend reaches that broker on its unix socket).
@Suite(.tags(.slow)) struct MQTTFrontDoorTests {
    struct Clients {
        let pub: Tool
        let sub: Tool
        let fixture: ESTFixture
        let host = "127.0.0.1"
        let port: String
        var socket: String { fixture.data + "/mqtt/broker.sock" }

        init(_ fixture: ESTFixture) throws {
            self.fixture = fixture
            pub = try Tool("mosquitto_pub")
            sub = try Tool("mosquitto_sub")
            port = String(try #require(fixture.mqtt?.split(separator: ":").last))
        }

        func tls(_ device: GatewayTests.Enrolled) -> [String] {
            ["-h", host, "-p", port, "--cafile", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key]
        }
    }

    /// A python with paho-mqtt (Debian's python3-paho-mqtt, or one from PyPI).
    static func paho() throws -> Tool {
        for candidate in ["/usr/bin/python3", "python3"] {
            if let tool = try? Tool(candidate), (try? tool.run(["-c", "import paho.mqtt.client"]))?.succeeded == true { return tool }
        }
        throw Tool.Missing(description: "no python3 with paho-mqtt: scripts/test.sh installs python3-paho-mqtt")
    }

    /// A backend subscriber on the broker's own socket, collecting `count` messages (or until `seconds`).
    static func backend(_ clients: Clients, topic: String, count: Int, seconds: Int = 10) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: clients.sub.executable)
        process.arguments = ["--unix", clients.socket, "-t", topic, "-v", "-C", "\(count)", "-W", "\(seconds)"]
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        try process.run()
        return process
    }

    /// What `process` printed, once it exits; killed after `seconds` (mosquitto_sub's own -W
    /// timer is a SIGALRM, which a child of a thread that blocks signals never gets).
    static func output(_ process: Process, seconds: Double = 20) -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return String(decoding: (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    @Test func devicesPublishAndSubscribeWithinTheirPolicyInBothVersions() throws {
        let fixture = try ESTFixture(mqtt: true)
        let clients = try Clients(fixture)
        let one = try GatewayTests.enroll(fixture, "mq-1")
        _ = try GatewayTests.enroll(fixture, "mq-2")

        for version in ["mqttv311", "mqttv5"] {
            // A backend listens on the broker; the device publishes through the front door.
            let listener = try Self.backend(clients, topic: "devices/+/telemetry", count: 2)
            Thread.sleep(forTimeInterval: 0.3)
            let sent = try clients.pub.run(
                clients.tls(one) + ["-V", version, "-i", "mq-1", "-t", "devices/mq-1/telemetry", "-q", "1", "-m", "t=21 \(version)"])
            #expect(sent.succeeded, "\(version): \(sent)")
            // An empty client id is given the device's ID.
            let assigned = try clients.pub.run(clients.tls(one) + ["-V", version, "-t", "devices/mq-1/telemetry", "-m", "second \(version)"])
            #expect(assigned.succeeded, "\(version) with no client id: \(assigned)")
            let received = Self.output(listener)
            #expect(received.contains("devices/mq-1/telemetry t=21 \(version)"), "\(version): \(received)")
            #expect(received.contains("devices/mq-1/telemetry second \(version)"), "\(version): \(received)")

            // Another device's client id is refused at CONNECT.
            let impostor = try clients.pub.run(clients.tls(one) + ["-V", version, "-i", "mq-2", "-t", "devices/mq-1/x", "-m", "x"])
            #expect(!impostor.succeeded, "\(version): another device's client id was accepted")
            #expect(impostor.stderr.lowercased().contains("identifier"), "\(version): \(impostor.stderr)")

            // Subscribing to another device's topics is refused.
            let snoop = try clients.sub.run(clients.tls(one) + ["-V", version, "-t", "devices/mq-2/#", "-C", "1", "-W", "3"])
            #expect(!snoop.succeeded || snoop.stderr.contains("denied"), "\(version): \(snoop)")
        }

        // A publish outside the policy never reaches the broker (v5: refused with 0x87; the
        // marker after it arrives, so the subscriber was listening).
        let listener = try Self.backend(clients, topic: "devices/#", count: 1, seconds: 8)
        Thread.sleep(forTimeInterval: 0.3)
        _ = try clients.pub.run(clients.tls(one) + ["-V", "mqttv5", "-t", "devices/mq-2/telemetry", "-q", "1", "-m", "forged"])
        _ = try clients.pub.run(clients.tls(one) + ["-V", "mqttv5", "-t", "devices/mq-1/marker", "-m", "marker"])
        let seen = Self.output(listener)
        #expect(seen.contains("devices/mq-1/marker marker") && !seen.contains("forged"), "\(seen)")

        // The device receives commands on its own topic, sent by the backend.
        let commands = Process()
        commands.executableURL = URL(fileURLWithPath: clients.sub.executable)
        commands.arguments = clients.tls(one) + ["-V", "mqttv5", "-t", "devices/mq-1/commands", "-C", "1", "-W", "10", "-q", "1"]
        commands.standardOutput = Pipe()
        commands.standardError = Pipe()
        try commands.run()
        var delivered = false
        for _ in 0..<40 where !delivered {
            Thread.sleep(forTimeInterval: 0.25)
            _ = try clients.pub.run(["--unix", clients.socket, "-t", "devices/mq-1/commands", "-q", "1", "-m", "reboot"])
            delivered = !commands.isRunning
        }
        #expect(Self.output(commands).contains("reboot"))
    }

    @Test func aRevokedDevicesSessionEndsWithinASecondWhileAnothersStays() throws {
        let fixture = try ESTFixture(mqtt: true)
        let clients = try Clients(fixture)
        let doomed = try GatewayTests.enroll(fixture, "mq-doomed")
        let other = try GatewayTests.enroll(fixture, "mq-other")
        let race = try Self.revokeOneOfTwo(
            fixture, port: clients.port, doomed: doomed, other: other, protocolVersion: "5"
        ) {
            let revoke = try fixture.cli.run(["devices", "revoke"] + fixture.registry + ["mq-doomed"])
            #expect(revoke.succeeded, "\(revoke)")
        }
        #expect(race.connected, "\(race.text)")
        #expect(race.seconds < 1.0, "the revoked device's session lasted \(race.seconds) s: \(race.text)")
        #expect(race.reason.lowercased().contains("administrative"), "reason \(race.reason)")
        #expect(race.text.contains("other published connected"), "the other device's session suffered: \(race.text)")
    }

    /// Two paho-mqtt sessions through the front door (MQTT `protocolVersion` "5" or "3.1.1"); once
    /// both are up, `revoke` runs, and the result says how long the first session lasted after it
    /// returned (the revocation committed), with the reason its client was given, and whether the
    /// second one still publishes (`text` holds "other published connected" then).
    static func revokeOneOfTwo(
        _ fixture: ESTFixture, port: String, doomed: GatewayTests.Enrolled, other: GatewayTests.Enrolled, protocolVersion: String,
        revoke: () throws -> Void
    ) throws -> (connected: Bool, seconds: Double, reason: String, text: String) {
        let python = try Self.paho()
        let script = """
            import paho.mqtt.client as mqtt, ssl, sys, time
            root, port = sys.argv[1], int(sys.argv[2])
            version = mqtt.MQTTv5 if sys.argv[9] == "5" else mqtt.MQTTv311
            state = {}
            def session(name, cert, key):
                c = mqtt.Client(client_id=name, protocol=version)
                c.tls_set(ca_certs=root, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
                def on_connect(client, userdata, flags, rc, properties=None):
                    state[name + ".connected"] = str(rc)
                def on_disconnect(client, userdata, rc, properties=None):
                    state.setdefault(name + ".gone", (time.time(), str(rc)))
                c.on_connect, c.on_disconnect = on_connect, on_disconnect
                c.connect("127.0.0.1", port, keepalive=30)
                c.loop_start()
                return c
            a = session(sys.argv[3], sys.argv[4], sys.argv[5])
            b = session(sys.argv[6], sys.argv[7], sys.argv[8])
            for _ in range(200):
                if sys.argv[3] + ".connected" in state and sys.argv[6] + ".connected" in state: break
                time.sleep(0.05)
            print("connected", state.get(sys.argv[3] + ".connected"), state.get(sys.argv[6] + ".connected"), flush=True)
            line = sys.stdin.readline()  # the test revokes, then writes the time it did
            revoked = float(line)
            for _ in range(60):
                if sys.argv[3] + ".gone" in state: break
                time.sleep(0.05)
            gone = state.get(sys.argv[3] + ".gone")
            print("doomed", "%.3f" % (gone[0] - revoked) if gone else "none", gone[1].replace(" ", "_") if gone else "none", flush=True)
            info = b.publish("devices/" + sys.argv[6] + "/alive", "yes", qos=1)
            info.wait_for_publish(timeout=5)
            print("other", "published" if info.is_published() else "not-published", "gone" if sys.argv[6] + ".gone" in state else "connected", flush=True)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python.executable)
        process.arguments = [
            "-c", script, fixture.data + "/ca/root.pem", port, doomed.id, doomed.certificate, doomed.key, other.id, other.certificate,
            other.key, protocolVersion,
        ]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = Pipe()
        try process.run()
        // Wait for both sessions.
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        while !text.contains("\n"), Date() < deadline, process.isRunning {
            text += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        }
        let words = text.split(whereSeparator: \.isWhitespace).map(String.init)
        // 0 is success in both versions ("Success" in paho's 5.0 reason codes).
        let connected = words.count >= 3 && words[0] == "connected" && ["0", "Success"].contains(words[1]) && ["0", "Success"].contains(words[2])
        try revoke()
        // From the moment the revocation is committed (the command has returned).
        let revokedAt = Date().timeIntervalSince1970
        input.fileHandleForWriting.write(Data("\(revokedAt)\n".utf8))
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let all = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard let index = all.firstIndex(of: "doomed"), index + 2 < all.count else { return (connected, 99, "none", text) }
        return (connected, Double(all[index + 1]) ?? 99, all[index + 2], text)
    }

    @Test func aModelsPolicyWidensWhatItsDevicesMayDoAndItsChangeCutsASessionItNoLongerAllows() throws {
        let fixture = try ESTFixture(mqtt: true)
        let clients = try Clients(fixture)
        let device = try GatewayTests.enroll(fixture, "mq-pol")  // model "sensor"

        // The standard policy refuses a publish under fleet/…
        let before = try clients.pub.run(clients.tls(device) + ["-V", "mqttv5", "-t", "fleet/sensor/mq-pol", "-q", "1", "-m", "early"])
        #expect(!before.succeeded || before.stderr.lowercased().contains("not authorized"), "\(before)")

        // A model policy allows it, and still lets the device hear its commands.
        let wide = fixture.directory.file("wide.json")
        try fixture.directory.write(
            "wide.json",
            #"""
            {"statements": [
              {"effect": "allow", "actions": ["connect"]},
              {"effect": "allow", "actions": ["publish"], "topics": ["fleet/${device.model}/${device.id}"]},
              {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/commands"]}
            ]}
            """#)
        let set = try fixture.cli.run(["mqtt-policy", "set"] + fixture.registry + ["model:sensor", wide])
        #expect(set.succeeded, "\(set)")
        let listener = try Self.backend(clients, topic: "fleet/#", count: 1, seconds: 8)
        Thread.sleep(forTimeInterval: 0.3)
        let sent = try clients.pub.run(clients.tls(device) + ["-V", "mqttv5", "-t", "fleet/sensor/mq-pol", "-q", "1", "-m", "wide"])
        #expect(sent.succeeded, "\(sent)")
        #expect(Self.output(listener).contains("fleet/sensor/mq-pol wide"))
        // A typo in a policy is refused, naming it, and changes nothing.
        try fixture.directory.write("typo.json", #"{"statements": [{"Effect": "allow", "actions": ["connect"]}]}"#)
        let typo = try fixture.cli.run(["mqtt-policy", "set"] + fixture.registry + ["model:sensor", fixture.directory.file("typo.json")])
        #expect(!typo.succeeded && typo.stderr.contains("Effect"), "\(typo)")
        let shown = try fixture.cli.run(["mqtt-policy", "show"] + fixture.registry + ["model:sensor"])
        #expect(shown.stdout.contains("fleet/${device.model}/${device.id}"), "\(shown)")

        // A session holding the commands subscription…
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: clients.sub.executable)
        holder.arguments = clients.tls(device) + ["-V", "mqttv5", "-t", "devices/mq-pol/commands", "-W", "30"]
        holder.standardOutput = Pipe()
        holder.standardError = Pipe()
        try holder.run()
        Thread.sleep(forTimeInterval: 1.5)
        #expect(holder.isRunning)
        // …ends within a second of a policy that no longer allows it.
        try fixture.directory.write(
            "narrow.json",
            #"{"statements": [{"effect": "allow", "actions": ["connect"]}, {"effect": "allow", "actions": ["publish"], "topics": ["fleet/#"]}]}"#)
        let narrow = try fixture.cli.run(["mqtt-policy", "set"] + fixture.registry + ["model:sensor", fixture.directory.file("narrow.json")])
        #expect(narrow.succeeded, "\(narrow)")
        let changed = Date()
        while holder.isRunning, Date().timeIntervalSince(changed) < 10 { Thread.sleep(forTimeInterval: 0.02) }
        let lasted = Date().timeIntervalSince(changed)
        #expect(!holder.isRunning && lasted < 1.0, "the session outlived the policy change by \(lasted) s")
        if holder.isRunning { holder.terminate() }

        // Both changes are in the audit log, and the API shows the policy now in force.
        let (status, page) = try fixture.apiCall("GET", "/audit?limit=500", token: fixture.admin)
        let actions = (page["entries"] as? [[String: Any]] ?? []).compactMap { $0["action"] as? String }
        #expect(status == 200 && actions.filter { $0 == "mqtt-policy.set" }.count == 2, "\(status) \(actions)")
        let (shownStatus, policy) = try fixture.apiCall("GET", "/mqtt/policies/model:sensor", token: fixture.admin)
        #expect(shownStatus == 200 && policy["scope"] as? String == "model:sensor", "\(policy)")
    }

    /// A mosquitto on a loopback TCP port, as a broker two nodes share.
    final class SharedBroker {
        private(set) var process: Process?
        private(set) var port = 0

        init(_ directory: TemporaryDirectory) throws {
            let mosquitto = try (try? Tool("mosquitto")) ?? Tool("/usr/sbin/mosquitto")
            for _ in 0..<20 where process == nil {
                let candidate = Int.random(in: 20_000...60_000)
                try directory.write(
                    "broker.conf", "listener \(candidate) 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
                let started = Process()
                started.executableURL = URL(fileURLWithPath: mosquitto.executable)
                started.arguments = ["-c", directory.file("broker.conf")]
                started.standardOutput = FileHandle.nullDevice
                started.standardError = FileHandle.nullDevice
                try started.run()
                Thread.sleep(forTimeInterval: 0.3)
                if started.isRunning {
                    process = started
                    port = candidate
                }
            }
            guard process != nil else { throw Tool.Missing(description: "mosquitto did not start on a loopback port") }
        }

        func stop() {
            // SIGKILL: a child of a test thread may have SIGTERM blocked.
            if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// Two `fleetward serve` nodes on one PostgreSQL registry and one broker: a message published
    /// through node A reaches a subscriber through node B, and a revocation made through node B
    /// ends the device's session held on node A within a second.
    @Test func twoNodesShareTheBrokerAndARevocationOnOneCutsTheSessionOnTheOther() throws {
        let database = try TestPostgres.makeDatabase()
        defer { database.drop() }
        let scratch = try TemporaryDirectory(prefix: "fleetward-broker")
        defer { scratch.remove() }
        let broker = try SharedBroker(scratch)
        defer { broker.stop() }
        let brokerURL = "mqtt://127.0.0.1:\(broker.port)"
        let fixture = try ESTFixture(serveArguments: ["--mqtt-broker", brokerURL], database: database.url, mqtt: true)
        let second = fixture.directory.file("node-b")
        try FileManager.default.createDirectory(atPath: second, withIntermediateDirectories: true)
        for item in ["ca", "tls", "fleetward.json"] {
            try FileManager.default.copyItem(atPath: fixture.data + "/" + item, toPath: second + "/" + item)
        }
        let nodeB = try RunningServer(
            executable: fixture.cli.fleetward.executable,
            arguments: [
                "serve", "--data", second, "--database", database.url, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0",
                "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--mqtt-broker", brokerURL,
            ],
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: fixture.directory.path, expectedListeners: 4)
        defer { nodeB.stop() }
        let portA = String(try #require(fixture.mqtt?.split(separator: ":").last))
        let portB = String(try #require(nodeB.listeners["MQTT"]?.split(separator: ":").last))
        let sub = try Tool("mosquitto_sub")
        let pub = try Tool("mosquitto_pub")

        let talker = try GatewayTests.enroll(fixture, "mq-node-talker")
        let listener = try GatewayTests.enroll(fixture, "mq-node-listener")
        // Both may talk on their model's channel.
        try fixture.directory.write(
            "fleet.json",
            #"{"statements": [{"effect": "allow", "actions": ["connect"]}, {"effect": "allow", "actions": ["publish", "subscribe", "receive"], "topics": ["fleet/${device.model}/#"]}]}"#)
        #expect(try fixture.cli.run(["mqtt-policy", "set"] + fixture.registry + ["model:sensor", fixture.directory.file("fleet.json")]).succeeded)
        func tls(_ device: GatewayTests.Enrolled, _ port: String) -> [String] {
            ["-h", "127.0.0.1", "-p", port, "--cafile", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key, "-V", "mqttv5"]
        }

        // The listener subscribes through node B; the talker publishes through node A.
        let receiving = Process()
        receiving.executableURL = URL(fileURLWithPath: sub.executable)
        receiving.arguments = tls(listener, portB) + ["-t", "fleet/sensor/#", "-C", "1", "-v"]
        receiving.standardOutput = Pipe()
        receiving.standardError = Pipe()
        try receiving.run()
        for _ in 0..<30 where receiving.isRunning {
            let sent = try pub.run(tls(talker, portA) + ["-t", "fleet/sensor/hello", "-q", "1", "-m", "across nodes"])
            #expect(sent.succeeded, "\(sent)")
            Thread.sleep(forTimeInterval: 0.3)
        }
        #expect(Self.output(receiving, seconds: 1).contains("fleet/sensor/hello across nodes"))

        // The talker holds a session on node A; it is revoked through node B's API.
        let held = Process()
        held.executableURL = URL(fileURLWithPath: sub.executable)
        held.arguments = tls(talker, portA) + ["-t", "fleet/sensor/#"]
        held.standardOutput = Pipe()
        held.standardError = Pipe()
        try held.run()
        Thread.sleep(forTimeInterval: 1.5)
        #expect(held.isRunning)
        let apiB = try #require(nodeB.listeners["management API"]) + "/api/v1"
        let revoke = try fixture.curl.run(
            ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(fixture.admin)", apiB + "/devices/mq-node-talker/revoke"])
        #expect(revoke.stdout == "200", "\(revoke)")
        let revoked = Date()
        while held.isRunning, Date().timeIntervalSince(revoked) < 10 { Thread.sleep(forTimeInterval: 0.02) }
        let lasted = Date().timeIntervalSince(revoked)
        #expect(!held.isRunning && lasted < 1.0, "node A kept the revoked device's session \(lasted) s")
        if held.isRunning { kill(held.processIdentifier, SIGKILL) }
        #expect(fixture.server.stderr.contains("gateway closed a device connection"), "\(fixture.server.stderr.suffix(500))")
    }
}
