public import Crypto
public import Foundation
import NIOConcurrencyHelpers
public import X509

/// A fleet of simulated devices against a real Fleetward: each enrolls over EST with its own key
/// (in memory) and factory secret, holds a kept-alive mTLS connection to the gateway and sends
/// signed telemetry. The load generator of `fleetward-agent simulate`, the benchmarks and
/// `fleetward demo`.
public struct FleetSimulation: Sendable {
    public var est: ESTClient
    public var gateway: ProvisioningConfig.Endpoint
    public var roots: [Certificate]
    public var serverName: String?
    /// Devices started per second.
    public var rate: Double
    /// How long the fleet stays connected after every device has connected (or failed).
    public var hold: Duration
    /// Seconds between one device's messages.
    public var interval: Double
    /// At most this many enrollments and handshakes in flight.
    public var concurrency: Int

    public init(
        est: ESTClient, gateway: ProvisioningConfig.Endpoint, roots: [Certificate], serverName: String?, rate: Double, hold: Duration,
        interval: Double, concurrency: Int = 64
    ) {
        self.est = est
        self.gateway = gateway
        self.roots = roots
        self.serverName = serverName
        self.rate = rate
        self.hold = hold
        self.interval = interval
        self.concurrency = concurrency
    }

    /// Runs the fleet of `identities` (device ID, factory secret), calling `progress` with live
    /// counts every second; returns the counts and latency percentiles.
    public func run(_ identities: [(id: String, secret: String)], progress: @escaping @Sendable (String) -> Void) async throws
        -> SimulationStats.Summary
    {
        // The issuing CA, to send with each device certificate.
        let intermediates = try await est.caCertificates().filter { $0.subject != $0.issuer }
        let stats = SimulationStats(devices: identities.count, holdFor: hold)
        let gate = InFlightLimit(concurrency)
        let started = ContinuousClock.now
        let total = identities.count
        let reporter = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(1))
                progress(stats.line(elapsed: ContinuousClock.now - started, total: total))
            }
        }
        defer { reporter.cancel() }
        let simulation = self
        await withTaskGroup(of: Void.self) { group in
            for (index, identity) in identities.enumerated() {
                let start = started + .milliseconds(Int64(Double(index) / rate * 1000))
                group.addTask {
                    try? await Task.sleep(until: start)
                    await simulation.simulate(identity, intermediates: intermediates, stats: stats, gate: gate)
                }
            }
        }
        return stats.summary(devices: total, seconds: (ContinuousClock.now - started).seconds)
    }

    func simulate(_ identity: (id: String, secret: String), intermediates: [Certificate], stats: SimulationStats, gate: InFlightLimit) async
    {
        let timeout = est.timeout
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
}

extension Duration {
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Counts and latencies across the simulated fleet.
public final class SimulationStats: Sendable {
    public enum Step: String, CaseIterable, Sendable { case enroll, connect, telemetry }

    private struct State: Sendable {
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

    public struct Summary: Sendable, Encodable {
        public struct Latency: Sendable, Encodable {
            public var count: Int
            public var p50: Double
            public var p90: Double
            public var p99: Double
            public var max: Double
        }

        public var devices: Int
        public var seconds: Double
        public var enrolled: Int
        public var connections: Int
        public var messages: Int
        public var refused: Int
        public var errors: Int
        public var latencyMilliseconds: [String: Latency]
        public var failures: [String]

        public var text: String {
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
