import ArgumentParser
import FleetwardAuthority
import FleetwardRegistry
import Foundation

/// `fleetward token create`: an API token for the management API, printed once.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create API tokens.",
        subcommands: [Create.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a bearer token with a role; it is printed once and stored only as an HMAC."
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Option(help: "admin, manufacturer, operator or owner.") var role: String
        @Option(help: "The owner an owner token acts for.") var owner: String?

        func run() async throws {
            guard let role = Role(rawValue: role) else {
                throw ValidationError("unknown role '\(self.role)'; use admin, manufacturer, operator or owner")
            }
            if role == .owner, owner == nil {
                throw ValidationError("an owner token needs --owner NAME (1 to 64 letters, digits, '-', '_', '.', '@')")
            }
            if role != .owner, owner != nil { throw ValidationError("--owner applies to owner tokens only") }
            let directory = dataOptions.directory
            let store = try await RegistryAccess.openStore(directory, databaseURL: dataOptions.databaseURL)
            let passphrase = try PassphraseSource.read(purpose: "for the registry key", confirm: false)
            let hasher = try RegistryAccess.openHasher(directory, passphrase: passphrase)
            let created = try APITokens.make(role: role, owner: owner, hasher: hasher)
            try await Registrar(store: store).createAPIToken(created.record, by: .console, at: Date())
            if output.json {
                struct Report: Encodable {
                    var id: String
                    var role: String
                    var owner: String?
                    var token: String
                }
                try Output.printJSON(Report(id: created.record.id, role: role.rawValue, owner: owner, token: created.token))
            } else {
                print(created.token)
                Output.progress("Token \(created.record.id) (\(role)) created; it is shown only this once.")
            }
        }
    }
}

/// `fleetward audit verify`: walk the hash chain.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Check the audit log.",
        subcommands: [Verify.self]
    )

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the audit log's SHA-256 chain and name the first entry that was altered, removed or reordered."
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            let outcome = try await store.verifyAudit()
            switch outcome {
            case .intact(let entries):
                if output.json {
                    try Output.printJSON(["intact": "true", "entries": "\(entries)"])
                } else {
                    print("Audit log intact: \(entries) entries.")
                }
            case .broken(let sequence, let reason):
                if output.json {
                    try Output.printJSON(["intact": "false", "firstBadEntry": "\(sequence)", "reason": reason])
                }
                throw RegistryError(.auditBroken, "audit log broken at entry \(sequence): \(reason)")
            }
        }
    }
}
