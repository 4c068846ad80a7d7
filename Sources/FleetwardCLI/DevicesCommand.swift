import ArgumentParser
import FleetwardAuthority
import FleetwardPKI
import FleetwardRegistry
import Foundation

/// `fleetward devices …`: the registry at the console, acting on the data directory directly.
struct DevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "Import, list and change devices in the registry (as admin, at the console).",
        subcommands: [Import.self, List.self, Show.self, Transition.Suspend.self, Transition.Resume.self, Transition.Revoke.self]
    )

    /// `fleetward devices import FILE.csv`.
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import an allow-list CSV: id,secret,key_sha256,model[,metadata].",
            discussion: """
                Each row gives a device ID and exactly one proof: the device's factory secret (16 to 256 bytes; \
                stored only as an HMAC) or key_sha256 (SHA-256 of the device key's DER SubjectPublicKeyInfo, 64 hex \
                digits). metadata is key=value pairs separated by ';'. A file with a malformed row imports nothing \
                and names the lines, unless --skip-invalid. Rows are written in transactions of --batch rows; \
                running the same file again only counts duplicates.
                """
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Argument(help: ArgumentHelp("The CSV file.", valueName: "file"))
        var file: String

        @Flag(help: "Import the valid rows of a file that has malformed ones.")
        var skipInvalid = false

        @Option(help: "Rows per transaction.")
        var batch = AllowListImport.defaultBatchSize

        func run() async throws {
            guard (1...1_000_000).contains(batch) else { throw ValidationError("--batch must be 1 to 1000000") }
            let (registrar, hasher) = try await dataOptions.openRegistrar()
            var job = AllowListImport(path: file)
            job.batchSize = batch
            job.skipInvalid = skipInvalid
            let bar = ProgressBar(enabled: !output.json && isatty(STDERR_FILENO) == 1)
            let work = Task { [job] in
                try await job.run(into: registrar, hasher: hasher, by: .console, progress: { bar.update($0) })
            }
            // Ctrl-C or SIGTERM stops after the batch being written, and says how far it got.
            let signals = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { work.cancel() }
                source.resume()
                return source
            }
            defer { for source in signals { source.cancel() } }
            let summary: AllowListImport.Summary
            do {
                summary = try await work.value
            } catch is CancellationError {
                bar.finish()
                Output.progress(
                    "interrupted: \(bar.committed) of \(bar.total) rows committed (whole batches); run the same command again to finish")
                throw ExitCode(130)
            }
            bar.finish()
            if output.json {
                try Output.printJSON(summary)
            } else {
                // Under a second a rate says nothing: the time alone, in milliseconds.
                let took =
                    summary.seconds < 1
                    ? "\(Int((summary.seconds * 1000).rounded())) ms"
                    : "\(String(format: "%.1f", summary.seconds)) s (\(summary.rowsPerSecond) rows/s)"
                print(
                    "Imported \(summary.inserted) devices from \(summary.file) in \(took); "
                        + "\(summary.duplicates) already registered, \(summary.rejected) rejected.")
                for error in summary.errors { print("  rejected \(error)") }
            }
        }
    }

    /// `fleetward devices list`.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List devices, in ID order, with filters and a cursor.")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Option(help: "Only devices in this state.") var state: String?
        @Option(help: "Only devices of this owner.") var owner: String?
        @Option(help: "Only devices of this model.") var model: String?
        @Option(help: "Start after this device ID (the last ID of the previous page).") var after: String?
        @Option(help: "At most this many devices (1 to 10000).") var limit = 100

        func run() async throws {
            var filter = DeviceFilter(owner: owner, model: model)
            if let state {
                guard let parsed = DeviceState(rawValue: state) else {
                    throw ValidationError("unknown state '\(state)'; use \(DeviceState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                filter.state = parsed
            }
            guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be 1 to 10000") }
            let cursor = try after.map(DeviceID.init)
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            // One more than asked tells whether another page follows.
            let fetched = try await store.devices(matching: filter, after: cursor, limit: limit + 1)
            let devices = Array(fetched.prefix(limit))
            let next = fetched.count > limit ? devices.last?.id.rawValue : nil
            if output.json {
                struct Page: Encodable {
                    var devices: [Device.PublicView]
                    var next: String?
                    func encode(to encoder: any Encoder) throws {
                        var container = encoder.container(keyedBy: CodingKeys.self)
                        try container.encode(devices, forKey: .devices)
                        try container.encode(next, forKey: .next)
                    }
                    enum CodingKeys: String, CodingKey { case devices, next }
                }
                try Output.printJSON(Page(devices: devices.map(\.publicView), next: next))
            } else {
                print("ID\tSTATE\tMODEL\tOWNER")
                for device in devices {
                    print("\(device.id)\t\(device.state)\t\(device.model)\t\(device.owner ?? "-")")
                }
                if let next { Output.progress("… more devices follow: the next page is --after \(next)") }
            }
        }
    }

    /// `fleetward devices show ID`.
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one device.")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: ArgumentHelp("The device ID.", valueName: "id")) var id: String

        func run() async throws {
            let deviceID = try DeviceID(id)
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            guard let device = try await store.device(deviceID) else {
                throw RegistryError(.notFound, "no device \(deviceID)")
            }
            let view = device.publicView
            if output.json {
                try Output.printJSON(view)
            } else {
                print(
                    "Device   \(view.id)\nState    \(view.state)\nModel    \(view.model)\nOwner    \(view.owner ?? "-")\nProof    \(view.proof)\(view.keySHA256.map { " sha256 \($0)" } ?? "")"
                )
                if !view.metadata.isEmpty {
                    print("Metadata " + view.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; "))
                }
            }
        }
    }

    /// `fleetward devices suspend|resume|revoke ID`.
    enum Transition {
        static func run(_ event: LifecycleStateMachine.Event, id: String, dataOptions: DataOptions, output: OutputOptions) async throws {
            let deviceID = try DeviceID(id)
            let device = try await dataOptions.openRegistrar().registrar.apply(event, to: deviceID, by: .console, at: Date())
            if output.json {
                try Output.printJSON(device.publicView)
            } else {
                print("\(device.id) is now \(device.state)")
            }
        }

        struct Suspend: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Suspend an active device (it can be resumed).")
            @OptionGroup var dataOptions: DataOptions
            @OptionGroup var output: OutputOptions
            @Argument(help: ArgumentHelp("The device ID.", valueName: "id")) var id: String
            func run() async throws { try await Transition.run(.suspend, id: id, dataOptions: dataOptions, output: output) }
        }

        struct Resume: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Resume a suspended device.")
            @OptionGroup var dataOptions: DataOptions
            @OptionGroup var output: OutputOptions
            @Argument(help: ArgumentHelp("The device ID.", valueName: "id")) var id: String
            func run() async throws { try await Transition.run(.resume, id: id, dataOptions: dataOptions, output: output) }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revoke a device for good, and its certificates.")
            @OptionGroup var dataOptions: DataOptions
            @OptionGroup var output: OutputOptions
            @Argument(help: ArgumentHelp("The device ID.", valueName: "id")) var id: String
            func run() async throws { try await Transition.run(.revoke, id: id, dataOptions: dataOptions, output: output) }
        }
    }
}

/// A one-line progress bar on stderr: done/total, rows per second, ETA.
final class ProgressBar: @unchecked Sendable {
    private let enabled: Bool
    private var drawn = false
    private let lock = NSLock()
    private var last: AllowListImport.Progress?
    private var lastDrawn = ContinuousClock.now - .seconds(1)

    init(enabled: Bool) { self.enabled = enabled }

    /// Rows committed so far, and rows in the file.
    var committed: Int { lock.withLock { last?.rowsDone ?? 0 } }
    var total: Int { lock.withLock { last?.rowsTotal ?? 0 } }

    func update(_ progress: AllowListImport.Progress) {
        let draw = lock.withLock { () -> Bool in
            last = progress
            let now = ContinuousClock.now
            guard now - lastDrawn > .milliseconds(100) || progress.rowsDone == progress.rowsTotal else { return false }
            lastDrawn = now
            return true
        }
        guard enabled, draw, progress.rowsTotal > 0 else { return }
        let fraction = Double(progress.rowsDone) / Double(progress.rowsTotal)
        let width = 30
        let filled = Int(fraction * Double(width))
        let rate = progress.elapsed > 0 ? Double(progress.rowsDone) / progress.elapsed : 0
        let eta = rate > 0 ? Double(progress.rowsTotal - progress.rowsDone) / rate : 0
        let line = String(
            format: "\r[%@%@] %3d%%  %d/%d rows  %.0f rows/s  ETA %.0fs ",
            String(repeating: "#", count: filled), String(repeating: ".", count: width - filled),
            Int(fraction * 100), progress.rowsDone, progress.rowsTotal, rate, eta
        )
        FileHandle.standardError.write(Data(line.utf8))
        drawn = true
    }

    func finish() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
