import ArgumentParser
import FleetwardDevice
import FleetwardMQTT
import Foundation

/// `fleetward-agent mqtt publish|subscribe|run`: the device's MQTT session through Fleetward's
/// front door, with its own key and certificate.
struct MQTTCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt",
        abstract: "Publish, subscribe or stay in one MQTT session through the front door, as this device.",
        discussion: """
            The session is mutual TLS with the device's operational certificate (its key signs the \
            handshake where it is kept) and MQTT 5.0, the device ID as client identifier. The front \
            door is the provisioning file's "mqtt" endpoint (default: the gateway's host, port 8883), \
            or --mqtt HOST:PORT.
            """,
        subcommands: [Publish.self, Subscribe.self, Run.self]
    )

    struct Connection: ParsableArguments {
        @Option(help: ArgumentHelp("The MQTT front door, instead of the provisioning file's.", valueName: "host:port"))
        var mqtt: String?

        @Option(name: .customLong("protocol"), help: "5 or 3.1.1.")
        var protocolVersion = "5"

        func version() throws -> MQTTVersion {
            switch protocolVersion {
            case "5", "5.0": .v5
            case "3.1.1", "4": .v3_1_1
            default: throw ValidationError("--protocol is 5 or 3.1.1")
            }
        }

        func endpoint() throws -> ProvisioningConfig.Endpoint? {
            guard let mqtt else { return nil }
            let config = ProvisioningConfig(est: "x:1", gateway: "x:1", root: "", mqtt: mqtt)
            return try config.mqttEndpoint
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish one message (default topic devices/<ID>/telemetry, QoS 1, signed).")

        @OptionGroup var device: DeviceOptions
        @OptionGroup var connection: Connection
        @Option(help: "The topic (default: devices/<device ID>/telemetry).") var topic: String?
        @Option(help: "The message.") var message: String?
        @Option(help: ArgumentHelp("Send this file's contents as the message.", valueName: "file")) var file: String?
        @Option(help: "0 or 1.") var qos: UInt8 = 1
        @Flag(help: "Ask the broker to retain it.") var retain = false
        @Flag(name: .customLong("unsigned"), help: "Leave out the device signature (user properties; MQTT 5 only).") var unsigned = false

        func validate() throws {
            guard (message == nil) != (file == nil) else { throw ValidationError("give --message TEXT or --file PATH") }
            guard qos <= 1 else { throw ValidationError("--qos is 0 or 1") }
        }

        func run() async throws {
            let version = try connection.version()
            let agent = try device.agent()
            let body: [UInt8]
            if let file {
                guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
                body = Array(data)
            } else {
                body = Array((message ?? "").utf8)
            }
            let client = try await agent.connectMQTT(endpoint: try connection.endpoint(), version: version)
            let topic = topic ?? DeviceAgent.telemetryTopic(client.clientID)
            var properties: [(String, String)] = []
            if !unsigned, version == .v5 {
                let (_, _, key) = try agent.operationalIdentity()
                properties = try SignedMessage.userProperties(for: body, device: client.clientID, key: key)
            }
            do {
                try await client.publish(body, topic: topic, qos: qos, retain: retain, userProperties: properties)
            } catch {
                await client.disconnect()
                throw error
            }
            await client.disconnect()
            AgentOutput.line("published \(body.count) bytes to \(topic) (QoS \(qos))")
        }
    }

    struct Subscribe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Subscribe and print what arrives, one line per message: TOPIC PAYLOAD (default topic devices/<ID>/commands).")

        @OptionGroup var device: DeviceOptions
        @OptionGroup var connection: Connection
        @Option(help: "A topic filter; repeat for several (default: devices/<device ID>/commands).") var topic: [String] = []
        @Option(help: "Stop after this many messages.") var count: Int?
        @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds")) var timeout: Double?
        @Option(help: "0 or 1.") var qos: UInt8 = 1

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count is at least 1") }
            if let timeout, !(timeout.isFinite && timeout > 0) { throw ValidationError("--timeout is a positive number of seconds") }
            guard qos <= 1 else { throw ValidationError("--qos is 0 or 1") }
        }

        func run() async throws {
            let agent = try device.agent()
            let client = try await agent.connectMQTT(endpoint: try connection.endpoint(), version: try connection.version())
            let filters = topic.isEmpty ? [DeviceAgent.commandTopic(client.clientID)] : topic
            let granted = try await client.subscribe(filters, qos: qos)
            for (filter, code) in zip(filters, granted) where code >= 0x80 {
                await client.disconnect()
                throw DeviceError(.refused, "the subscription to \(filter) was refused (not allowed by the device's policy)")
            }
            let limit = count
            let deadline = timeout.map { Date().addingTimeInterval($0) }
            let timer = Task {
                if let deadline {
                    try await Task.sleep(for: .milliseconds(Int64(deadline.timeIntervalSinceNow * 1000)))
                    await client.disconnect()
                }
            }
            var received = 0
            for await message in client.messages {
                AgentOutput.line("\(message.topic) \(String(decoding: message.payload, as: UTF8.self))")
                received += 1
                if let limit, received >= limit { break }
            }
            timer.cancel()
            if let limit, received >= limit {
                await client.disconnect()
                return
            }
            if let deadline, Date() >= deadline { return }
            throw DeviceError(.refused, await client.endReason ?? "the session ended")
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stay in one MQTT session: signed telemetry every interval, commands printed as they come, renewal, reconnect.",
            discussion: """
                Publishes signed telemetry (QoS 1) on devices/<ID>/telemetry and takes commands \
                (QoS 1) on devices/<ID>/commands, printed as 'command TOPIC PAYLOAD'. Renews once \
                two thirds of the certificate's lifetime has passed and reconnects into the same \
                broker session with the new certificate, so commands sent meanwhile arrive then; \
                reconnects with exponential backoff and jitter (a broker restart does not bring \
                the fleet back in lockstep). With --slots and --model it also takes the signed \
                update offers Fleetward announces on devices/<ID>/updates (checked, then taken \
                through the gateway as 'update apply' does).
                """)

        @OptionGroup var device: DeviceOptions
        @OptionGroup var connection: Connection
        @Option(help: ArgumentHelp("Seconds between telemetry messages.", valueName: "seconds")) var interval = 30.0
        @Option(help: ArgumentHelp("Stop after this many seconds (default: run until stopped).", valueName: "seconds"))
        var duration: Double?
        @OptionGroup var updates: TakeUpdates

        func validate() throws {
            guard interval.isFinite, (0.1...86_400).contains(interval) else { throw ValidationError("--interval must be 0.1 to 86400 seconds") }
            if let duration, !(duration.isFinite && (0...31_536_000).contains(duration)) {
                throw ValidationError("--duration must be 0 to 31536000 seconds")
            }
            guard connection.protocolVersion.hasPrefix("5") else { throw ValidationError("mqtt run speaks MQTT 5 (signed user properties)") }
        }

        func run() async throws {
            let agent = try device.agent()
            let started = Date()
            let sequence = Counter()
            try await agent.runMQTT(
                interval: .milliseconds(Int64(interval * 1000)),
                until: duration.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }, endpoint: try connection.endpoint(),
                telemetry: { Array(#"{"heartbeat":\#(sequence.next()),"uptime_s":\#(Int(Date().timeIntervalSince(started)))}"#.utf8) },
                updater: updates.updater(for: agent),
                events: { event in
                    switch event {
                    case .connected(let id): AgentOutput.line("connected over MQTT as \(id)")
                    case .published(let topic, let bytes): AgentOutput.line("published telemetry (\(bytes) bytes) to \(topic)")
                    case .command(let message):
                        AgentOutput.line("command \(message.topic) \(String(decoding: message.payload, as: UTF8.self))")
                    case .disconnected(let reason): AgentOutput.line("disconnected: \(reason)")
                    case .renewed(let serial, let notAfter):
                        AgentOutput.line("renewed: certificate \(serial), valid until \(AgentOutput.date(notAfter))")
                    case .retrying(let reason, let seconds): AgentOutput.line("retrying in \(String(format: "%.1f", seconds)) s: \(reason)")
                    case .updateInstalled(let version, let slot):
                        AgentOutput.line("installed update \(version) on \(slot); health check passed")
                    case .updateNotTaken(let reason): AgentOutput.line("update: \(reason)")
                    }
                })
        }
    }
}
