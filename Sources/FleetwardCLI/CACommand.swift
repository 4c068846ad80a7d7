import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import Foundation

/// `fleetward ca …`: the CA hierarchy.
struct CACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Look at the CA hierarchy; sign the root's CRL ahead of time.",
        subcommands: [Show.self, RootCRL.self]
    )

    /// `fleetward ca show`: each CA's subject, key type, expiry and fingerprint.
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the hierarchy: subjects, key types, expiry and SHA-256 fingerprints (no passphrase needed)."
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let report = try HierarchyReport(hierarchy: try CAHierarchy.load(from: dataOptions.directory))
            if output.json {
                try Output.printJSON(report)
            } else {
                print(report.text)
            }
        }
    }

    /// `fleetward ca root-crl`: the root's CRL, signed where the root key is, for a host without it.
    struct RootCRL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "root-crl",
            abstract: "Sign the root CA's CRL for --days, for a server that runs without the root key.",
            discussion: """
                'serve' needs only the issuing and factory keys. Keep ca/root.key (and \
                releases/signing.key) off the host that serves: run this where the root key is, and \
                copy the written ca/root.crl to the serving host's data directory before it expires; \
                'serve' answers /crl/root.crl with it. The root CRL lists the revoked release signing \
                certificates (intermediates are not revoked here).
                """
        )

        @OptionGroup var dataOptions: DataOptions
        @Option(help: "How long the CRL is valid, in days (1 to 366).") var days = 180
        @Option(help: ArgumentHelp("Where to write it (default DIR/ca/root.crl).", valueName: "file")) var out: String?

        func run() async throws {
            guard (1...366).contains(days) else { throw ValidationError("--days must be 1 to 366") }
            let directory = dataOptions.directory
            let hierarchy = try CAHierarchy.load(from: directory)
            let passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
            let custodian = EncryptedFileKeyCustodian(directory: directory.path, passphrase: passphrase)
            let issuer = try hierarchy.makeIssuer(for: .root, custodian: custodian)
            let store = try await RegistryAccess.openStore(directory, databaseURL: dataOptions.databaseURL)
            let entries = try await store.revokedCertificates(profiles: [CertificateProfile.codesign.rawValue])
            let now = Date()
            let der = try issuer.revocationList(
                entries: entries, number: UInt64(now.timeIntervalSince1970 * 1000), thisUpdate: now,
                nextUpdate: now.addingTimeInterval(TimeInterval(days) * 86_400))
            let path = out ?? directory.offlineRootCRLPath
            try AtomicFile.write(der, to: path, permissions: 0o644)
            Output.progress("Root CRL (\(entries.count) revoked, valid \(days) days) written to \(path)")
        }
    }
}
