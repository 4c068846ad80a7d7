import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import Foundation

/// `fleetward token create|list|revoke`: API tokens for the management API (shown once, stored as HMACs).
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list and revoke API tokens.",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a bearer token with a role; it is printed once and stored only as an HMAC."
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Option(help: "admin, manufacturer, operator, owner, or metrics (reads GET /metrics only).") var role: String
        @Option(help: "The owner an owner token acts for.") var owner: String?
        @Option(
            name: .customLong("expires-in"),
            help: ArgumentHelp("How long it is valid: 90d, 12h, 30m (default: until revoked).", valueName: "duration"))
        var expiresIn: String?

        func run() async throws {
            guard let role = Role(rawValue: role) else {
                throw ValidationError("unknown role '\(self.role)'; use admin, manufacturer, operator, owner or metrics")
            }
            if role == .owner, owner == nil {
                throw ValidationError("an owner token needs --owner NAME (1 to 64 letters, digits, '-', '_', '.', '@')")
            }
            if role != .owner, owner != nil { throw ValidationError("--owner applies to owner tokens only") }
            let lifetime = try expiresIn.map(LifetimeParser.seconds)
            let (registrar, hasher) = try await dataOptions.openRegistrar()
            let created = try APITokens.make(role: role, owner: owner, lifetime: lifetime, hasher: hasher)
            try await registrar.createAPIToken(created.record, by: .console, at: Date())
            if output.json {
                struct Report: Encodable {
                    var id: String
                    var role: String
                    var owner: String?
                    var expiresAt: Date?
                    var token: String
                }
                try Output.printJSON(
                    Report(id: created.record.id, role: role.rawValue, owner: owner, expiresAt: created.record.expiresAt, token: created.token))
            } else {
                print(created.token)
                let until = created.record.expiresAt.map { ", valid until \(ISO8601DateFormatter().string(from: $0))" } ?? ""
                Output.progress("Token \(created.record.id) (\(role)\(until)) created; it is shown only this once.")
            }
        }
    }
}

extension TokenCommand {
    /// `fleetward token list`: every token's ID, role, owner, creation and expiry; never a secret.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API tokens (IDs, roles, owners, expiry; never the secrets).")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            let tokens = try await store.apiTokens()
            if output.json {
                struct Row: Encodable {
                    var id: String
                    var role: String
                    var owner: String?
                    var createdAt: Date
                    var expiresAt: Date?
                }
                return try Output.printJSON(
                    tokens.map { Row(id: $0.id, role: $0.role.rawValue, owner: $0.owner, createdAt: $0.createdAt, expiresAt: $0.expiresAt) })
            }
            let format = ISO8601DateFormatter()
            print("ID\tROLE\tOWNER\tCREATED\tEXPIRES")
            for token in tokens {
                print(
                    "\(token.id)\t\(token.role.rawValue)\t\(token.owner ?? "-")\t\(format.string(from: token.createdAt))\t"
                        + (token.expiresAt.map { format.string(from: $0) } ?? "never"))
            }
        }
    }

    /// `fleetward token revoke ID`.
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API token by its ID (the 16 hex digits after fwt_).")

        @OptionGroup var dataOptions: DataOptions

        @Argument(help: ArgumentHelp("The token's ID (never the token itself).", valueName: "id"))
        var id: String

        func run() async throws {
            guard id.count == 16, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw ValidationError("a token ID is the 16 lowercase hex digits after fwt_ (see 'fleetward token list')")
            }
            let (registrar, _) = try await dataOptions.openRegistrar()
            try await registrar.revokeAPIToken(id, by: .console, at: Date())
            print("Revoked token \(id).")
        }
    }
}

/// `fleetward audit verify|checkpoint`.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Check the audit log, and sign checkpoints of it to keep elsewhere.",
        subcommands: [Verify.self, Checkpoint.self]
    )

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the audit log's chain and MACs and name the first entry that was altered, removed or reordered.",
            discussion: """
                Every entry is chained by SHA-256 to the one before and carries a MAC under the data \
                directory's sealed registry key (so it needs the passphrase): a log edited by someone \
                who can write the database but cannot open that key fails here. With --checkpoint, the \
                log must still hold the entry a signed checkpoint names ('fleetward audit checkpoint'), \
                which also catches entries removed from its end.
                """
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions
        @Option(help: ArgumentHelp("A checkpoint made by 'fleetward audit checkpoint'.", valueName: "file"))
        var checkpoint: String?

        func run() async throws {
            // With the passphrase, each entry's MAC under the sealed registry key is checked too: a
            // chain recomputed by someone who could write the database but not open the key fails.
            let (registrar, hasher) = try await dataOptions.openRegistrar()
            let outcome = try await registrar.store.verifyAudit(sealer: hasher.auditSealer)
            struct Report: Encodable {
                var intact: Bool
                var entries: Int64?
                var firstBadEntry: Int64?
                var reason: String?
                var checkpoint: Int64?
            }
            guard case .intact(let entries) = outcome else {
                if case .broken(let sequence, let reason) = outcome {
                    if output.json { try Output.printJSON(Report(intact: false, firstBadEntry: sequence, reason: reason)) }
                    throw RegistryError(.auditBroken, "audit log broken at entry \(sequence): \(reason)")
                }
                return
            }
            var checked: Int64?
            if let checkpoint {
                let file = try AuditCheckpoint.read(checkpoint)
                let issuing = try CAHierarchy.load(from: dataOptions.directory).member(.issuing).certificate
                guard file.isSigned(by: issuing) else {
                    throw RegistryError(.auditBroken, "\(checkpoint) is not signed by this data directory's issuing CA")
                }
                switch try await file.compare(with: registrar.store) {
                case .holds:
                    checked = file.sequence
                case .truncated(let end):
                    if output.json {
                        try Output.printJSON(Report(intact: false, firstBadEntry: end + 1, reason: "truncated", checkpoint: file.sequence))
                    }
                    throw RegistryError(
                        .auditBroken,
                        "the audit log ends at entry \(end) but checkpoint \(checkpoint) was signed at entry \(file.sequence): entries were removed")
                case .rewritten:
                    if output.json {
                        try Output.printJSON(Report(intact: false, firstBadEntry: file.sequence, reason: "rewritten", checkpoint: file.sequence))
                    }
                    throw RegistryError(
                        .auditBroken, "entry \(file.sequence) is not the one checkpoint \(checkpoint) signed: the log was rewritten")
                }
            }
            if output.json {
                try Output.printJSON(Report(intact: true, entries: entries, checkpoint: checked))
            } else {
                print("Audit log intact: \(entries) entries\(checked.map { ", holding checkpoint entry \($0)" } ?? "").")
            }
        }
    }

    struct Checkpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign the audit log's current end with the issuing CA's key, to keep off this host.",
            discussion: """
                Prints (or writes to --out) a JSON checkpoint: the last entry's number and hash and the \
                time, signed by the issuing CA. Keep checkpoints somewhere the database's writers cannot \
                reach; 'fleetward audit verify --checkpoint FILE' then detects a log cut short or rewritten.
                """
        )

        @OptionGroup var dataOptions: DataOptions
        @Option(help: ArgumentHelp("Write the checkpoint here (replaced atomically) instead of stdout.", valueName: "file"))
        var out: String?

        func run() async throws {
            let directory = dataOptions.directory
            let hierarchy = try CAHierarchy.load(from: directory)
            let passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
            let (registrar, hasher) = try await dataOptions.openRegistrar(passphrase: passphrase)
            let head = try await registrar.store.auditHead()
            guard head > 0, let entry = try await registrar.store.auditEntries(from: head, limit: 1).first else {
                throw ValidationError("the audit log is empty: nothing to checkpoint")
            }
            guard hasher.auditSealer.isSealed(entry) else {
                throw RegistryError(.auditBroken, "the last audit entry does not carry the registry key's MAC; run 'fleetward audit verify'")
            }
            let custodian = try hierarchy.custodian(passphrase: passphrase)
            let issuing = hierarchy.member(.issuing)
            let checkpoint = try AuditCheckpoint.make(
                head: entry, key: try custodian.loadKey(named: DataDirectory.keyName(of: .issuing)), signer: issuing.certificate,
                signerDER: issuing.der, at: Date())
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            let bytes = try encoder.encode(checkpoint) + Data("\n".utf8)
            if let out {
                try AtomicFile.write(Array(bytes), to: out, permissions: 0o644)
                Output.progress("Checkpoint of entry \(checkpoint.sequence) written to \(out)")
            } else {
                FileHandle.standardOutput.write(bytes)
            }
        }
    }
}
