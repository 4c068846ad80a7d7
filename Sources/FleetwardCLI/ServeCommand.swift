import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import Foundation
import Logging

/// `fleetward serve`: run Fleetward on a data directory, creating it first when it does not exist.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run Fleetward on a data directory (created with the defaults of 'init' when missing).",
        discussion: """
            This build brings up the certificate authority: it creates or opens the hierarchy, checks \
            that the passphrase opens the issuing and factory keys, and prints the hierarchy. The EST, \
            gateway and management listeners are not part of this build yet.
            """
    )

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let logger = Logger(label: "fleetward.serve")
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
        logger.info("certificate authority ready", metadata: ["fleetward.data": "\(directory.path)"])
        let report = try HierarchyReport(hierarchy: hierarchy)
        if output.json {
            try Output.printJSON(report)
        } else {
            print(report.text)
        }
    }
}
