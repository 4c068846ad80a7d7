import ArgumentParser
import Crypto
import FleetwardDevice
import Foundation
import X509

/// `fleetward-agent simulate`: a fleet of simulated devices against a real Fleetward.
struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract:
            "Simulate N devices: each enrolls over EST with its own key, holds an mTLS gateway connection and sends signed telemetry.",
        discussion: """
            Device IDs and factory secrets come from an allow-list CSV (header with 'id' and 'secret' \
            columns, as imported with 'fleetward devices import'); the first N rows are used. Devices \
            start at --rate per second (at most --concurrency enrolling or handshaking at once), stay \
            connected until --duration seconds after the last one connected, and send one signed \
            message every --interval seconds. Keys live in memory only. \
            Live counts go to stderr every second; the summary (latency percentiles) to stdout. Exits \
            1 when any device was refused or failed.
            """
    )

    @Option(help: ArgumentHelp("The provisioning file: endpoints and the pinned root.", valueName: "file"))
    var config = "/etc/fleetward/provisioning.json"

    @Option(name: .customLong("allow-list"), help: ArgumentHelp("CSV with id and secret columns.", valueName: "file"))
    var allowList: String

    @Option(help: "How many devices.")
    var devices = 100

    @Option(help: "Devices started per second.")
    var rate = 100.0

    @Option(help: ArgumentHelp("Seconds to stay connected after the last device connected.", valueName: "seconds"))
    var duration = 10.0

    @Option(help: "At most this many enrollments and handshakes in flight at once.")
    var concurrency = 64

    @Option(help: ArgumentHelp("Seconds a device waits for one answer before it counts an error.", valueName: "seconds"))
    var timeout = 30.0

    @Option(help: ArgumentHelp("Seconds between one device's telemetry messages.", valueName: "seconds"))
    var interval = 5.0

    @Flag(help: "Print the summary as JSON on stdout.")
    var json = false

    func validate() throws {
        guard devices >= 1 else { throw ValidationError("--devices must be at least 1") }
        guard rate > 0 else { throw ValidationError("--rate must be positive") }
        guard duration.isFinite, (0...86_400).contains(duration), interval.isFinite, (0.1...3600).contains(interval) else {
            throw ValidationError("--duration must be 0 to 86400 seconds and --interval 0.1 to 3600")
        }
        guard rate.isFinite, timeout.isFinite, (0.1...3600).contains(timeout) else {
            throw ValidationError("--rate must be finite and --timeout 0.1 to 3600 seconds")
        }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
    }

    func run() async throws {
        let provisioning = try ProvisioningConfig.load(path: config)
        let identities = try Self.readAllowList(allowList, count: devices)
        guard identities.count == devices else {
            throw ValidationError("\(allowList) has \(identities.count) rows with a secret; --devices asks for \(devices)")
        }
        var est = try provisioning.estClient()
        est.timeout = .milliseconds(Int64(timeout * 1000))
        let simulation = FleetSimulation(
            est: est, gateway: try provisioning.gatewayEndpoint, roots: try provisioning.roots, serverName: provisioning.serverName,
            rate: rate, hold: .milliseconds(Int64(duration * 1000)), interval: interval, concurrency: concurrency)
        let summary = try await simulation.run(identities) { AgentOutput.progress($0) }
        if json {
            try AgentOutput.json(summary)
        } else {
            AgentOutput.line(summary.text)
        }
        if summary.refused + summary.errors > 0 { throw ExitCode(1) }
    }

    /// The first `count` rows of an allow-list CSV that carry a secret: (id, secret).
    static func readAllowList(_ path: String, count: Int) throws -> [(id: String, secret: String)] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
        var lines = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).makeIterator()
        guard
            let header = lines.next()?.split(separator: ",", omittingEmptySubsequences: false).map({
                $0.trimmingCharacters(in: .whitespaces)
            }),
            let idColumn = header.firstIndex(of: "id"), let secretColumn = header.firstIndex(of: "secret")
        else { throw ValidationError("\(path) needs a header line with 'id' and 'secret' columns") }
        var rows: [(id: String, secret: String)] = []
        while rows.count < count, let line = lines.next() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard fields.count > max(idColumn, secretColumn), !fields[secretColumn].isEmpty else { continue }
            rows.append((fields[idColumn], fields[secretColumn]))
        }
        return rows
    }
}
