import ArgumentParser
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardServer
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import UnixSignals

/// `fleetward serve`: run Fleetward on a data directory, creating it first when it does not exist.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run Fleetward on a data directory (created with the defaults of 'init' when missing).",
        discussion: """
            Creates or opens the CA hierarchy, checks that the passphrase opens the issuing and factory \
            keys, opens the registry (SQLite inside the data directory, or --database) and serves the \
            management API (bearer tokens from 'fleetward token create') and EST enrollment (RFC 7030, \
            HTTPS with the data directory's server certificate) and the device gateway (TLS 1.3 with a \
            mandatory device certificate, checked against the registry in the handshake; live \
            connections close within a second of a suspend, revoke or report-stolen, whoever made \
            it). It prints one line per listener once it accepts connections, and stops cleanly on \
            SIGINT or SIGTERM.
            """
    )

    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var output: OutputOptions

    @Option(
        name: .customLong("api-listen"),
        help: ArgumentHelp("Where the management API listens (port 0 picks a free one).", valueName: "host:port")
    )
    var apiListen = "127.0.0.1:8080"

    @Option(
        name: .customLong("est-listen"),
        help: ArgumentHelp("Where EST enrollment (HTTPS) listens (port 0 picks a free one).", valueName: "host:port")
    )
    var estListen = "127.0.0.1:8443"

    @Option(
        name: .customLong("gateway-listen"),
        help: ArgumentHelp("Where the device gateway (mTLS) listens (port 0 picks a free one).", valueName: "host:port")
    )
    var gatewayListen = "127.0.0.1:9443"

    @Option(
        name: .customLong("upstream"),
        help: ArgumentHelp(
            "Reverse-proxy mode: forward the gateway's device requests (all but /v1/whoami and /v1/telemetry) to this backend, with X-Fleetward-Device, X-Fleetward-Owner and X-Fleetward-Cert-Sha256.",
            valueName: "http://host:port"))
    var upstream: String?

    @Option(
        name: .customLong("device-lifetime"),
        help: ArgumentHelp(
            "How long operational certificates issued over EST last: 30d, 12h, 15m, 90s (default 30d; 60 s to 825 d). Devices renew after two thirds of it.",
            valueName: "duration"))
    var deviceLifetime: String?

    @Flag(name: .customLong("gateway-tls12"), help: "Also accept TLS 1.2 on the gateway, for legacy devices (TLS 1.3 only by default).")
    var gatewayTLS12 = false

    func run() async throws {
        let logger = Logger(label: "fleetward.serve")
        let apiAddress = try ListenAddress(parsing: apiListen)
        let estAddress = try ListenAddress(parsing: estListen)
        let gatewayAddress = try ListenAddress(parsing: gatewayListen)
        let upstreamService = try upstream.map { try Upstream(parsing: $0) }
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

        // The listeners log warnings and errors only: their start-up lines would repeat ours, and
        // could interleave with a one-line failure (a port in use) on the way out.
        var serverLogger = logger
        serverLogger.logLevel = max(logger.logLevel, .warning)
        var api = ManagementAPI(store: store, hasher: hasher)
        api.revocation = RevocationPublisher(authority: authority, store: store)
        api.ocsp = OCSPService(authority: authority, store: store)
        let json = output.json
        @Sendable func announce(_ name: String, _ url: String, _ extra: String) {
            if json {
                try? Output.printJSON(["listener": name, "url": url])
            } else {
                FileHandle.standardOutput.write(Data("\(name) listening on \(url)\(extra)\n".utf8))
            }
        }
        let apiApplication = ManagementServer.application(api, address: apiAddress, logger: serverLogger) { bound in
            announce("management API", "http://\(bound)", " (OpenAPI: http://\(bound)\(ManagementAPI.openAPIPath))")
        }
        var est = ESTService(authority: authority, store: store, hasher: hasher)
        est.deviceLifetime = try deviceLifetime.map(LifetimeParser.seconds)
        if let lifetime = est.deviceLifetime, !(60...825 * 86_400).contains(lifetime) {
            throw ValidationError("--device-lifetime must be 60 s to 825 d, not \(deviceLifetime ?? "")")
        }
        let serverChain = try AtomicFile.read(directory.gatewayCertificatePath, limit: 1 << 20)
        let serverKey = try custodian.loadKey(named: DataDirectory.gatewayKeyName).pkcs8DER
        let estApplication = try ESTServer.application(
            est, address: estAddress, certificateChainPEM: serverChain, privateKeyPKCS8: serverKey, logger: serverLogger
        ) { bound in
            announce("EST", "https://\(bound)", " (\(ESTService.prefix)/)")
        }
        // The gateway logs each refused handshake with its reason (notice level).
        var gatewayLogger = Logger(label: "fleetward.gateway")
        gatewayLogger.logLevel = max(logger.logLevel, .notice)
        let gateway = Gateway(
            store: store, issuing: hierarchy.member(.issuing).certificate, factory: hierarchy.member(.factory).certificate,
            logger: gatewayLogger)
        let gatewayApplication = try GatewayServer.application(
            gateway, address: gatewayAddress, certificateChainPEM: serverChain, privateKeyPKCS8: serverKey, allowTLS12: gatewayTLS12,
            upstream: upstreamService, updates: UpdateCatalog(repository: ReleaseRepository(directory: directory)), logger: serverLogger
        ) { bound in
            announce(
                "gateway", "https://\(bound)",
                " (mTLS, \(gatewayTLS12 ? "TLS 1.2 and 1.3" : "TLS 1.3")\(upstreamService.map { ", forwarding to \($0)" } ?? ""))")
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: apiApplication), .init(service: estApplication), .init(service: gatewayApplication),
                    .init(service: GatewayWatcher(gateway: gateway)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: serverLogger))
        try await group.run()
    }
}

/// Runs ``Gateway/watch(interval:)`` as a service of `serve`.
struct GatewayWatcher: Service {
    let gateway: Gateway

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do {
                try await gateway.watch()
            } catch is CancellationError {
                return
            }
        }
    }
}
