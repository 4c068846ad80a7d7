import FleetwardTestSupport
import Foundation
import Testing

/// The MQTT front door in front of a second, different broker: RabbitMQ's MQTT plugin (Debian's
/// rabbitmq-server 3.10, MQTT 3.1.1), which authenticates every session. `serve` is given the
/// broker with `--mqtt-broker` and a password with `--mqtt-broker-password-file`; RabbitMQ knows
/// the devices as users, so a session it admits proves the user name it got was the device ID.
@Suite(.tags(.slow)) struct RabbitMQTests {
    /// A private RabbitMQ node (its own epmd, ports, data and users), stopped by PID.
    final class Node {
        static let server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        let directory: TemporaryDirectory
        let mqttPort = Listening.candidatePort()
        let password = "broker-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        private var processes: [Process] = []

        init(users: [String]) throws {
            guard FileManager.default.isExecutableFile(atPath: Self.server) else {
                throw Tool.Missing(description: "rabbitmq-server is not installed (scripts/test.sh installs it)")
            }
            directory = try TemporaryDirectory(prefix: "fleetward-rabbitmq")
            let epmdPort = Listening.candidatePort()
            // Users with RabbitMQ's salted SHA-256 password hashes, loaded at boot.
            let definitions = try Tool("/usr/bin/python3").run([
                "-c",
                """
                import base64, hashlib, json, os, sys
                password, users = sys.argv[1], sys.argv[2:]
                def digest():
                    salt = os.urandom(4)
                    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()
                print(json.dumps({
                    "users": [{"name": u, "password_hash": digest(), "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""} for u in users],
                    "vhosts": [{"name": "/"}],
                    "permissions": [{"user": u, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} for u in users]}))
                """,
                password,
            ] + users)
            try #require(definitions.succeeded, "\(definitions)")
            try directory.write("definitions.json", definitions.stdout)
            try directory.write(
                "rabbitmq.conf",
                """
                listeners.tcp.default = 127.0.0.1:\(Listening.candidatePort())
                mqtt.listeners.tcp.default = 127.0.0.1:\(mqttPort)
                mqtt.allow_anonymous = false
                loopback_users = none
                load_definitions = \(directory.file("definitions.json"))
                log.console = true
                log.file = false

                """)
            try directory.write("enabled_plugins", "[rabbitmq_mqtt].\n")
            let environment = [
                "HOME": directory.path, "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                "RABBITMQ_NODENAME": "fleetward\(mqttPort)@localhost", "RABBITMQ_DIST_PORT": "\(Listening.candidatePort())",
                "RABBITMQ_MNESIA_BASE": directory.file("mnesia"), "RABBITMQ_LOG_BASE": directory.file("log"),
                "RABBITMQ_CONFIG_FILE": directory.file("rabbitmq.conf"), "RABBITMQ_ENABLED_PLUGINS_FILE": directory.file("enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": directory.file("plugins"), "RABBITMQ_PID_FILE": directory.file("beam.pid"),
                // Its own epmd, a child of this test, not a daemon left behind.
                "ERL_EPMD_PORT": "\(epmdPort)", "ERL_EPMD_ADDRESS": "127.0.0.1", "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
            ]
            try start("/usr/bin/epmd", ["-port", "\(epmdPort)", "-address", "127.0.0.1"], environment: environment, log: "epmd.log")
            try start(Self.server, [], environment: environment, log: "rabbitmq.log")
            let probe = try Tool("/bin/bash")
            let deadline = Date().addingTimeInterval(90)
            while Date() < deadline, processes.allSatisfy(\.isRunning) {
                if try probe.run(["-c", "exec 3<>/dev/tcp/127.0.0.1/\(mqttPort)"]).succeeded { return }
                Thread.sleep(forTimeInterval: 0.5)
            }
            throw Tool.TimedOut(description: "RabbitMQ did not open MQTT on \(mqttPort): \(log.suffix(2000))")
        }

        var log: String { (try? String(contentsOfFile: directory.file("rabbitmq.log"), encoding: .utf8)) ?? "" }

        private func start(_ executable: String, _ arguments: [String], environment: [String: String], log: String) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = environment
            process.currentDirectoryURL = URL(fileURLWithPath: directory.path)
            FileManager.default.createFile(atPath: directory.file(log), contents: nil)
            let output = FileHandle(forWritingAtPath: directory.file(log))
            process.standardOutput = output
            process.standardError = output
            process.standardInput = FileHandle.nullDevice
            try process.launchSerialized()
            try? output?.close()
            processes.append(process)
        }

        deinit {
            // Ours alone, by PID: the Erlang VM (its PID file), the script that started it, epmd.
            if let text = try? String(contentsOfFile: directory.file("beam.pid"), encoding: .utf8),
                let beam = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(beam, SIGKILL)
            }
            for process in processes.reversed() where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            directory.remove()
        }
    }

    @Test func devicesPublishAndSubscribeThroughTheFrontDoorToRabbitMQAndARevokedOneIsCut() throws {
        let node = try Node(users: ["rb-one", "rb-two", "backend", "fleetward-updates"])
        try node.directory.write("broker-password", node.password + "\n")
        let fixture = try ESTFixture(
            serveArguments: [
                "--mqtt-broker", "mqtt://127.0.0.1:\(node.mqttPort)", "--mqtt-broker-password-file", node.directory.file("broker-password"),
            ], mqtt: true)
        let clients = try MQTTFrontDoorTests.Clients(fixture)
        let one = try GatewayTests.enroll(fixture, "rb-one")
        let two = try GatewayTests.enroll(fixture, "rb-two")
        let stranger = try GatewayTests.enroll(fixture, "rb-stranger")  // enrolled, but no RabbitMQ user
        let backend = ["-h", "127.0.0.1", "-p", "\(node.mqttPort)", "-u", "backend", "-P", node.password]
        func subscriber(_ arguments: [String]) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: clients.sub.executable)
            process.arguments = arguments
            process.standardOutput = Pipe()
            process.standardError = Pipe()
            try process.run()
            return process
        }

        // A device's telemetry reaches a backend on RabbitMQ; a topic outside its policy does not.
        let telemetry = try subscriber(backend + ["-t", "devices/+/telemetry", "-v", "-C", "1"])
        for _ in 0..<20 where telemetry.isRunning {
            let forged = try clients.pub.run(
                clients.tls(one) + ["-V", "mqttv311", "-i", "rb-one", "-t", "devices/rb-two/telemetry", "-q", "1", "-m", "forged"])
            #expect(!forged.succeeded, "a topic outside the policy was accepted: \(forged)")
            let sent = try clients.pub.run(clients.tls(one) + ["-V", "mqttv311", "-i", "rb-one", "-t", "devices/rb-one/telemetry", "-q", "1", "-m", "21.5"])
            #expect(sent.succeeded, "\(sent)")
            Thread.sleep(forTimeInterval: 0.3)
        }
        let seen = MQTTFrontDoorTests.output(telemetry, seconds: 1)
        #expect(seen.trimmingCharacters(in: .whitespacesAndNewlines) == "devices/rb-one/telemetry 21.5", "\(seen)")

        // A backend's command on RabbitMQ reaches the device through the front door.
        let commands = try subscriber(clients.tls(two) + ["-V", "mqttv311", "-i", "rb-two", "-t", "devices/rb-two/commands", "-q", "1", "-v", "-C", "1"])
        for _ in 0..<20 where commands.isRunning {
            #expect(try clients.pub.run(backend + ["-t", "devices/rb-two/commands", "-q", "1", "-m", "reboot"]).succeeded)
            Thread.sleep(forTimeInterval: 0.3)
        }
        let command = MQTTFrontDoorTests.output(commands, seconds: 1)
        #expect(command.contains("devices/rb-two/commands reboot"), "\(command)")

        // Another device's client id is refused by the front door; a device RabbitMQ does not know
        // is refused by RabbitMQ, whose answer comes back unchanged (so the user name it checked
        // was the device ID, with the front door's password).
        let impostor = try clients.pub.run(clients.tls(one) + ["-V", "mqttv311", "-i", "rb-two", "-t", "devices/rb-one/telemetry", "-m", "x"])
        #expect(!impostor.succeeded && impostor.stderr.lowercased().contains("identifier rejected"), "\(impostor)")
        let unknown = try clients.pub.run(
            clients.tls(stranger) + ["-V", "mqttv311", "-i", "rb-stranger", "-t", "devices/rb-stranger/telemetry", "-m", "x"])
        #expect(
            !unknown.succeeded && (unknown.stderr.contains("bad user name or password") || unknown.stderr.contains("not authorised")),
            "\(unknown)")

        // A revoked device's session ends within a second; the other's stays and still publishes.
        let race = try MQTTFrontDoorTests.revokeOneOfTwo(fixture, port: clients.port, doomed: one, other: two, protocolVersion: "3.1.1") {
            let revoke = try fixture.cli.run(["devices", "revoke"] + fixture.registry + ["rb-one"])
            #expect(revoke.succeeded, "\(revoke)")
        }
        #expect(race.connected, "\(race.text)")
        #expect(race.seconds < 1.0, "the revoked device's session lasted \(race.seconds) s: \(race.text)")
        #expect(
            race.text.contains("other published connected"), "the other device's session suffered: \(race.text); RabbitMQ: \(node.log.suffix(1500))")
    }
}
