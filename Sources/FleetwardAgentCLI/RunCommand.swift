import ArgumentParser
import FleetwardDevice
import Foundation

/// `fleetward-agent run`: stay connected, send telemetry, renew in time, reconnect.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Stay connected to the gateway: signed telemetry every interval, renewal in time, reconnect with backoff.",
        discussion: """
            Renews once two thirds of the certificate's lifetime has passed (jittered backoff on \
            failure; the old credential is kept until the new one is stored) and reconnects with \
            jittered backoff. Exits non-zero, saying why, when the device cannot go on by itself: the \
            server is not the pinned one, or the device was suspended, revoked or reported stolen.
            """
    )

    @OptionGroup var device: DeviceOptions

    @Option(help: ArgumentHelp("Seconds between telemetry messages.", valueName: "seconds"))
    var interval = 30.0

    @Option(
        help: ArgumentHelp(
            "Send this file's JSON object each time (the firmware keeps it current); default: a heartbeat.", valueName: "file"))
    var telemetry: String?

    @Option(help: ArgumentHelp("Stop after this many seconds (default: run until stopped).", valueName: "seconds"))
    var duration: Double?

    @OptionGroup var updates: TakeUpdates

    @Option(name: .customLong("update-interval"), help: ArgumentHelp("Seconds between update checks (with --slots).", valueName: "seconds"))
    var updateInterval = 3600.0

    func validate() throws {
        guard interval.isFinite, (0.1...86_400).contains(interval) else {
            throw ValidationError("--interval must be 0.1 to 86400 seconds")
        }
        if let duration, !(duration.isFinite && (0...31_536_000).contains(duration)) {
            throw ValidationError("--duration must be 0 to 31536000 seconds")
        }
        guard updateInterval.isFinite, (1...604_800).contains(updateInterval) else {
            throw ValidationError("--update-interval must be 1 to 604800 seconds")
        }
    }

    func run() async throws {
        let agent = try device.agent()
        let started = Date()
        let sequence = Counter()
        let file = telemetry
        let deadline = duration.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }
        var periodic: PeriodicTask?
        if let updater = updates.updater(for: agent) {
            periodic = PeriodicTask(every: .milliseconds(Int64(updateInterval * 1000))) { connection in
                do {
                    switch try await updater.apply(on: connection) {
                    case .upToDate: break
                    case .installed(let version, let slot):
                        AgentOutput.line("installed update \(version) on \(slot); health check passed")
                    }
                } catch let error as DeviceError where error.code == .updateRejected || error.code == .rolledBack {
                    AgentOutput.line("update: \(error.message)")
                }
            }
        }
        try await agent.run(
            interval: .milliseconds(Int64(interval * 1000)), until: deadline,
            telemetry: {
                if let file, let data = FileManager.default.contents(atPath: file),
                    (try? JSONSerialization.jsonObject(with: data)) is [String: Any]
                {
                    return Array(data)
                }
                return Array(#"{"heartbeat":\#(sequence.next()),"uptime_s":\#(Int(Date().timeIntervalSince(started)))}"#.utf8)
            },
            periodic: periodic,
            events: { event in
                switch event {
                case .connected(let identity):
                    AgentOutput.line("connected to the gateway as \(identity.device)" + (identity.owner.map { " (owner \($0))" } ?? ""))
                case .sent(let bytes):
                    AgentOutput.line("sent telemetry (\(bytes) bytes)")
                case .disconnected(let reason):
                    AgentOutput.line("disconnected: \(reason)")
                case .renewed(let serial, let notAfter):
                    AgentOutput.line("renewed: certificate \(serial), valid until \(AgentOutput.date(notAfter))")
                case .retrying(let reason, let seconds):
                    AgentOutput.line("retrying in \(String(format: "%.1f", seconds)) s: \(reason)")
                case .taskFailed(let reason):
                    AgentOutput.line("update check failed (retried at the next one): \(reason)")
                }
            })
    }
}

/// A thread-safe counter for the heartbeat sequence.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

/// Taking signed updates while running (`run`, `mqtt run`).
struct TakeUpdates: ParsableArguments {
    @Option(help: ArgumentHelp("Take signed updates into this A/B slot directory (see 'update apply').", valueName: "dir"))
    var slots: String?

    @Option(help: ArgumentHelp("This device's model, as releases name it (with --slots).", valueName: "model"))
    var model: String?

    @Option(help: "The release channel this device follows (with --slots).")
    var channel = "stable"

    @Option(
        name: .customLong("health-check"),
        help: ArgumentHelp("Run after switching to an update (see 'update apply').", valueName: "command"))
    var healthCheck: String?

    func validate() throws {
        guard (slots == nil) == (model == nil) else { throw ValidationError("--slots and --model go together") }
    }

    /// The updater these options describe; nil without --slots.
    func updater(for agent: DeviceAgent) -> Updater? {
        guard let slots, let model else { return nil }
        return Updater(agent: agent, slots: SlotStore(directory: slots), model: model, channel: channel, healthCheck: healthCheck)
    }
}
