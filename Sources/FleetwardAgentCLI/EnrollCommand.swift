import ArgumentParser
import FleetwardDevice
import FleetwardPKI
import Foundation
import X509

/// `fleetward-agent factory-request`: the birth key, made on the device, and its CSR for the factory CA.
struct FactoryRequestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "factory-request",
        abstract: "Make the device's birth key (sealed on the device) and write its CSR for the factory CA.",
        discussion: """
            Run on the factory line: the key never leaves the device; the factory signs the CSR with \
            'fleetward factory issue --csr-dir IN --out OUT', and 'enroll --birth-cert FILE' installs the result.
            """
    )

    @OptionGroup var device: DeviceOptions

    @Option(help: "The device ID.")
    var id: String

    @Option(help: ArgumentHelp("Where to write the CSR (PEM).", valueName: "file"))
    var out: String

    func run() async throws {
        let agent = try device.agent(create: true)
        let csr = try agent.makeBirthRequest(deviceID: id)
        try Data(PEM.encode(csr, label: "CERTIFICATE REQUEST").utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
        AgentOutput.line("birth key made for \(id); CSR written to \(out)")
    }
}

/// `fleetward-agent enroll`: the first operational certificate, by any provisioning flow.
struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Enroll over EST: a key made on the device, a certificate from Fleetward.",
        discussion: """
            Proves the device with exactly one of: its factory secret (--secret or --secret-file, allow-list \
            flow), a one-time token from its owner (--token or --token-file, claim flow), or the birth \
            certificate the factory signed for its birth key (--birth-cert, after factory-request).
            """
    )

    @OptionGroup var device: DeviceOptions

    @Option(help: "The device ID.")
    var id: String

    @Option(help: "The factory secret.")
    var secret: String?

    @Option(name: .customLong("secret-file"), help: ArgumentHelp("A file holding the factory secret.", valueName: "file"))
    var secretFile: String?

    @Option(help: "A one-time enrollment token from the device's owner.")
    var token: String?

    @Option(name: .customLong("token-file"), help: ArgumentHelp("A file holding the enrollment token.", valueName: "file"))
    var tokenFile: String?

    @Option(
        name: .customLong("birth-cert"),
        help: ArgumentHelp("The birth certificate (PEM or DER) for this device's birth key.", valueName: "file"))
    var birthCert: String?

    @Option(name: .customLong("wait"), help: ArgumentHelp("Wait this many seconds for an operator's approval (202).", valueName: "seconds"))
    var wait = 0

    @Flag(help: "Print machine-readable JSON on stdout.")
    var json = false

    func validate() throws {
        let given = [secret ?? secretFile, token ?? tokenFile, birthCert].compactMap { $0 }.count
        guard given == 1 else { throw ValidationError(
                "give exactly one proof: --secret-file FILE (or --secret), --token-file FILE (or --token), or --birth-cert FILE") }
    }

    func run() async throws {
        let agent = try device.agent(create: true)
        let proof: EnrollmentProof
        if let secret = try secretValue(secret, file: secretFile, name: "secret") {
            proof = .secret(secret)
        } else if let token = try secretValue(token, file: tokenFile, name: "token") {
            proof = .token(token)
        } else {
            guard let path = birthCert, let bytes = FileManager.default.contents(atPath: path) else {
                throw ValidationError("cannot read --birth-cert \(birthCert ?? "")")
            }
            let der: [UInt8]
            do {
                der = try PEM.derFromDEROrPEM(Array(bytes), label: "CERTIFICATE")
            } catch {
                throw DeviceError(.invalidInput, "\(path) is not a certificate")
            }
            _ = try agent.installBirthCertificate(der)
            proof = .birthCertificate
        }
        let credential = try await agent.enroll(deviceID: id, proof: proof, waitForApproval: .seconds(wait))
        // The owner comes from the gateway; not reaching it leaves enrollment done.
        var owner: String?
        if let connection = try? await agent.connect(timeout: .seconds(5)) {
            owner = connection.identity.owner
            try? agent.remember(connection.identity)
            await connection.close()
        }
        let status = try DeviceStatus(agent: agent, credential: credential, owner: owner)
        if json {
            try AgentOutput.json(status)
        } else {
            AgentOutput.line(
                "enrolled \(id): certificate \(status.serial), valid until \(AgentOutput.date(status.notAfter))"
                    + (status.owner.map { ", owner \($0)" } ?? ""))
        }
    }
}
