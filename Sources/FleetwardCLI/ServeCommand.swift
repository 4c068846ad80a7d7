import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardServer
import Foundation
import Hummingbird
import Logging

/// `fleetward serve`: run Fleetward on a data directory, creating it first when it does not exist.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run Fleetward on a data directory (created with the defaults of 'init' when missing).",
        discussion: """
            Creates or opens the CA hierarchy, checks that the passphrase opens the issuing and factory \
            keys, opens the registry (SQLite inside the data directory, or --database) and serves the \
            management API (bearer tokens from 'fleetward token create'). It prints one line per \
            listener once it accepts connections, and stops cleanly on SIGINT or SIGTERM. The EST and \
            gateway listeners are not part of this build yet.
            """
    )

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var output: OutputOptions

    @Option(
        name: .customLong("api-listen"),
        help: ArgumentHelp("Where the management API listens (port 0 picks a free one).", valueName: "host:port")
    )
    var apiListen = "127.0.0.1:8080"

    func run() async throws {
        let logger = Logger(label: "fleetward.serve")
        let apiAddress = try ListenAddress(parsing: apiListen)
        let directory = dataOptions.directory
        let hierarchy: CAHierarchy
        let passphrase: Passphrase
        if FileManager.default.fileExists(atPath: directory.configurationPath) {
            passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
            hierarchy = try CAHierarchy.load(from: directory)
        } else {
            logger.info("creating a new CA", metadata: ["fleetward.data": "\(directory.path)"])
            passphrase = try PassphraseSource.read(purpose: "for the new CA keys", confirm: true)
            hierarchy = try CAHierarchy.create(
                in: directory, configuration: AuthorityConfiguration(), passphrase: passphrase,
                progress: { Output.progress($0 + "…") }
            )
        }
        let custodian = EncryptedFileKeyCustodian(directory: directory.path, passphrase: passphrase)
        let authority = CertificateAuthority(hierarchy: hierarchy, custodian: custodian)
        _ = try authority.issuer(for: .issuing)
        _ = try authority.issuer(for: .factory)
        let store = try await RegistryAccess.openStore(directory, databaseURL: dataOptions.databaseURL)
        let hasher = try RegistryAccess.openHasher(directory, passphrase: passphrase)
        logger.info("certificate authority ready", metadata: ["fleetward.data": "\(directory.path)"])
        let report = try HierarchyReport(hierarchy: hierarchy)
        if output.json {
            try Output.printJSON(report)
        } else {
            FileHandle.standardOutput.write(Data((report.text + "\n").utf8))
        }

        let api = ManagementAPI(store: store, hasher: hasher)
        let json = output.json
        let application = ManagementServer.application(api, address: apiAddress, logger: logger) { bound in
            if json {
                try? Output.printJSON(["listener": "api", "url": "http://\(bound)"])
            } else {
                let line = "management API listening on http://\(bound) (OpenAPI: http://\(bound)\(ManagementAPI.openAPIPath))\n"
                FileHandle.standardOutput.write(Data(line.utf8))
            }
        }
        try await application.runService()
    }
}
