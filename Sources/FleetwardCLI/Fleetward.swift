import ArgumentParser
import FleetwardPKI
import Foundation
import Logging
import NIOCore
import NIOPosix

/// The `fleetward` command: the fleet's certificate authority, registry and servers.
@main
struct Fleetward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleetward",
        abstract: "Fleetward: the certificate authority, registry and front door of an IoT fleet.",
        discussion: """
            Start with 'fleetward init --data DIR' (or just 'fleetward serve', which creates DIR when it \
            does not exist). Private keys are encrypted with the passphrase from FLEETWARD_PASSPHRASE \
            or, when it is unset, a prompt.
            """,
        subcommands: [
            InitCommand.self, ServeCommand.self, CACommand.self, CertCommand.self, DevicesCommand.self, TokenCommand.self,
            AuditCommand.self, FactoryCommand.self, ProvisioningConfigCommand.self, ReleaseCommand.self, MQTTPolicyCommand.self,
            DemoCommand.self,
        ]
    )

    /// Runs the command line, printing any failure as one line on stderr.
    static func main() async {
        // `--version` on the binary alone (ArgumentParser's own would also claim the subcommands'
        // `--version VERSION` options, such as `release publish --version 1.4.0`).
        if CommandLine.arguments.dropFirst() == ["--version"] {
            print(FleetwardVersion.string)
            Foundation.exit(0)
        }
        let command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let message = fullMessage(for: error)
            let code = exitCode(for: error)
            if code == .success {
                // --help, --version: print in full.
                exit(withError: error)
            }
            let firstLine = message.split(separator: "\n").first.map(String.init) ?? message
            fail(firstLine.hasPrefix("Error: ") ? String(firstLine.dropFirst(7)) : firstLine, code: code.rawValue)
        }
        // `serve --json` logs one JSON object per line, for log shippers; everything else logs text.
        let level = ProcessInfo.processInfo.environment["FLEETWARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        if let serve = command as? ServeCommand, serve.output.json {
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, logLevel: level) }
        } else {
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
        if command is ServeCommand {
            // One event loop per CPU this process may run on (taskset, cpusets), not per CPU of
            // the machine: more loops than CPUs only adds context switches.
            if let allowed = allowedCPUCount() {
                NIOSingletons.groupLoopCountSuggestion = allowed
                NIOSingletons.blockingPoolThreadCountSuggestion = max(2, allowed)
            }
            // The server's tasks run on NIO's event loops instead of a separate thread pool: no
            // thread hop between a connection's I/O and its handler.
            _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var syncCommand = command
                try syncCommand.run()
            }
        } catch let exit as ExitCode {
            Foundation.exit(exit.rawValue)
        } catch {
            // `fleetward help …` and `--help` on a subcommand arrive here from ArgumentParser's help command.
            if exitCode(for: error) == .success { exit(withError: error) }
            fail(describe(error), code: 1)
        }
    }

    /// The CPUs in this process's affinity mask (`Cpus_allowed_list` in /proc/self/status, e.g.
    /// `0-3,6`), or nil where that cannot be read.
    static func allowedCPUCount() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
        else { return nil }
        var count = 0
        for range in line.dropFirst("Cpus_allowed_list:".count).split(separator: ",") {
            let bounds = range.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1: count += 1
            case 2 where bounds[1] >= bounds[0]: count += bounds[1] - bounds[0] + 1
            default: return nil
            }
        }
        return count > 0 ? count : nil
    }

    static func fail(_ message: String, code: Int32) -> Never {
        let line = "fleetward: error: " + message.replacingOccurrences(of: "\n", with: " ") + "\n"
        FileHandle.standardError.write(Data(line.utf8))
        Foundation.exit(code == 0 ? 1 : code)
    }

    /// One sentence for any error: our error types print their message; others their description.
    static func describe(_ error: any Error) -> String {
        if let validation = error as? ValidationError { return validation.message }
        return String(describing: error)
    }
}
