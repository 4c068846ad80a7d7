import ArgumentParser
import FleetwardDevice
import Foundation
import X509

/// What `status` shows.
struct DeviceStatus: Encodable {
    var device: String
    var owner: String?
    var serial: String
    var notBefore: Date
    var notAfter: Date
    var renewAt: Date
    var expired: Bool
    var estServer: String
    var gateway: String
    var keyReference: String

    init(agent: DeviceAgent, credential: DeviceCredential, owner: String? = nil) throws {
        let (_, chain, key) = try agent.operationalIdentity()
        let leaf = chain[0]
        device = credential.deviceID
        self.owner = owner ?? credential.owner
        serial = leaf.serialNumber.bytes.map { String(format: "%02x", $0) }.joined()
        notBefore = leaf.notValidBefore
        notAfter = leaf.notValidAfter
        renewAt = RenewalPolicy.renewalTime(notBefore: notBefore, notAfter: notAfter)
        expired = Date() >= notAfter
        estServer = agent.config.est
        gateway = agent.config.gateway
        keyReference = key.reference
    }
}

/// `fleetward-agent status`: who this device is, from its sealed credentials.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the device's identity, owner, certificate expiry and servers (from the sealed store).")

    @OptionGroup var device: DeviceOptions

    @Flag(help: "Print machine-readable JSON on stdout.")
    var json = false

    func run() async throws {
        let agent = try device.agent()
        let status = try DeviceStatus(agent: agent, credential: try agent.credential())
        if json { return try AgentOutput.json(status) }
        AgentOutput.line(
            """
            device       \(status.device)
            owner        \(status.owner ?? "(none)")
            certificate  \(status.serial)
            valid        \(AgentOutput.date(status.notBefore)) to \(AgentOutput.date(status.notAfter))\(status.expired ? " (EXPIRED)" : "")
            renew at     \(AgentOutput.date(status.renewAt))
            EST server   \(status.estServer)
            gateway      \(status.gateway)
            key          \(status.keyReference) (sealed)
            """)
    }
}

/// `fleetward-agent renew`: re-enroll now with the current certificate.
struct RenewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "renew",
        abstract: "Re-enroll now (EST simplereenroll) for a new key; the old credential stays until the new one is stored.")

    @OptionGroup var device: DeviceOptions

    @Flag(help: "Print machine-readable JSON on stdout.")
    var json = false

    func run() async throws {
        let agent = try device.agent()
        let credential = try await agent.renew()
        let status = try DeviceStatus(agent: agent, credential: credential)
        if json { return try AgentOutput.json(status) }
        AgentOutput.line("renewed \(status.device): certificate \(status.serial), valid until \(AgentOutput.date(status.notAfter))")
    }
}

/// `fleetward-agent send`: one signed telemetry message.
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send one telemetry message (a JSON object), signed by the device key, to the gateway.")

    @OptionGroup var device: DeviceOptions

    @Argument(help: "The JSON object to send (or use --file).")
    var message: String?

    @Option(help: ArgumentHelp("Read the JSON object from this file.", valueName: "file"))
    var file: String?

    func validate() throws {
        guard (message == nil) != (file == nil) else { throw ValidationError("give the message or --file, not both or neither") }
    }

    func run() async throws {
        let body: [UInt8]
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            body = Array(data)
        } else {
            body = Array((message ?? "").utf8)
        }
        guard (try? JSONSerialization.jsonObject(with: Data(body))) is [String: Any] else {
            throw ValidationError("the message must be one JSON object")
        }
        let identity = try await device.agent().send(telemetry: body)
        AgentOutput.line("sent \(body.count) bytes as \(identity.device)")
    }
}
