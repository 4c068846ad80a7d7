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
        abstract: "Look at the CA hierarchy; sign the root's CRL ahead of time; set where certificates point for revocation.",
        subcommands: [Show.self, RootCRL.self, RevocationURL.self]
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

    /// `fleetward ca revocation-url`: where issued certificates point for CRLs and OCSP.
    struct RevocationURL: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revocation-url",
            abstract: "Show or set the base URL issued certificates give for CRLs (BASE/crl/…) and OCSP (BASE/ocsp).",
            discussion: """
                Set it to where relying parties reach the management API (or a proxy in front of it): \
                'serve --api-listen' does not change it, and 'serve' warns at start when the two differ. \
                Certificates issued from then on carry the new URL (a running 'serve' takes it at its next \
                start); those already issued keep theirs until renewed. 'none' leaves both pointers out.
                """)

        @OptionGroup var dataOptions: DataOptions

        @Argument(help: ArgumentHelp("The new base URL, http(s)://HOST[:PORT][/PATH], or none (default: show the current one).", valueName: "url"))
        var url: String?

        func run() throws {
            let directory = dataOptions.directory
            guard let url else {
                let current = try CAHierarchy.load(from: directory).configuration.revocationBaseURL
                return print(current ?? "none")
            }
            let base = url.lowercased() == "none" ? nil : url
            _ = try CAHierarchy.setRevocationBaseURL(base, in: directory)
            print(
                base.map { "Certificates issued from now on point to \($0)/crl/… and \($0)/ocsp (restart serve to apply)." }
                    ?? "Certificates issued from now on carry no CRL or OCSP pointer (restart serve to apply).")
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
            let custodian = try hierarchy.custodian(passphrase: passphrase)
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
