import ArgumentParser
import FleetwardDevice
import FleetwardPKCS11
import FleetwardPKI
import Foundation

/// `fleetward-agent`: Fleetward on the device. Enrolls, keeps the key sealed on the device,
/// renews, stays connected to the gateway with signed telemetry; and simulates a fleet.
@main
struct FleetwardAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleetward-agent",
        abstract: "Fleetward's device agent: enroll, renew, connect and send signed telemetry; or simulate a fleet.",
        discussion: """
            The device is programmed with a provisioning file (--config, from 'fleetward provisioning-config': \
            the EST and gateway endpoints and the one root it trusts). Keys are made on the device and \
            kept sealed in the credential directory (--credentials) under the device-unique key \
            (--unique-key), which lives apart from it. Exit codes: 0 done, 1 failure, 2 bad usage, \
            3 server unreachable, 4 refused by the server (revoked, suspended, bad credential), 5 server \
            not trusted (wrong CA or name), 6 sealed store damaged or not enrolled, 7 waiting for an \
            operator's approval, 8 update refused (not genuine, expired, older, other model, bad hash), \
            9 update rolled back (health check failed).
            """,
        subcommands: [
            FactoryRequestCommand.self, EnrollCommand.self, StatusCommand.self, RenewCommand.self, SendCommand.self, RunCommand.self,
            UpdateCommand.self, MQTTCommand.self, SimulateCommand.self,
        ]
    )

    static func main() async {
        // `--version` on the binary alone (ArgumentParser's own would also claim the subcommands'
        // `--version VERSION` options, such as `release publish --version 1.4.0`).
        if CommandLine.arguments.dropFirst() == ["--version"] {
            print(FleetwardVersion.string)
            Foundation.exit(0)
        }
        let command: any ParsableCommand
        do {
            command = try parseAsRoot(DeviceOptions.movedAfterSubcommand(Array(CommandLine.arguments.dropFirst())))
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = fullMessage(for: error)
            let firstLine = message.split(separator: "\n").first.map(String.init) ?? message
            fail(firstLine.hasPrefix("Error: ") ? String(firstLine.dropFirst(7)) : firstLine, code: 2)
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
        } catch let error as DeviceError {
            fail(error.message, code: Self.exitCode(error))
        } catch let error as ValidationError {
            fail(error.message, code: 2)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            fail((error as? ValidationError)?.message ?? String(describing: error), code: 1)
        }
    }

    static func exitCode(_ error: DeviceError) -> Int32 {
        switch error.code {
        case .unreachable, .timeout: 3
        case .refused, .handshakeRefused: 4
        case .untrustedServer: 5
        case .sealedStore, .notEnrolled: 6
        case .pending: 7
        case .updateRejected: 8
        case .rolledBack: 9
        default: 1
        }
    }

    static func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data(("fleetward-agent: error: " + message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
        Foundation.exit(code)
    }
}

/// Where the device's provisioning file, credentials and device-unique key are.
struct DeviceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The provisioning file: endpoints and the pinned root.", valueName: "file"))
    var config = "/etc/fleetward/provisioning.json"

    @Option(help: ArgumentHelp("The credential directory (sealed keys and certificate), apart from firmware.", valueName: "dir"))
    var credentials = "/var/lib/fleetward/credentials"

    @Option(
        name: .customLong("unique-key"),
        help: ArgumentHelp("The device-unique key that seals the credentials, on its own partition.", valueName: "file"))
    var uniqueKey = "/var/lib/fleetward-secret/device.key"

    @Option(
        name: .customLong("key-store"),
        help: ArgumentHelp(
            "Where the device's keys are made and used: 'sealed' (files sealed under the device-unique key) or a PKCS#11 token, "
                + "pkcs11:token=LABEL[?module-path=…&pin-source=FILE] (a secure element, a TPM through tpm2-pkcs11); "
                + "the PIN comes from FLEETWARD_PKCS11_PIN or pin-source.",
            valueName: "store"))
    var keyStore = "sealed"

    @Option(
        name: .customLong("pkcs11-module"),
        help: ArgumentHelp("The PKCS#11 module for --key-store (when the URI has no module-path).", valueName: "path"))
    var pkcs11Module: String?

    /// The token custody --key-store names, nil for sealed files.
    func custody() throws -> (any KeyCustody)? {
        guard keyStore != "sealed" else { return nil }
        guard keyStore.hasPrefix("pkcs11:") else {
            throw ValidationError("--key-store is 'sealed' or a pkcs11: URI, not '\(keyStore)'")
        }
        do {
            let uri = try PKCS11URI(parsing: keyStore)
            return TokenKeyCustody(token: try PKCS11Token(uri: uri, modulePath: pkcs11Module, pin: try uri.pin()))
        } catch let error as PKCS11Error {
            throw DeviceError(.sealedStore, error.message)
        }
    }

    /// The agent for this device; `create` makes the device-unique key when it is missing (first provisioning).
    func agent(create: Bool = false) throws -> DeviceAgent {
        let config = try ProvisioningConfig.load(path: config)
        // A missing key beside existing credentials is an unmounted partition or a typo, not a new device.
        if create, !FileManager.default.fileExists(atPath: uniqueKey),
            FileManager.default.fileExists(atPath: credentials + "/credential.sealed")
        {
            throw DeviceError(
                .sealedStore,
                "the device-unique key \(uniqueKey) is missing but \(credentials) holds sealed credentials: mount its partition or fix --unique-key"
            )
        }
        let key = try DeviceUniqueKey.load(path: uniqueKey, createIfMissing: create)
        return DeviceAgent(config: config, store: CredentialStore(directory: credentials, uniqueKey: key, custody: try custody()))
    }

    /// The options every device command shares, which may also come before the subcommand:
    /// `fleetward-agent --config P --credentials C enroll …` is `fleetward-agent enroll --config P
    /// --credentials C …` (so one shell variable can hold the agent and its device).
    static let sharedNames: Set<String> = ["--config", "--credentials", "--unique-key", "--key-store", "--pkcs11-module"]

    /// `arguments` with leading shared options moved after the subcommand path (`update apply`).
    static func movedAfterSubcommand(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            guard sharedNames.contains(String(argument.prefix { $0 != "=" })) else { break }
            leading.append(argument)
            if !argument.contains("="), index + 1 < arguments.count {
                leading.append(arguments[index + 1])
                index += 1
            }
            index += 1
        }
        guard !leading.isEmpty else { return arguments }
        var path: [String] = []
        var command: any ParsableCommand.Type = FleetwardAgent.self
        while index < arguments.count,
            let next = command.configuration.subcommands.first(where: { $0._commandName == arguments[index] })
        {
            path.append(arguments[index])
            command = next
            index += 1
        }
        // No subcommand named: leave the line as it was, for the parser's own message.
        guard !path.isEmpty else { return arguments }
        return path + leading + arguments[index...]
    }

    /// The anti-rollback counter, beside the device-unique key (apart from the credentials).
    func counter() throws -> SealedCounterFile {
        SealedCounterFile.beside(uniqueKeyPath: uniqueKey, uniqueKey: try DeviceUniqueKey.load(path: uniqueKey))
    }
}

enum AgentOutput {
    static func json(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        FileHandle.standardOutput.write(try encoder.encode(value) + Data("\n".utf8))
    }

    static func line(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// A progress line on stderr, keeping stdout for results.
    static func progress(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func date(_ date: Date) -> String {
        ISO8601DateFormatter().string(from: date)
    }
}

/// Reads a secret from `--x` or `--x-file` (a file keeps it out of the process list).
func secretValue(_ value: String?, file: String?, name: String) throws -> String? {
    if let file {
        // `-` reads it from standard input: nothing on the command line or in a file at all.
        let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
        guard let data else { throw ValidationError("cannot read --\(name)-file \(file)") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
    if value != nil {
        // Any user on the host can read a process's arguments (ps, /proc/PID/cmdline).
        FileHandle.standardError.write(
            Data("fleetward-agent: warning: --\(name) on the command line is visible to other users of this host; use --\(name)-file FILE (or - for standard input)\n".utf8))
    }
    return value
}
