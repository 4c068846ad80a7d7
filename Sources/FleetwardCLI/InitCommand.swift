import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKCS11
import FleetwardPKI
import Foundation

/// `fleetward init`: create the CA hierarchy and gateway certificate in a data directory.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the fleet's CA hierarchy (root, issuing, factory) and gateway certificate.",
        discussion: """
            Keys are written as encrypted PKCS#8 (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) with mode 0600, \
            under the passphrase from FLEETWARD_PASSPHRASE or a prompt. OpenSSL opens them with the same \
            passphrase: openssl pkey -in DIR/ca/root.key -passin env:FLEETWARD_PASSPHRASE -noout
            """
    )

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var output: OutputOptions

    @Option(help: "Organization name written into every certificate subject.")
    var org = "Fleetward"

    @Option(
        name: .customLong("host"),
        help: ArgumentHelp(
            "A DNS name or IP address the servers' certificate (EST and gateway) is for (repeatable). Given, the list replaces the "
                + "defaults localhost, 127.0.0.1 and ::1: name them too to keep them.", valueName: "name"))
    var hosts: [String] = []

    @Option(help: ArgumentHelp("Root CA key type: P-256 or P-384.", valueName: "type"))
    var rootKey = "P-384"

    @Option(help: ArgumentHelp("Issuing CA key type: P-256 or P-384.", valueName: "type"))
    var issuingKey = "P-256"

    @Option(help: ArgumentHelp("Factory CA key type: P-256 or P-384.", valueName: "type"))
    var factoryKey = "P-256"

    @Option(help: "Root CA lifetime in days (default 20 years).")
    var rootDays = 7305

    @Option(help: "Issuing and factory CA lifetime in days (default 5 years).")
    var intermediateDays = 1826

    @Option(help: ArgumentHelp("PBKDF2 iterations protecting the key files.", valueName: "n"))
    var kdfIterations = PBES2.defaultIterations

    @Option(
        help: ArgumentHelp(
            "Base URL where relying parties reach the CRLs and OCSP (the management API); issued certificates carry BASE/crl/<ca>.crl and BASE/ocsp. 'none' leaves them out.",
            valueName: "url"))
    var revocationURL = "http://127.0.0.1:8080"

    @Option(
        name: .customLong("key-store"),
        help: ArgumentHelp(
            "Keep the issuing, factory and release-signing keys in this PKCS#11 token (an RFC 7512 URI: pkcs11:token=LABEL[?module-path=…&pin-source=FILE]); the PIN comes from FLEETWARD_PKCS11_PIN or pin-source. Default: encrypted files.",
            valueName: "uri"))
    var keyStore: String?

    @Option(
        name: .customLong("pkcs11-module"),
        help: ArgumentHelp("The PKCS#11 module for --key-store when its URI has no module-path.", valueName: "path"))
    var pkcs11Module: String?

    @Flag(help: "Replace an existing CA in the data directory (its keys are lost).")
    var force = false

    func run() throws {
        let configuration = try makeConfiguration()
        try configuration.validate()
        let directory = dataOptions.directory
        if directory.holdsAuthority && !force {
            throw AuthorityError(
                .alreadyInitialized,
                "\(directory.path) already holds a Fleetward CA; use --force to replace it (its keys will be lost)"
            )
        }
        let passphrase = try PassphraseSource.read(purpose: "for the new CA keys", confirm: true)
        let hierarchy = try CAHierarchy.create(
            in: directory, configuration: configuration, passphrase: passphrase, force: force,
            progress: { Output.progress($0 + "…") }
        )
        let report = try HierarchyReport(hierarchy: hierarchy)
        if output.json {
            try Output.printJSON(report)
        } else {
            print(report.text)
        }
    }

    func makeConfiguration() throws -> AuthorityConfiguration {
        func keyType(_ text: String, _ flag: String) throws -> KeyType {
            guard let type = KeyType(parsing: text) else {
                throw ValidationError("\(flag) must be P-256 or P-384, not '\(text)'")
            }
            return type
        }
        var configuration = AuthorityConfiguration(
            organization: org,
            rootKeyType: try keyType(rootKey, "--root-key"),
            issuingKeyType: try keyType(issuingKey, "--issuing-key"),
            factoryKeyType: try keyType(factoryKey, "--factory-key"),
            rootDays: rootDays,
            intermediateDays: intermediateDays,
            kdfIterations: kdfIterations,
            revocationBaseURL: revocationURL.lowercased() == "none" ? nil : revocationURL
        )
        if !hosts.isEmpty { configuration.hosts = hosts }
        if let keyStore {
            var uri = try PKCS11URI(parsing: keyStore)
            if uri.modulePath == nil { uri.modulePath = pkcs11Module }
            guard uri.modulePath != nil else { throw ValidationError("--key-store needs a PKCS#11 module: --pkcs11-module PATH or module-path= in the URI") }
            configuration.keyStore = uri.description
        } else if pkcs11Module != nil {
            throw ValidationError("--pkcs11-module goes with --key-store")
        }
        return configuration
    }
}
