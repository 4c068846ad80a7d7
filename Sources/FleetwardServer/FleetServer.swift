public import FleetwardAuthority
public import FleetwardKeyCustody
import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import Hummingbird
public import Logging
import Metrics
import NIOCore
import Prometheus
import Synchronization
import NIOPosix
public import ServiceLifecycle

/// What `fleetward serve` runs, as one value: where it listens and how it behaves.
public struct ServerConfiguration: Sendable {
    /// The data directory, holding a CA (`fleetward init`).
    public var directory: DataDirectory
    /// The passphrase that opens the CA keys and the registry's sealed key.
    public var passphrase: Passphrase
    /// PostgreSQL (`postgres://…`); nil: SQLite inside the data directory.
    public var databaseURL: String?
    public var apiAddress = ListenAddress(host: "127.0.0.1", port: 8080)
    public var estAddress = ListenAddress(host: "127.0.0.1", port: 8443)
    public var gatewayAddress = ListenAddress(host: "127.0.0.1", port: 9443)
    /// Also accept TLS 1.2 on the gateway, for legacy devices.
    public var gatewayTLS12 = false
    /// Reverse-proxy mode: the backend the gateway forwards device requests to.
    public var upstream: Upstream?
    /// How long operational certificates last (nil: the device profile's default).
    public var deviceLifetime: TimeInterval?
    /// PBKDF2 iterations for new claim codes.
    public var claimCodeIterations = ClaimCodes.defaultIterations
    /// Per-device telemetry quotas and retention.
    public var telemetry = TelemetryLimits()
    /// The MQTT front door's address (nil: no MQTT).
    public var mqttAddress: ListenAddress?
    /// The broker MQTT sessions go to; nil with an address: the supervised `mosquitto`.
    public var mqttBroker: MQTTBrokerEndpoint?
    /// Sent with every session to the broker (user name: the device ID); nil sends none.
    public var mqttBrokerPassword: [UInt8]?
    /// The largest MQTT packet accepted.
    public var mqttMaximumPacketSize = MQTTFrontDoor.defaultMaximumPacketSize
    /// Timeouts and connection caps of the management API.
    public var apiLimits = ListenerLimits.management
    /// Failed sign-ins one address (an IPv6 /64) may make on the management API in a minute
    /// before it gets 429.
    public var signInFailuresPerMinute = 30
    /// Timeouts and connection caps of the EST listener.
    public var estLimits = ListenerLimits.est
    /// Timeouts and connection caps of the gateway.
    public var gatewayLimits = ListenerLimits.gateway
    /// How often the gateway polls the audit log where the store cannot push changes (SQLite).
    public var watchInterval: Duration = .milliseconds(200)
    /// Whether `GET /metrics` needs a bearer token (roles metrics, operator, admin).
    public var metricsRequireToken = true
    /// Hands this server's metrics registry to swift-metrics' global `MetricsSystem`, so what
    /// libraries record through swift-metrics is scraped too. Once per process: `serve` sets it;
    /// a second server in the same process (tests) keeps its registry to itself.
    public var bootstrapsMetricsSystem = false
    /// The width of one bar of the console's enrollment chart (an hour of them is kept).
    public var activityInterval: Duration = .seconds(60)
    /// Warnings and errors of the listeners; the gateway's refusals at `notice`.
    public var logger: Logger

    public init(directory: DataDirectory, passphrase: Passphrase, logger: Logger) {
        self.directory = directory
        self.passphrase = passphrase
        self.logger = logger
    }
}

/// The one composition root: every service of a running Fleetward, built explicitly from a
/// ``ServerConfiguration`` (no optional service set later, no globals), used by `serve`, `demo`
/// and the tests alike.
public struct FleetServer: Sendable {
    /// The listeners, by the name `serve` prints.
    public enum Listener: String, Sendable, CaseIterable {
        case api = "management API"
        case est = "EST"
        case gateway
        case mqtt = "MQTT"
    }

    /// The listeners this configuration opens (MQTT only with an MQTT address).
    public var listeners: [Listener] { configuration.mqttAddress == nil ? [.api, .est, .gateway] : Listener.allCases }

    public let configuration: ServerConfiguration
    public let authority: CertificateAuthority
    public let custodian: any KeyCustodian
    public let store: any RegistryStore
    public let registrar: Registrar
    public let hasher: SecretHasher
    public let enroller: Enroller
    public let claims: ClaimCodeDesk
    public let securityEvents: SecurityEventLog
    public let revocation: RevocationPublisher
    public let ocsp: OCSPService
    public let api: ManagementAPI
    public let est: ESTService
    public let gateway: Gateway
    public let updates: UpdateCatalog
    /// What `GET /metrics` exports: this server's own registry (a process may run several servers).
    public let metrics: FleetMetrics

    /// Opens the data directory's CA, registry and secrets and builds every service. Checks that
    /// the passphrase opens the issuing and factory keys, so a wrong one fails here, at start.
    /// - Throws: ``AuthorityError`` `notInitialized` when the directory holds no CA,
    ///   ``KeyCustodyError`` for a wrong passphrase, ``RegistryError`` when the registry fails.
    public static func make(_ configuration: ServerConfiguration) async throws -> FleetServer {
        let directory = configuration.directory
        let hierarchy = try CAHierarchy.load(from: directory)
        let custodian = try hierarchy.custodian(passphrase: configuration.passphrase)
        let authority = CertificateAuthority(hierarchy: hierarchy, custodian: custodian)
        _ = try authority.issuer(for: .issuing)
        _ = try authority.issuer(for: .factory)
        let store = try await RegistryAccess.openStore(directory, databaseURL: configuration.databaseURL)
        let hasher = try RegistryAccess.openHasher(directory, passphrase: configuration.passphrase)
        let server = FleetServer(configuration: configuration, authority: authority, custodian: custodian, store: store, hasher: hasher)
        if configuration.bootstrapsMetricsSystem, metricsSystemBootstrapped.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            MetricsSystem.bootstrap(server.metrics.factory)
        }
        return server
    }

    private init(
        configuration: ServerConfiguration, authority: CertificateAuthority, custodian: any KeyCustodian, store: any RegistryStore,
        hasher: SecretHasher
    ) {
        self.configuration = configuration
        self.authority = authority
        self.custodian = custodian
        self.hasher = hasher
        let metrics = FleetMetrics()
        self.metrics = metrics
        // Every write transaction is timed for /metrics (fleetward_registry_transaction_seconds).
        let store = TimedRegistryStore(store, metrics: metrics)
        self.store = store
        registrar = Registrar(store: store, sealer: hasher.auditSealer)
        securityEvents = SecurityEventLog(registrar: registrar)
        enroller = Enroller(
            authority: authority, registrar: registrar, hasher: hasher, deviceLifetime: configuration.deviceLifetime,
            securityEvents: securityEvents)
        claims = ClaimCodeDesk(registrar: registrar, iterations: configuration.claimCodeIterations)
        revocation = RevocationPublisher(authority: authority, store: store)
        ocsp = OCSPService(authority: authority, registrar: registrar)
        var api = ManagementAPI(registrar: registrar, hasher: hasher, claims: claims, revocation: revocation, ocsp: ocsp)
        api.authenticationLimiter = AttemptLimiter(.init(maximumFailures: configuration.signInFailuresPerMinute, window: 60))
        api.metrics = metrics
        api.metricsRequireToken = configuration.metricsRequireToken
        est = ESTService(enroller: enroller, metrics: metrics)
        var gatewayLogger = configuration.logger
        gatewayLogger.logLevel = min(gatewayLogger.logLevel, .notice)
        gateway = Gateway(
            registrar: registrar, issuing: authority.hierarchy.member(.issuing).certificate,
            factory: authority.hierarchy.member(.factory).certificate, securityEvents: securityEvents,
            telemetryQuota: TelemetryQuota(configuration.telemetry), metrics: metrics, logger: gatewayLogger)
        metrics.read("fleetward_device_connections") { [gateway] in gateway.liveConnections }
        let releases = ReleaseRepository(directory: configuration.directory)
        let passphrase = configuration.passphrase
        updates = UpdateCatalog(repository: releases) { try releases.openContentKeySeal(passphrase: passphrase, create: false) }
        api.console = Console(
            registrar: registrar, hasher: hasher, gateway: gateway, metrics: metrics, updates: updates, limiter: api.authenticationLimiter)
        self.api = api
    }

    /// The listeners and the gateway's registry watch, to run in one `ServiceGroup`;
    /// `onListening` hears each listener's bound address once it accepts connections.
    public func services(
        onListening: @escaping @Sendable (Listener, ListenAddress) async -> Void = { _, _ in }
    ) throws -> [any Service] {
        let directory = configuration.directory
        let logger = configuration.logger
        let serverChain = try AtomicFile.read(directory.gatewayCertificatePath, limit: 1 << 20)
        let serverKey = try custodian.loadKey(named: DataDirectory.gatewayKeyName).pkcs8DER
        return [
            ManagementServer.application(api, address: configuration.apiAddress, limits: configuration.apiLimits, logger: logger) { await onListening(.api, $0) },
            try ESTServer.application(
                est, address: configuration.estAddress, certificateChainPEM: serverChain, privateKeyPKCS8: serverKey,
                limits: configuration.estLimits, logger: logger
            ) { await onListening(.est, $0) },
            try GatewayServer.application(
                gateway, address: configuration.gatewayAddress, certificateChainPEM: serverChain, privateKeyPKCS8: serverKey,
                allowTLS12: configuration.gatewayTLS12, upstream: configuration.upstream, updates: updates,
                limits: configuration.gatewayLimits, logger: logger
            ) { await onListening(.gateway, $0) },
            GatewayWatcher(gateway: gateway, interval: configuration.watchInterval),
            ActivitySampler(metrics: metrics, interval: configuration.activityInterval),
            TelemetryRetention(registrar: registrar, retention: configuration.telemetry.retention, logger: logger),
        ] + (try mqttServices(serverChain: serverChain, serverKey: serverKey, onListening: onListening))
    }

    /// The MQTT front door and, without a broker named, a supervised `mosquitto` behind it.
    private func mqttServices(
        serverChain: [UInt8], serverKey: [UInt8], onListening: @escaping @Sendable (Listener, ListenAddress) async -> Void
    ) throws -> [any Service] {
        guard let address = configuration.mqttAddress else { return [] }
        var services: [any Service] = []
        let broker: MQTTBrokerEndpoint
        if let given = configuration.mqttBroker {
            broker = given
        } else {
            guard let executable = MosquittoSupervisor.findExecutable() else {
                throw AuthorityError(
                    .invalidConfiguration,
                    "MQTT needs a broker: install mosquitto (apt-get install mosquitto), give --mqtt-broker mqtt://HOST:PORT, or --mqtt-listen off")
            }
            let supervisor = MosquittoSupervisor(
                directory: configuration.directory.path + "/mqtt", executable: executable, logger: configuration.logger)
            try supervisor.prepare()
            services.append(supervisor)
            broker = supervisor.endpoint
        }
        let frontDoor = try MQTTFrontDoor.application(
            gateway, address: address, broker: broker, policies: RegistryMQTTPolicies(store: store), certificateChainPEM: serverChain,
            privateKeyPKCS8: serverKey, maximumPacketSize: configuration.mqttMaximumPacketSize,
            brokerPassword: configuration.mqttBrokerPassword, limits: configuration.gatewayLimits, logger: configuration.logger
        ) { await onListening(.mqtt, $0) }
        services.append(BrokerGate(broker: broker, logger: configuration.logger, listener: frontDoor))
        services.append(
            UpdateAnnouncer(
                catalog: updates, store: store, broker: broker, brokerPassword: configuration.mqttBrokerPassword,
                statePath: configuration.directory.path + "/mqtt/announced",
                now: gateway.now, logger: configuration.logger))
        return services
    }
}

/// swift-metrics allows one bootstrap per process (a second one traps).
private let metricsSystemBootstrapped = Atomic<Bool>(false)

/// Closes one interval of the console's enrollment chart every `interval`.
struct ActivitySampler: Service {
    let metrics: FleetMetrics
    let interval: Duration

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                metrics.sampleActivity(at: Date())
            }
        }
    }
}

/// Runs ``Gateway/watch(interval:fallback:)`` as a service.
struct GatewayWatcher: Service {
    let gateway: Gateway
    let interval: Duration

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do {
                try await gateway.watch(interval: interval)
            } catch is CancellationError {
                return
            }
        }
    }
}

/// Deletes telemetry past its retention, once a minute, in batches of a thousand rows, each its
/// own short transaction, so writers never wait long behind it.
struct TelemetryRetention: Service {
    let registrar: Registrar
    let retention: TimeInterval
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    while try await registrar.expireTelemetry(receivedBefore: Date().addingTimeInterval(-retention)) == 1000 {
                        await Task.yield()
                    }
                } catch is CancellationError {
                    return
                } catch {
                    logger.warning("telemetry retention failed; trying again in a minute", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(60))
            }
        }
    }
}

/// Opens the MQTT listener once its broker answers (at most 10 s after start; then opens it
/// anyway and sessions get "server unavailable" until the broker is up).
struct BrokerGate: Service {
    let broker: MQTTBrokerEndpoint
    let logger: Logger
    let listener: any Service

    func run() async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, !Task.isCancelled {
            if await Self.answers(broker) { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        try await listener.run()
    }

    static func answers(_ broker: MQTTBrokerEndpoint) async -> Bool {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(.seconds(1))
        let channel: (any Channel)?
        switch broker {
        case .tcp(let host, let port): channel = try? await bootstrap.connect(host: host, port: port).get()
        case .unix(let path): channel = try? await bootstrap.connect(unixDomainSocketPath: path).get()
        }
        try? await channel?.close()
        return channel != nil
    }
}
