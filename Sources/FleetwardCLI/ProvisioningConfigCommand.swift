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

    @Option(help: ArgumentHelp("The MQTT front door devices reach (default: the gateway's host, port 8883).", valueName: "host:port"))
    var mqtt: String?

    @Option(
        name: .customLong("server-name"),
        help: ArgumentHelp("The name the servers' certificate must carry (default: the endpoint's host).", valueName: "name"))
    var serverName: String?

    @Option(help: ArgumentHelp("Where to write it (default: stdout).", valueName: "file"))
    var out: String?

    @Flag(
        name: .customLong("skip-certificate-check"),
        help: "Write it even when DIR/tls/gateway.pem does not carry the name (the servers will present another certificate).")
    var skipCertificateCheck = false

    func run() throws {
        let directory = dataOptions.directory
        let rootPath = directory.path + "/ca/root.pem"
        guard let root = FileManager.default.contents(atPath: rootPath) else {
            throw ValidationError("no root certificate at \(rootPath): run 'fleetward init --data \(directory.path)' first")
        }
        let config = ProvisioningConfig(
            est: est, gateway: gateway, serverName: serverName, root: String(decoding: root, as: UTF8.self), mqtt: mqtt)
        // Check it the way a device will read it.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes = try encoder.encode(config) + Data("\n".utf8)
        let decoded = try JSONDecoder().decode(ProvisioningConfig.self, from: bytes)
        _ = try decoded.estEndpoint
        _ = try decoded.gatewayEndpoint
        _ = try decoded.mqttEndpoint
        _ = try decoded.roots
        if !skipCertificateCheck { try checkServerCertificate(directory) }
        if let out {
            try AtomicFile.write(Array(bytes), to: out, permissions: 0o644)
            Output.progress("provisioning file written to \(out)")
        } else {
            FileHandle.standardOutput.write(bytes)
        }
    }
}

extension ProvisioningConfigCommand {
    /// The name a device will check (--server-name, else each endpoint's host) must be one the
    /// servers' certificate (DIR/tls/gateway.pem) carries; otherwise every device made with this
    /// file would refuse the servers. Says which names it does carry and what to give instead.
    func checkServerCertificate(_ directory: DataDirectory) throws {
        guard let bytes = FileManager.default.contents(atPath: directory.gatewayCertificatePath),
            let first = try? CertificateDecoder.certificates(from: Array(bytes)).first,
            let summary = try? CertificateSummary(certificate: first.certificate, der: first.der)
        else { return }
        let carried = summary.subjectAlternativeNames.compactMap { name -> String? in
            if name.hasPrefix("DNS:") { return String(name.dropFirst(4)).lowercased() }
            if name.hasPrefix("IP:") { return String(name.dropFirst(3)) }
            return nil
        }
        let hosts = serverName.map { [$0] } ?? [est, gateway].map(Self.host(of:))
        for host in Set(hosts) {
            let wanted = (try? ServerName(host).description) ?? host.lowercased()
            let wildcardMatch = carried.contains { name in
                name.hasPrefix("*.") && wanted.split(separator: ".", maxSplits: 1).last.map { "*." + $0 } == name
            }
            guard !carried.contains(wanted), !wildcardMatch else { continue }
            let suggestion = carried.first { !$0.contains(":") && $0 != "localhost" } ?? carried.first ?? "NAME"
            throw ValidationError(
                "the servers' certificate (\(directory.gatewayCertificatePath)) carries \(carried.joined(separator: ", ")), not \(host): "
                    + "devices would refuse the servers; give --server-name \(suggestion), or add \(host) with 'fleetward init --host' "
                    + "(every name wanted, the defaults too)")
        }
    }

    /// The host of `host:port` (IPv6 in brackets).
    static func host(of endpoint: String) -> String {
        if endpoint.hasPrefix("["), let close = endpoint.firstIndex(of: "]") {
            return String(endpoint[endpoint.index(after: endpoint.startIndex)..<close])
        }
        return String(endpoint.split(separator: ":").dropLast().joined(separator: ":"))
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
