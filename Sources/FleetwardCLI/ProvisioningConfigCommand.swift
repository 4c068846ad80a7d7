import ArgumentParser
import FleetwardAuthority
import FleetwardDevice
import FleetwardKeyCustody
import FleetwardPKI
import Foundation

/// `fleetward provisioning-config`: the file a device is programmed with at build or factory time.
struct ProvisioningConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provisioning-config",
        abstract: "Write the provisioning file devices are programmed with: EST and gateway endpoints and the pinned root.",
        discussion: """
            Bake it into the firmware image or write it at the factory; fleetward-agent reads it with \
            --config. The device then trusts only this root for these endpoints, whatever its system \
            trust store says, and checks the servers' certificate against --server-name (or the \
            endpoint's address).
            """
    )

    @OptionGroup var dataOptions: DataOptions

    @Option(help: ArgumentHelp("The EST endpoint devices reach.", valueName: "host:port"))
    var est = "127.0.0.1:8443"

    @Option(help: ArgumentHelp("The gateway endpoint devices reach.", valueName: "host:port"))
    var gateway = "127.0.0.1:9443"

    @Option(
        name: .customLong("server-name"),
        help: ArgumentHelp("The name the servers' certificate must carry (default: the endpoint's host).", valueName: "name"))
    var serverName: String?

    @Option(help: ArgumentHelp("Where to write it (default: stdout).", valueName: "file"))
    var out: String?

    func run() throws {
        let directory = dataOptions.directory
        let rootPath = directory.path + "/ca/root.pem"
        guard let root = FileManager.default.contents(atPath: rootPath) else {
            throw ValidationError("no root certificate at \(rootPath): run 'fleetward init --data \(directory.path)' first")
        }
        let config = ProvisioningConfig(est: est, gateway: gateway, serverName: serverName, root: String(decoding: root, as: UTF8.self))
        // Check it the way a device will read it.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes = try encoder.encode(config) + Data("\n".utf8)
        let decoded = try JSONDecoder().decode(ProvisioningConfig.self, from: bytes)
        _ = try decoded.estEndpoint
        _ = try decoded.gatewayEndpoint
        _ = try decoded.roots
        if let out {
            try AtomicFile.write(Array(bytes), to: out, permissions: 0o644)
            Output.progress("provisioning file written to \(out)")
        } else {
            FileHandle.standardOutput.write(bytes)
        }
    }
}

/// Durations on the command line: `30d`, `12h`, `15m`, `90s`.
enum LifetimeParser {
    static func seconds(_ text: String) throws -> TimeInterval {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let unit = text.last, let factor = units[unit], let value = Double(text.dropLast()), value > 0 else {
            throw ValidationError("'\(text)' is not a duration: use a number and s, m, h or d (e.g. 30d, 90s)")
        }
        return value * factor
    }
}
