import ArgumentParser
import Foundation
import Logging

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
            AuditCommand.self, FactoryCommand.self,
        ]
    )

    /// Runs the command line, printing any failure as one line on stderr.
    static func main() async {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["FLEETWARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
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
