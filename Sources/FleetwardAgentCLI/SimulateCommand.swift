import ArgumentParser
import Crypto
import FleetwardDevice
import Foundation
import NIOConcurrencyHelpers
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
        guard duration >= 0, interval >= 0.1 else { throw ValidationError("--duration must be ≥ 0 and --interval ≥ 0.1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
    }

    func run() async throws {
        let provisioning = try ProvisioningConfig.load(path: config)
        let identities = try Self.readAllowList(allowList, count: devices)
        guard identities.count == devices else {
            throw ValidationError("\(allowList) has \(identities.count) rows with a secret; --devices asks for \(devices)")
        }
        var configured = try provisioning.estClient()
        configured.timeout = .milliseconds(Int64(timeout * 1000))
        let est = configured
        let gateway = try provisioning.gatewayEndpoint
        let roots = try provisioning.roots
        // The issuing CA, to send with each device certificate.
        let published = try await est.caCertificates()
        let intermediates = published.filter { $0.subject != $0.issuer }
        let stats = SimulationStats(devices: devices, holdFor: .milliseconds(Int64(duration * 1000)))
        let gate = InFlightLimit(concurrency)
        let started = ContinuousClock.now
        let reporter = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(1))
                AgentOutput.progress(stats.line(elapsed: ContinuousClock.now - started, total: devices))
            }
        }
        let period = interval
        await withTaskGroup(of: Void.self) { group in
            for (index, identity) in identities.enumerated() {
                let start = started + .milliseconds(Int64(Double(index) / rate * 1000))
                group.addTask {
                    try? await Task.sleep(until: start)
                    await Self.simulate(
                        identity, est: est, gateway: gateway, roots: roots, serverName: provisioning.serverName,
                        intermediates: intermediates, interval: period, timeout: est.timeout, stats: stats, gate: gate)
                }
            }
        }
        reporter.cancel()
        let summary = stats.summary(devices: devices, seconds: (ContinuousClock.now - started).seconds)
        if json {
            try AgentOutput.json(summary)
        } else {
            AgentOutput.line(summary.text)
        }
        if summary.refused + summary.errors > 0 { throw ExitCode(1) }
    }

    static func simulate(
        _ identity: (id: String, secret: String), est: ESTClient, gateway: ProvisioningConfig.Endpoint, roots: [Certificate],
        serverName: String?, intermediates: [Certificate], interval: Double, timeout: Duration, stats: SimulationStats,
        gate: InFlightLimit
    ) async {
        let key = P256.Signing.PrivateKey()
        let certificate: Certificate
        do {
            let csr = try DeviceCSR.make(key: key, deviceID: identity.id)
            await gate.acquire()
            defer { Task { await gate.release() } }
            let begun = ContinuousClock.now
            guard case .issued(let issued, _) = try await est.enroll(csr: csr, with: .secret(id: identity.id, secret: identity.secret))
            else { return stats.failed(identity.id, "enrollment is pending approval", refused: true) }
            stats.record(.enroll, since: begun)
            certificate = issued
        } catch {
            return stats.failed(identity.id, "enroll: \(error)", refused: (error as? DeviceError)?.code == .refused)
        }
        let chain = [certificate] + intermediates.filter { $0.subject == certificate.issuer }
        let tls = PinnedTLS(roots: roots, serverName: serverName, clientChain: chain, clientKey: key)
        var sequence = 0
        var first = true
        while stats.running {
            let connection: GatewayConnection
            do {
                await gate.acquire()
                defer { Task { await gate.release() } }
                let begun = ContinuousClock.now
                connection = try await GatewayConnection.connect(host: gateway.host, port: gateway.port, tls: tls, timeout: timeout)
                stats.record(.connect, since: begun)
            } catch {
                return stats.failed(
                    identity.id, "connect: \(error)", refused: [.handshakeRefused, .refused].contains((error as? DeviceError)?.code),
                    connectedBefore: !first)
            }
            stats.connected(+1)
            if first {
                stats.settled()
                first = false
            }
            // The first message at once, then spread over the interval so the fleet does not send in lockstep.
            var next = ContinuousClock.now
            var dropped = false
            while stats.running {
                if next <= ContinuousClock.now {
                    sequence += 1
                    let body = Array(#"{"simulated":true,"sequence":\#(sequence),"temperature":\#(Int.random(in: 15...30))}"#.utf8)
                    let begun = ContinuousClock.now
                    do {
                        try await connection.sendTelemetry(body, key: key)
                        stats.record(.telemetry, since: begun)
                    } catch {
                        stats.failed(identity.id, "telemetry: \(error)", refused: false, connectedBefore: true)
                        dropped = true
                        break
                    }
                    let spread = sequence == 1 ? Double.random(in: 0.5...1.5) : 1
                    next = next + .milliseconds(Int64(interval * spread * 1000))
                }
                guard connection.isActive else {
                    stats.failed(identity.id, "the gateway closed the connection", refused: false, connectedBefore: true)
                    dropped = true
                    break
                }
                try? await Task.sleep(for: min(.milliseconds(250), max(.milliseconds(1), next - ContinuousClock.now)))
            }
            stats.connected(-1)
            await connection.close()
            if dropped { return }
        }
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

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Counts and latencies across the simulated fleet.
final class SimulationStats: Sendable {
    enum Step: String, CaseIterable { case enroll, connect, telemetry }

    private struct State {
        var settled = 0
        var end: ContinuousClock.Instant?
        var latencies: [Step: [Double]] = [:]
        var connected = 0
        var refused = 0
        var errors = 0
        var firstFailures: [String] = []
    }

    private let state = NIOLockedValueBox(State())
    let devices: Int
    let holdFor: Duration

    init(devices: Int, holdFor: Duration) {
        self.devices = devices
        self.holdFor = holdFor
    }

    /// One more device is done starting: connected, refused or failed. When all are, the fleet
    /// holds its connections for `holdFor` more.
    func settled() {
        state.withLockedValue {
            $0.settled += 1
            if $0.settled == devices { $0.end = ContinuousClock.now + holdFor }
        }
    }

    /// False once every device has settled and the hold time has passed.
    var running: Bool {
        state.withLockedValue { state in state.end.map { ContinuousClock.now < $0 } ?? true }
    }

    func record(_ step: Step, since start: ContinuousClock.Instant) {
        let milliseconds = (ContinuousClock.now - start).seconds * 1000
        state.withLockedValue { $0.latencies[step, default: []].append(milliseconds) }
    }

    func connected(_ delta: Int) { state.withLockedValue { $0.connected += delta } }

    /// A device failed: counted once, and settled if it never connected.
    func failed(_ device: String, _ reason: String, refused: Bool, connectedBefore: Bool = false) {
        state.withLockedValue {
            if refused { $0.refused += 1 } else { $0.errors += 1 }
            if !connectedBefore {
                $0.settled += 1
                if $0.settled == devices { $0.end = ContinuousClock.now + holdFor }
            }
            if $0.firstFailures.count < 5 { $0.firstFailures.append("\(device): \(reason)") }
        }
    }

    func line(elapsed: Duration, total: Int) -> String {
        state.withLockedValue {
            "t=\(Int(elapsed.seconds))s enrolled \($0.latencies[.enroll]?.count ?? 0)/\(total) connected \($0.connected) "
                + "messages \($0.latencies[.telemetry]?.count ?? 0) refused \($0.refused) errors \($0.errors)"
        }
    }

    struct Summary: Encodable {
        struct Latency: Encodable {
            var count: Int
            var p50: Double
            var p90: Double
            var p99: Double
            var max: Double
        }

        var devices: Int
        var seconds: Double
        var enrolled: Int
        var connections: Int
        var messages: Int
        var refused: Int
        var errors: Int
        var latencyMilliseconds: [String: Latency]
        var failures: [String]

        var text: String {
            var lines = [
                "simulated \(devices) devices in \(String(format: "%.1f", seconds)) s: enrolled \(enrolled), connections \(connections), "
                    + "messages \(messages), refused \(refused), errors \(errors)"
            ]
            for step in SimulationStats.Step.allCases {
                guard let latency = latencyMilliseconds[step.rawValue] else { continue }
                lines.append(
                    String(
                        format: "  %-10@ p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms  (%d)", step.rawValue, latency.p50, latency.p90,
                        latency.p99, latency.max, latency.count))
            }
            lines += failures.map { "  failure: \($0)" }
            return lines.joined(separator: "\n")
        }
    }

    func summary(devices: Int, seconds: Double) -> Summary {
        state.withLockedValue { state in
            var latencies: [String: Summary.Latency] = [:]
            for (step, values) in state.latencies where !values.isEmpty {
                let sorted = values.sorted()
                func at(_ q: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
                latencies[step.rawValue] = Summary.Latency(
                    count: sorted.count, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted.last!)
            }
            return Summary(
                devices: devices, seconds: seconds, enrolled: state.latencies[.enroll]?.count ?? 0,
                connections: state.latencies[.connect]?.count ?? 0, messages: state.latencies[.telemetry]?.count ?? 0,
                refused: state.refused, errors: state.errors, latencyMilliseconds: latencies, failures: state.firstFailures)
        }
    }
}

/// At most `limit` enrollments and handshakes in flight: the simulated fleet ramps up at the
/// server's pace instead of timing out in a queue.
actor InFlightLimit {
    private let limit: Int
    private var inFlight = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ limit: Int) { self.limit = limit }

    func acquire() async {
        if inFlight < limit {
            inFlight += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            inFlight -= 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}
