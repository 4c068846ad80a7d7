import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import Foundation

/// `fleetward factory issue`: birth certificates for a factory line's batch of CSRs.
struct FactoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "factory",
        abstract: "Birth certificates for the factory line.",
        subcommands: [Issue.self]
    )

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign every CSR in a directory with the factory CA (profile birth) and record them.",
            discussion: """
                Each CSR (*.csr, *.der or *.pem, PEM or DER) names its device by subject serialNumber, \
                else commonName, else the file name. All are checked before any is signed; a bad one \
                stops the batch and changes nothing. The devices are registered (state allowed, proved \
                by the birth key's fingerprint), the certificates recorded, and OUT/<ID>.pem written.
                """
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        @Option(name: .customLong("csr-dir"), help: ArgumentHelp("The directory of CSRs.", valueName: "dir")) var csrDirectory: String
        @Option(name: .customLong("out"), help: ArgumentHelp("Where the certificates go.", valueName: "dir")) var outDirectory: String
        @Option(help: "The model recorded for newly registered devices.") var model = "unknown"
        @Option(help: "Validity in days (default: the birth profile's).") var days: Int?

        func run() async throws {
            let directory = dataOptions.directory
            let hierarchy = try CAHierarchy.load(from: directory)
            let store = try await RegistryAccess.openStore(directory, databaseURL: dataOptions.databaseURL)
            let passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
            let authority = CertificateAuthority(
                hierarchy: hierarchy, custodian: try hierarchy.custodian(passphrase: passphrase))
            var batch = FactoryBatch(csrDirectory: csrDirectory, outDirectory: outDirectory)
            batch.model = model
            batch.days = days
            let showProgress = !output.json && isatty(STDERR_FILENO) == 1
            let registrar = try await dataOptions.openRegistrar(passphrase: passphrase).registrar
            let summary = try await batch.run(authority: authority, registrar: registrar, by: .console) { done, total in
                if showProgress { FileHandle.standardError.write(Data("\r  signing \(done)/\(total)…".utf8)) }
            }
            if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
            if output.json {
                try Output.printJSON(summary)
            } else {
                print(
                    "Issued \(summary.issued) birth certificates to \(summary.out) (\(summary.registered) devices newly registered) in \(summary.seconds) s, \(summary.certificatesPerSecond)/s."
                )
            }
        }
    }
}
