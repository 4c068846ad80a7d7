import ArgumentParser
import FleetwardDevice
import FleetwardPKI
import Foundation

/// `fleetward-agent update`: signed over-the-air updates on the device.
struct UpdateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Check for and install signed updates: verified against the pinned root, A/B slots, health check, rollback.",
        discussion: """
            The manifest must be signed by a release signing (codesign) certificate under the pinned \
            root, unexpired, newer than the last one this device accepted (kept in the sealed store) \
            and for its model; the artifact must match its size and SHA-256. Only then is it written \
            into the inactive slot of --slots, and 'current' switched to it in one step. Exit codes \
            beyond the agent's: 8 update refused (nothing written), 9 health check failed (switched back).
            """,
        subcommands: [Check.self, Apply.self]
    )

    /// Which device and slots.
    struct Options: ParsableArguments {
        @OptionGroup var device: DeviceOptions

        @Option(help: ArgumentHelp("The A/B slot directory (slot-a, slot-b, current).", valueName: "dir"))
        var slots = "/var/lib/fleetward/slots"

        @Option(help: ArgumentHelp("This device's model, as releases name it.", valueName: "model"))
        var model: String

        @Option(help: "The release channel this device follows.")
        var channel = "stable"

        @Flag(help: "Print machine-readable JSON on stdout.")
        var json = false

        func updater(healthCheck: String? = nil, healthTimeout: Double = 60) throws -> Updater {
            var updater = Updater(
                agent: try device.agent(), slots: SlotStore(directory: slots), model: model, channel: channel, healthCheck: healthCheck,
                healthTimeout: .milliseconds(Int64(healthTimeout * 1000)))
            updater.counter = try device.counter()
            return updater
        }
    }

    struct CheckReport: Encodable {
        var device: String
        var running: String?
        var slot: String
        var accepted: UInt64
        var offered: Offered?

        struct Offered: Encodable {
            var version: String
            var manifestVersion: UInt64
            var size: Int64
            var sha256: String
            var expires: Date
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask the gateway for an update and verify its manifest; download and install nothing.")

        @OptionGroup var options: Options

        func run() async throws {
            let updater = try options.updater()
            let connection = try await updater.agent.connect()
            defer { Task { await connection.close() } }
            let checked = try await updater.check(on: connection)
            let report = CheckReport(
                device: connection.identity.device, running: try updater.slots.runningRelease()?.version, slot: try updater.slots.current(),
                accepted: try updater.agent.credential().acceptedManifestVersion,
                offered: checked.map {
                    .init(
                        version: $0.manifest.version, manifestVersion: $0.manifest.manifestVersion, size: $0.manifest.artifact.size,
                        sha256: $0.manifest.artifact.sha256, expires: $0.manifest.expires)
                })
            if options.json { return try AgentOutput.json(report) }
            if let offered = report.offered {
                AgentOutput.line(
                    "update \(offered.version) (manifest \(offered.manifestVersion), \(offered.size) bytes) is offered and verified; run 'update apply' to install it"
                )
            } else {
                AgentOutput.line("up to date: running \(report.running ?? "the factory image") on \(report.slot)")
            }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download, verify and install the offered update into the inactive slot, switch, health-check, roll back on failure.")

        @OptionGroup var options: Options

        @Option(
            name: .customLong("health-check"),
            help: ArgumentHelp(
                "A shell command run after the switch (FLEETWARD_SLOT names the new image); non-zero switches back.", valueName: "command"))
        var healthCheck: String?

        @Option(name: .customLong("health-timeout"), help: ArgumentHelp("Seconds the health check may take.", valueName: "seconds"))
        var healthTimeout = 60.0

        func validate() throws {
            guard healthTimeout.isFinite, (0.1...3600).contains(healthTimeout) else {
                throw ValidationError("--health-timeout must be 0.1 to 3600 seconds")
            }
        }

        func run() async throws {
            let updater = try options.updater(healthCheck: healthCheck, healthTimeout: healthTimeout)
            let connection = try await updater.agent.connect()
            defer { Task { await connection.close() } }
            let json = options.json
            let showProgress = !json && isatty(STDERR_FILENO) == 1
            let outcome = try await updater.apply(on: connection) { event in
                switch event {
                case .offered(let version, let manifestVersion, let size):
                    AgentOutput.progress("update \(version) (manifest \(manifestVersion), \(size) bytes) offered and verified")
                case .resuming(let from):
                    AgentOutput.progress("resuming the download at \(from) bytes")
                case .downloading(let done, let total):
                    if showProgress {
                        FileHandle.standardError.write(Data("\r  downloading \(done >> 20)/\(total >> 20) MiB…".utf8))
                        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
                    }
                case .verified(let sha256):
                    AgentOutput.progress("artifact verified (SHA-256 \(sha256))")
                case .installing(let slot):
                    AgentOutput.progress("installing into \(slot)")
                case .switched(let slot):
                    AgentOutput.progress("switched to \(slot); running the health check")
                case .recovered(let what):
                    AgentOutput.progress("recovered an interrupted update: \(what)")
                case .reportFailed(let why):
                    AgentOutput.progress("warning: \(why)")
                }
            }
            switch outcome {
            case .upToDate:
                if json { return try AgentOutput.json(["outcome": "up-to-date", "slot": try updater.slots.current()]) }
                AgentOutput.line("up to date: nothing newer is offered to this device")
            case .installed(let version, let slot):
                if json { return try AgentOutput.json(["outcome": "installed", "version": version, "slot": slot]) }
                AgentOutput.line("installed \(version) on \(slot); health check passed")
            }
        }
    }
}
