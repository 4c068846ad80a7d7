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

    @Option(
        name: .customLong("metrics-auth"),
        help: "token: GET /metrics needs a bearer token of the metrics, operator or admin role; none: anyone who reaches the API listener may scrape.")
    var metricsAuth = "token"

    @Option(
        name: .customLong("handshake-timeout"),
        help: ArgumentHelp("Seconds a client of EST or the gateway has to finish its TLS handshake (default 10).", valueName: "seconds"))
    var handshakeTimeout = 10

    @Option(
        name: .customLong("est-idle-timeout"),
        help: ArgumentHelp("Seconds an EST connection may sit idle between requests (default 60).", valueName: "seconds"))
    var estIdleTimeout = 60

    @Option(
        name: .customLong("mqtt-listen"),
        help: ArgumentHelp("Where the MQTT front door (mTLS) listens, or off (default 127.0.0.1:8883).", valueName: "host:port|off"))
    var mqttListen = "127.0.0.1:8883"

    @Option(
        name: .customLong("mqtt-broker"),
        help: ArgumentHelp(
            "The MQTT broker device sessions go to, mqtt://HOST:PORT or unix:///PATH (default: a mosquitto that serve runs on DIR/mqtt/broker.sock).",
            valueName: "url"))
    var mqttBroker: String?

    @Option(
        name: .customLong("mqtt-broker-password-file"),
        help: ArgumentHelp(
            "A file holding the password sent to the broker with each device's session (the user name stays the device ID); for brokers that want one, such as RabbitMQ.",
            valueName: "file"))
    var mqttBrokerPasswordFile: String?

    @Option(
        name: .customLong("api-idle-timeout"),
        help: ArgumentHelp(
            "Seconds a management API connection may sit silent, before its first request or between requests (default 60).",
            valueName: "seconds"))
    var apiIdleTimeout = 60

    @Option(
        name: .customLong("request-timeout"),
        help: ArgumentHelp(
            "Seconds any listener gives a request, once started, to arrive whole: head and body (default 30).", valueName: "seconds"))
    var requestTimeout = 30

    @Option(
        name: .customLong("max-connections"),
        help: ArgumentHelp("Connections EST and the gateway each hold at most (default 4096 and 19000).", valueName: "n"))
    var maxConnections: Int?

    @Option(
        name: .customLong("max-connections-per-address"),
        help: ArgumentHelp(
            "Connections one address (an IPv6 /64) may hold on EST and on the gateway (default 256 and 4096).", valueName: "n"))
    var maxConnectionsPerAddress: Int?

    @Option(
        name: .customLong("sign-in-failures"),
        help: ArgumentHelp(
            "Failed management API sign-ins one address (an IPv6 /64) may make in a minute before 429 (default 30).", valueName: "n"))
    var signInFailures = 30

    @Option(
        name: .customLong("telemetry-per-minute"),
        help: ArgumentHelp("Telemetry messages a device may send a minute on average, bursts of half that again (default 60).", valueName: "n"))
    var telemetryPerMinute = 60.0

    @Option(
        name: .customLong("telemetry-retention"),
        help: ArgumentHelp("Days telemetry is kept (default 30); each device keeps at most its newest 10,000 messages.", valueName: "days"))
    var telemetryRetention = 30.0

    func run() async throws {
        let logger = Logger(label: "fleetward.serve")
        let apiAddress = try ListenAddress(parsing: apiListen)
        let estAddress = try ListenAddress(parsing: estListen)
        let gatewayAddress = try ListenAddress(parsing: gatewayListen)
        let brokerEndpoint = try mqttBroker.map { try MQTTBrokerEndpoint(parsing: $0) }
        var mqttAddress = mqttListen.lowercased() == "off" ? nil : try ListenAddress(parsing: mqttListen)
        if mqttAddress != nil, brokerEndpoint == nil, MosquittoSupervisor.findExecutable() == nil {
            // The README's run command works without a broker: MQTT stays off, and says how to turn it on.
            logger.warning(
                "MQTT is off: mosquitto is not installed (apt-get install mosquitto), or give --mqtt-broker mqtt://HOST:PORT")
            mqttAddress = nil
        }
        let upstreamService = try upstream.map { try Upstream(parsing: $0) }
        let lifetime = try deviceLifetime.map(LifetimeParser.seconds)
        if let lifetime, !(60...825 * 86_400).contains(lifetime) {
            throw ValidationError("--device-lifetime must be 60 s to 825 d, not \(deviceLifetime ?? "")")
        }
        let directory = dataOptions.directory
        // Before the passphrase and the banner: every address free, no other serve on this data.
        for (listener, address) in [(FleetServer.Listener.api, apiAddress), (.est, estAddress), (.gateway, gatewayAddress)]
            + (mqttAddress.map { [(FleetServer.Listener.mqtt, $0)] } ?? [])
        {
            try ServePreflight.checkFree(address, listener: listener.rawValue)
        }
        let passphrase: Passphrase
        if FileManager.default.fileExists(atPath: directory.configurationPath) {
            try ServePreflight.lock(directory, sharedDatabase: dataOptions.databaseURL != nil)
            passphrase = try PassphraseSource.read(purpose: "for the CA keys", confirm: false)
        } else {
            logger.info("creating a new CA", metadata: ["fleetward.data": "\(directory.path)"])
            passphrase = try PassphraseSource.read(purpose: "for the new CA keys", confirm: true)
            _ = try CAHierarchy.create(
                in: directory, configuration: AuthorityConfiguration(), passphrase: passphrase,
                progress: { Output.progress($0 + "…") }
            )
            try ServePreflight.lock(directory, sharedDatabase: dataOptions.databaseURL != nil)
        }
        // The listeners log warnings and errors only: their start-up lines would repeat ours, and
        // could interleave with a one-line failure (a port in use) on the way out.
        var serverLogger = logger
        serverLogger.logLevel = max(logger.logLevel, .warning)
        var configuration = ServerConfiguration(directory: directory, passphrase: passphrase, logger: serverLogger)
        configuration.databaseURL = dataOptions.databaseURL
        configuration.apiAddress = apiAddress
        configuration.estAddress = estAddress
        configuration.gatewayAddress = gatewayAddress
        configuration.mqttAddress = mqttAddress
        configuration.mqttBroker = brokerEndpoint
        if let file = mqttBrokerPasswordFile {
            guard let bytes = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read the broker password file \(file)")
            }
            // One line; the newline an editor adds is not part of it.
            let password = Array(bytes.prefix { $0 != 0x0A && $0 != 0x0D })
            guard !password.isEmpty, password.count <= 1024 else {
                throw ValidationError("the broker password file \(file) is empty or over 1024 bytes")
            }
            configuration.mqttBrokerPassword = password
        }
        configuration.gatewayTLS12 = gatewayTLS12
        guard ["token", "none"].contains(metricsAuth) else { throw ValidationError("--metrics-auth must be token or none") }
        configuration.metricsRequireToken = metricsAuth == "token"
        configuration.bootstrapsMetricsSystem = true
        configuration.upstream = upstreamService
        configuration.deviceLifetime = lifetime
        guard (1...300).contains(handshakeTimeout), (1...86_400).contains(estIdleTimeout), (1...86_400).contains(apiIdleTimeout),
            (1...3600).contains(requestTimeout)
        else {
            throw ValidationError(
                "--handshake-timeout must be 1 to 300 s, --est-idle-timeout and --api-idle-timeout 1 to 86400 s, --request-timeout 1 to 3600 s")
        }
        configuration.apiLimits.idleTimeout = .seconds(apiIdleTimeout)
        for listener in [\ServerConfiguration.apiLimits, \ServerConfiguration.estLimits, \ServerConfiguration.gatewayLimits] {
            configuration[keyPath: listener].requestTimeout = .seconds(requestTimeout)
        }
        guard telemetryPerMinute > 0, telemetryPerMinute <= 60_000, telemetryRetention > 0, telemetryRetention <= 3650 else {
            throw ValidationError("--telemetry-per-minute must be above 0 (at most 60000) and --telemetry-retention 0 to 3650 days")
        }
        for listener in [\ServerConfiguration.estLimits, \ServerConfiguration.gatewayLimits] {
            configuration[keyPath: listener].handshakeTimeout = .seconds(handshakeTimeout)
            if let maxConnections {
                guard (1...1_000_000).contains(maxConnections) else { throw ValidationError("--max-connections must be 1 to 1000000") }
                configuration[keyPath: listener].maximumConnections = maxConnections
            }
            if let maxConnectionsPerAddress {
                guard (1...1_000_000).contains(maxConnectionsPerAddress) else {
                    throw ValidationError("--max-connections-per-address must be 1 to 1000000")
                }
                configuration[keyPath: listener].maximumConnectionsPerAddress = maxConnectionsPerAddress
            }
        }
        configuration.estLimits.idleTimeout = .seconds(estIdleTimeout)
        guard (1...1_000_000).contains(signInFailures) else { throw ValidationError("--sign-in-failures must be 1 to 1000000") }
        configuration.signInFailuresPerMinute = signInFailures
        configuration.telemetry.messagesPerMinute = telemetryPerMinute
        configuration.telemetry.burst = max(1, telemetryPerMinute / 2)
        configuration.telemetry.retention = telemetryRetention * 86_400
        let server = try await FleetServer.make(configuration)
        logger.info("certificate authority ready", metadata: ["fleetward.data": "\(directory.path)"])
        let report = try HierarchyReport(hierarchy: server.authority.hierarchy)
        if output.json {
            try Output.printJSON(report)
        } else {
            FileHandle.standardOutput.write(Data((report.text + "\n").utf8))
        }
        let json = output.json
        let tls = gatewayTLS12 ? "TLS 1.2 and 1.3" : "TLS 1.3"
        let services = try server.services { listener, bound in
            let url: String
            let extra: String
            switch listener {
            case .api:
                url = "http://\(bound)"
                extra = " (OpenAPI: http://\(bound)\(ManagementAPI.openAPIPath))"
            case .est:
                url = "https://\(bound)"
                extra = " (\(ESTService.prefix)/)"
            case .gateway:
                url = "https://\(bound)"
                extra = " (mTLS, \(tls)\(upstreamService.map { ", forwarding to \($0)" } ?? ""))"
            case .mqtt:
                url = "mqtts://\(bound)"
                extra = " (MQTT 3.1.1 and 5 over mTLS, TLS 1.3; broker \(brokerEndpoint?.description ?? "mosquitto on DIR/mqtt/broker.sock"))"
            }
            if json {
                try? Output.printJSON(["listener": listener.rawValue, "url": url])
            } else {
                FileHandle.standardOutput.write(Data("\(listener.rawValue) listening on \(url)\(extra)\n".utf8))
            }
            if listener == .api,
                let warning = RevocationPointerCheck.warning(
                    base: server.authority.hierarchy.configuration.revocationBaseURL, bound: bound, directory: directory.path)
            {
                logger.warning("\(warning)")
            }
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: serverLogger))
        try await group.run()
    }
}
