import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardRegistry
import Foundation

/// `--data DIR`, shared by every command that works on a data directory.
struct DataOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp("The data directory (default: $FLEETWARD_DATA, else ./fleetward-data).", valueName: "dir")
    )
    var data: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The registry database: postgres://user:password@host:port/db (default: $FLEETWARD_DATABASE, else SQLite inside the data directory).",
            valueName: "url"
        )
    )
    var database: String?

    /// The PostgreSQL URL, when one is chosen.
    var databaseURL: String? {
        database ?? ProcessInfo.processInfo.environment["FLEETWARD_DATABASE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var directory: DataDirectory {
        DataDirectory(path: data ?? ProcessInfo.processInfo.environment["FLEETWARD_DATA"] ?? "fleetward-data")
    }

    /// The registry for a command that changes it. Every change's audit entry is sealed with a MAC
    /// under the data directory's sealed registry key, so every such command needs the passphrase
    /// (docs/THREATS.md: the console acts as admin, and proves it the same way each time).
    func openRegistrar(passphrase: Passphrase? = nil) async throws -> (registrar: Registrar, hasher: SecretHasher) {
        let store = try await RegistryAccess.openStore(directory, databaseURL: databaseURL)
        let passphrase = try passphrase ?? PassphraseSource.read(purpose: "for the registry key", confirm: false)
        let hasher = try RegistryAccess.openHasher(directory, passphrase: passphrase)
        return (Registrar(store: store, sealer: hasher.auditSealer), hasher)
    }
}

/// `--json`, for commands that print data.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print machine-readable JSON on stdout.")
    var json = false
}

enum Output {
    static func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// A progress line on stderr, so stdout stays clean for data.
    static func progress(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
