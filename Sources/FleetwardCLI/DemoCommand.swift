import ArgumentParser
import Crypto
import FleetwardAuthority
import FleetwardDevice
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import FleetwardServer
import Foundation
import Logging
import ServiceLifecycle
import SwiftASN1
import X509

/// `fleetward demo`: a throwaway fleet, its servers in this process, and simulated devices that
/// walk the four provisioning flows over the real EST and management API endpoints.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Walk through the four provisioning flows with simulated devices on a throwaway fleet.",
        discussion: """
            Creates a CA hierarchy and registry in a temporary directory, starts the management API, \
            EST and the gateway on free loopback ports in this process, and plays a manufacturer, an \
            operator, an owner and five devices: allow-list (factory secret), birth certificate (factory \
            line, then re-enrollment), trusted-user claim (claim code, one-time token, report-stolen), an \
            enrollment group waiting for approval, and the gateway (signed telemetry, a replay, a \
            suspended device cut off), MQTT when mosquitto is installed (a signed publish a backend \
            receives, a topic outside the policy refused, a revoked device's session cut), then 50 \
            simulated devices. Each step prints what was sent and \
            what came back. \
            Device keys stay in memory; the issued certificates are written to DIR/demo/. The directory \
            is removed at the end unless --keep names one (its keys are sealed under \
            FLEETWARD_PASSPHRASE when that is set, otherwise under a random passphrase that is not kept).
            """
    )

    @Option(name: .customLong("keep"), help: ArgumentHelp("Build the fleet in this new directory and keep it.", valueName: "dir"))
    var keep: String?

    func run() async throws {
        let started = Date()
        let path: String
        if let keep {
            if let existing = try? FileManager.default.contentsOfDirectory(atPath: keep), !existing.isEmpty {
                throw ValidationError("\(keep) is not empty; --keep needs a new or empty directory")
            }
            path = keep
        } else {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("fleetward-demo-\(UUID().uuidString.prefix(8))").path
        }
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: path) } }
        let show = DemoOutput()
        show.line("Fleetward demo: a throwaway fleet in \(path)\(keep == nil ? " (removed at the end)" : "")")

        // The operator's side: CA, registry, servers.
        let directory = DataDirectory(path: path)
        let passphrase = Passphrase(
            ProcessInfo.processInfo.environment["FLEETWARD_PASSPHRASE"].flatMap { $0.isEmpty ? nil : $0 }
                ?? Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString())
        let hierarchy = try CAHierarchy.create(
            in: directory, configuration: AuthorityConfiguration(kdfIterations: 100_000), passphrase: passphrase,
            progress: { show.line("  " + $0 + "…") })
        let servers = try await DemoServers.start(directory: directory, passphrase: passphrase)
        do {
            try await walk(through: servers, directory: directory, hierarchy: hierarchy, show: show, started: started, path: path)
        } catch {
            await servers.stop()
            throw error
        }
        await servers.stop()
    }

    private func walk(
        through servers: DemoServers, directory: DataDirectory, hierarchy: CAHierarchy, show: DemoOutput, started: Date, path: String
    ) async throws {
        let registrar = servers.server.registrar
        let hasher = servers.server.hasher
        let authority = servers.server.authority
        show.line(
            "  management API on http://\(servers.api), EST on https://\(servers.est), gateway on https://\(servers.gateway)"
                + (servers.mqtt.map { ", MQTT on mqtts://\($0)" } ?? " (MQTT off: mosquitto is not installed)"))

        var tokens: [Role: String] = [:]
        for role in [Role.admin, .manufacturer, .operator] {
            let made = try APITokens.make(role: role, owner: nil, hasher: hasher)
            try await registrar.createAPIToken(made.record, by: .console, at: Date())
            tokens[role] = made.token
        }
        let api = DemoAPI(port: servers.api.port, show: show)
        let root = hierarchy.member(.root).certificate
        let est = ESTClient(host: servers.est.host, port: servers.est.port, roots: [root], serverName: "localhost")
        let devices = DemoDevices(est: est, show: show, out: path + "/demo")
        try FileManager.default.createDirectory(atPath: devices.out, withIntermediateDirectories: true)

        // 1. Allow-list.
        show.heading("1. Allow-list: the manufacturer registers the device and its factory secret; only that proof enrolls it")
        let sensor = "demo-sensor-1"
        let sensorSecret = "factory-" + UUID().uuidString
        try await api.call(
            "manufacturer", tokens[.manufacturer]!, "POST", "/devices", ["id": sensor, "model": "sensor-v2", "secret": sensorSecret],
            expect: 201, note: "register \(sensor) with its factory secret (stored hashed)")
        let sensorKey = P256.Signing.PrivateKey()
        try await devices.enroll(
            sensor, key: sensorKey, .secret(id: sensor, secret: "guess-1234"), expect: 401, note: "enroll with a guessed secret")
        try await devices.enroll(
            sensor, key: sensorKey, .secret(id: sensor, secret: sensorSecret), expect: 200, note: "enroll with its factory secret")
        try await api.state(sensor, tokens[.operator]!)

        // 2. Birth certificate.
        show.heading("2. Birth certificate: the factory line signs a birth certificate; the device trades it for an operational one")
        let meter = "demo-meter-1"
        let meterBirthKey = P256.Signing.PrivateKey()
        let csrDirectory = path + "/demo/factory-csrs"
        try FileManager.default.createDirectory(atPath: csrDirectory, withIntermediateDirectories: true)
        try Data(DeviceCSR.make(key: meterBirthKey, deviceID: meter)).write(to: URL(fileURLWithPath: csrDirectory + "/\(meter).der"))
        var batch = FactoryBatch(csrDirectory: csrDirectory, outDirectory: path + "/demo/birth")
        batch.model = "meter-v1"
        let summary = try await batch.run(authority: authority, registrar: registrar, by: .console)
        show.step("factory", "fleetward factory issue: \(summary.issued) birth certificate for \(meter), signed by the factory CA")
        let birth = try Certificate(
            pemEncoded: String(decoding: try AtomicFile.read(batch.outDirectory + "/\(meter).pem", limit: 1 << 16), as: UTF8.self))
        let meterKey = P256.Signing.PrivateKey()
        try await devices.enroll(
            meter, key: meterKey, .certificate(chain: [birth], key: meterBirthKey), expect: 200,
            note: "enroll with its birth certificate (TLS client certificate)")
        try await devices.reenroll(
            meter, key: P256.Signing.PrivateKey(), current: [birth], currentKey: meterBirthKey, expect: 403,
            note: "renew with the birth certificate")
        let meterOperational = try devices.issued(meter)
        try await devices.reenroll(
            meter, key: P256.Signing.PrivateKey(), current: [meterOperational], currentKey: meterKey, expect: 200,
            note: "renew with its operational certificate and a new key")
        try await api.state(meter, tokens[.operator]!)

        // 3. Trusted-user claim.
        show.heading("3. Trusted-user claim: an owner claims the device by the code on its box; the device enrolls bound to her")
        let lock = "demo-lock-1"
        try await api.call(
            "manufacturer", tokens[.manufacturer]!, "POST", "/devices",
            ["id": lock, "model": "lock-v3", "secret": "factory-" + UUID().uuidString],
            expect: 201, note: "register \(lock)")
        let code =
            try await api.call(
                "manufacturer", tokens[.manufacturer]!, "POST", "/devices/\(lock)/claim-code", [:], expect: 201,
                note: "print a claim code on the box (stored hashed; not shown here)")["claimCode"] as? String ?? ""
        try await api.call(
            "operator", tokens[.operator]!, "POST", "/owners", ["id": "alice", "name": "Alice"], expect: 201, note: "create owner alice")
        let alice = try APITokens.make(role: .owner, owner: "alice", hasher: hasher)
        try await registrar.createAPIToken(alice.record, by: .console, at: Date())
        try await api.call(
            "alice", alice.token, "POST", "/claims", ["device": lock, "claimCode": "WRONG-CODE-0000"], expect: 403,
            note: "claim \(lock) with a wrong code")
        try await api.call(
            "alice", alice.token, "POST", "/claims", ["device": lock, "claimCode": code], expect: 200,
            note: "claim \(lock) with the code on the box")
        let token =
            try await api.call(
                "alice", alice.token, "POST", "/devices/\(lock)/enrollment-tokens", ["ttlSeconds": 600], expect: 201,
                note: "ask for a one-time enrollment token (10 minutes)")["token"] as? String ?? ""
        let lockKey = P256.Signing.PrivateKey()
        try await devices.enroll(lock, key: lockKey, .token(id: lock, token: token), expect: 200, note: "enroll with the one-time token")
        try await devices.enroll(
            lock, key: P256.Signing.PrivateKey(), .token(id: lock, token: token), expect: 401, note: "replay the same token")
        try await api.owner(lock, tokens[.operator]!)
        try await api.call(
            "alice", alice.token, "POST", "/devices/\(lock)/report-stolen", [:], expect: 200,
            note: "report \(lock) stolen (its certificates are revoked)")
        try await devices.reenroll(
            lock, key: P256.Signing.PrivateKey(), current: [try devices.issued(lock)], currentKey: lockKey, expect: 403,
            note: "the thief tries to renew the stolen device's certificate")
        try await api.relyingParty(
            checking: try devices.issued(lock), of: lock, issuer: authority.hierarchy.member(.issuing).certificate, out: devices.out)
        try await api.call("alice", alice.token, "POST", "/devices/\(lock)/recover", [:], expect: 200, note: "alice recovers \(lock)")

        // 4. Enrollment group.
        show.heading("4. Enrollment group: devices under a manufacturer's CA register themselves, then wait for approval")
        let maker = try DemoManufacturer()
        try await api.call(
            "operator", tokens[.operator]!, "POST", "/groups",
            ["name": "acme-cameras", "caCertificate": maker.caPEM, "autoApprove": false], expect: 201,
            note: "register the manufacturer CA acme-cameras (approval required)")
        let camera = "demo-camera-1"
        let cameraMakerKey = P256.Signing.PrivateKey()
        let cameraCertificate = try maker.issue(camera, key: cameraMakerKey)
        let cameraKey = P256.Signing.PrivateKey()
        try await devices.enroll(
            camera, key: cameraKey, .certificate(chain: [cameraCertificate], key: cameraMakerKey), expect: 202,
            note: "enroll with its manufacturer certificate")
        try await api.state(camera, tokens[.operator]!)
        try await api.call(
            "operator", tokens[.operator]!, "POST", "/devices/\(camera)/approve", [:], expect: 200, note: "approve \(camera)")
        try await devices.enroll(
            camera, key: cameraKey, .certificate(chain: [cameraCertificate], key: cameraMakerKey), expect: 200,
            note: "ask again after Retry-After")
        try await api.state(camera, tokens[.operator]!)
        let stranger = try DemoManufacturer().issue("demo-camera-2", key: cameraMakerKey)
        try await devices.enroll(
            "demo-camera-2", key: cameraKey, .certificate(chain: [stranger], key: cameraMakerKey), expect: 403,
            note: "a camera from an unregistered manufacturer")

        // 5. The front door.
        show.heading("5. The front door: the gateway admits only active devices over mTLS; telemetry is signed and never replayed")
        let issuingCA = hierarchy.member(.issuing).certificate
        func pinned(_ chain: [Certificate], _ key: P256.Signing.PrivateKey) -> PinnedTLS {
            PinnedTLS(roots: [root], serverName: "localhost", clientChain: chain, clientKey: key)
        }
        let connection = try await GatewayConnection.connect(
            host: servers.gateway.host, port: servers.gateway.port, tls: pinned([try devices.issued(sensor), issuingCA], sensorKey))
        show.step(sensor, "connect to the gateway with its operational certificate: admitted as \(connection.identity.device)")
        let reading = Array(#"{"temperature":21.5}"#.utf8)
        let signed = try SignedMessage.headers(for: reading, device: sensor, key: sensorKey)
        let message = HTTP1Request(
            method: "POST", path: "/v1/telemetry", headers: [("Content-Type", "application/json")] + signed, body: reading)
        let gatewayShow = DemoGateway(show: show)
        try await gatewayShow.expect(connection, message, 202, sensor, "send telemetry signed by its key (timestamp, nonce)")
        try await gatewayShow.expect(connection, message, 409, "attacker", "replay the same signed message")
        var altered = message
        altered.body = Array(#"{"temperature":99.9}"#.utf8)
        try await gatewayShow.expect(connection, altered, 401, "attacker", "change the reading, keep the signature")
        do {
            _ = try await GatewayConnection.connect(
                host: servers.gateway.host, port: servers.gateway.port, tls: pinned([birth], meterBirthKey))
            throw ValidationError("the gateway admitted a birth certificate")
        } catch let error as DeviceError where error.code == .handshakeRefused {
            gatewayShow.refusals += 1
            show.step(meter, "connect with its birth certificate: refused in the TLS handshake")
        }
        let suspended = ContinuousClock.now
        try await api.call(
            "operator", tokens[.operator]!, "POST", "/devices/\(sensor)/suspend", [:], expect: 200, note: "suspend \(sensor)")
        while connection.isActive, ContinuousClock.now - suspended < .seconds(5) { try await Task.sleep(for: .milliseconds(10)) }
        guard !connection.isActive else { throw ValidationError("the gateway kept a suspended device connected") }
        show.step(
            "gateway", "closed \(sensor)'s live connection \(Int((ContinuousClock.now - suspended).seconds * 1000)) ms after the suspend")

        // 6. MQTT at the front door.
        if let mqtt = servers.mqtt {
            show.heading("6. MQTT: the device's certificate is its identity; its policy decides topics; a revoked device is cut")
            let tracker = "demo-tracker-1"
            let trackerSecret = "factory-" + UUID().uuidString
            try await api.call(
                "manufacturer", tokens[.manufacturer]!, "POST", "/devices", ["id": tracker, "model": "tracker", "secret": trackerSecret],
                expect: 201, note: "register \(tracker)")
            let trackerKey = P256.Signing.PrivateKey()
            try await devices.enroll(
                tracker, key: trackerKey, .secret(id: tracker, secret: trackerSecret), expect: 200, note: "enroll with its factory secret")
            let backend = try await MQTTDeviceClient.connect(unixSocket: directory.path + "/mqtt/broker.sock", clientID: "demo-backend")
            _ = try await backend.subscribe(["devices/+/telemetry"])
            show.step("backend", "subscribe to devices/+/telemetry on the broker (mosquitto, supervised by Fleetward)")
            let session = try await MQTTDeviceClient.connect(
                host: mqtt.host, port: mqtt.port, tls: pinned([try devices.issued(tracker), issuingCA], trackerKey), clientID: tracker)
            show.step(tracker, "open an MQTT 5 session over mTLS with its operational certificate: CONNACK success")
            let position = Array(#"{"lat":52.52,"lon":13.40}"#.utf8)
            try await session.publish(
                position, topic: "devices/\(tracker)/telemetry", qos: 1,
                userProperties: try SignedMessage.userProperties(for: position, device: tracker, key: trackerKey))
            show.step(tracker, "publish a signed position to devices/\(tracker)/telemetry (QoS 1): PUBACK")
            var iterator = backend.messages.makeAsyncIterator()
            guard let received = await iterator.next() else { throw ValidationError("the backend's session ended") }
            show.step("backend", "received \(received.topic): \(String(decoding: received.payload, as: UTF8.self)) with the device's signature")
            do {
                try await session.publish(Array("x".utf8), topic: "devices/demo-sensor-1/telemetry", qos: 1)
                throw ValidationError("the front door let a device publish as another")
            } catch let error as DeviceError where error.code == .refused {
                show.step(tracker, "publish to another device's topic: refused (PUBACK 0x87, not authorized); the broker never sees it")
            }
            let revoked = ContinuousClock.now
            try await api.call("operator", tokens[.operator]!, "POST", "/devices/\(tracker)/revoke", [:], expect: 200, note: "revoke \(tracker)")
            while session.isActive, ContinuousClock.now - revoked < .seconds(5) { try await Task.sleep(for: .milliseconds(10)) }
            guard !session.isActive else { throw ValidationError("the front door kept a revoked device's MQTT session") }
            show.step(
                "front door",
                "ended \(tracker)'s MQTT session \(Int((ContinuousClock.now - revoked).seconds * 1000)) ms after the revocation: "
                    + (await session.endReason ?? "closed"))
            await backend.disconnect()
        }

        let fleetSize = 50
        var fleet: [(id: String, secret: String)] = []
        for index in 1...fleetSize {
            let secret = "factory-" + UUID().uuidString
            var device = Device(id: try DeviceID("demo-fleet-\(index)"), model: "sensor-v2", proof: .none, createdAt: Date())
            device.proof = .secret(hmac: hasher.hash(Array(secret.utf8)))
            fleet.append((device.id.rawValue, secret))
            try await registrar.register(device, by: .console, at: Date())
        }
        show.step("manufacturer", "register \(fleetSize) more devices with their factory secrets")
        var fleetEST = est
        fleetEST.timeout = .seconds(30)
        let simulation = FleetSimulation(
            est: fleetEST, gateway: ProvisioningConfig.Endpoint(host: servers.gateway.host, port: servers.gateway.port), roots: [root],
            serverName: "localhost", rate: 200, hold: .seconds(1), interval: 0.5)
        let result = try await simulation.run(fleet) { _ in }
        let connect = result.latencyMilliseconds["connect"]
        show.step(
            "fleet",
            "\(result.enrolled) simulated devices enrolled over EST, held \(result.connections) mTLS connections and sent "
                + "\(result.messages) signed messages; \(result.refused + result.errors) failed"
                + (connect.map { String(format: " (handshake p50 %.1f ms, p99 %.1f ms)", $0.p50, $0.p99) } ?? ""))
        guard result.refused + result.errors == 0 else {
            throw ValidationError("simulated devices failed: \(result.failures.joined(separator: "; "))")
        }
        devices.issuedCount += result.enrolled

        // The record.
        show.heading("The record")
        switch try await registrar.store.verifyAudit() {
        case .intact(let entries):
            show.step("registry", "audit log intact: \(entries) entries, each hashed into the next")
        case .broken(let sequence, let reason):
            throw ValidationError("the audit log is broken at entry \(sequence): \(reason)")
        }
        show.line(
            "\nDone in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(devices.issuedCount) certificates issued, "
                + "\(devices.refusals + api.refusals + gatewayShow.refusals) requests refused as they should be.")
        if keep == nil {
            show.line("Run with --keep DIR to keep the fleet for a closer look.")
        } else {
            show.line(
                "Certificates are in \(devices.out); check one with openssl: "
                    + "openssl verify -CAfile \(path)/ca/root.pem -untrusted \(path)/ca/issuing.pem \(devices.out)/\(sensor).pem")
        }
    }
}

/// Prints the demo's steps, aligned by who acts.
final class DemoOutput: Sendable {
    func line(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }
    func heading(_ text: String) { line("\n" + text) }
    func step(_ who: String, _ text: String) { line("  " + who.padding(toLength: 15, withPad: " ", startingAt: 0) + text) }
}

/// Fleetward's servers, built by the same composition root as `serve`, in this process on free
/// loopback ports.
struct DemoServers {
    let server: FleetServer
    let api: ListenAddress
    let est: ListenAddress
    let gateway: ListenAddress
    /// The MQTT front door, when mosquitto is installed.
    let mqtt: ListenAddress?
    let group: ServiceGroup
    let task: Task<Void, any Error>

    static func start(directory: DataDirectory, passphrase: Passphrase) async throws -> DemoServers {
        var logger = Logger(label: "fleetward.demo")
        logger.logLevel = .error
        var configuration = ServerConfiguration(directory: directory, passphrase: passphrase, logger: logger)
        let loopback = ListenAddress(host: "127.0.0.1", port: 0)
        configuration.apiAddress = loopback
        configuration.estAddress = loopback
        configuration.gatewayAddress = loopback
        if MosquittoSupervisor.findExecutable() != nil { configuration.mqttAddress = loopback }
        let server = try await FleetServer.make(configuration)
        let (bound, continuation) = AsyncStream<(FleetServer.Listener, ListenAddress)>.makeStream()
        let services = try server.services { continuation.yield(($0, $1)) }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: logger))
        let task = Task { try await group.run() }
        var addresses: [FleetServer.Listener: ListenAddress] = [:]
        for await (listener, address) in bound {
            addresses[listener] = address
            if addresses.count == server.listeners.count { break }
        }
        guard let apiAddress = addresses[.api], let estAddress = addresses[.est], let gatewayAddress = addresses[.gateway] else {
            throw ValidationError("the demo servers did not start")
        }
        return DemoServers(
            server: server, api: apiAddress, est: estAddress, gateway: gatewayAddress, mqtt: addresses[.mqtt], group: group, task: task)
    }

    /// Shuts the servers down and waits until they have (the supervised broker included).
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// Requests on a device's gateway connection, printed with what came back.
final class DemoGateway: @unchecked Sendable {
    let show: DemoOutput
    var refusals = 0

    init(show: DemoOutput) { self.show = show }

    func expect(_ connection: GatewayConnection, _ request: HTTP1Request, _ status: Int, _ who: String, _ note: String) async throws {
        let response = try await connection.send(request)
        show.step(who, "\(note): \(request.method) \(request.path) → \(response.status)")
        guard response.status == status else {
            throw ValidationError("expected \(status) from the gateway, got \(response.status): \(response.text)")
        }
        if status >= 400 { refusals += 1 }
    }
}

/// The management API as the demo's people use it: JSON over HTTP with their bearer tokens.
final class DemoAPI: @unchecked Sendable {
    let client: HTTP1Client
    let show: DemoOutput
    var refusals = 0

    init(port: Int, show: DemoOutput) {
        client = HTTP1Client(host: "127.0.0.1", port: port)
        self.show = show
    }

    @discardableResult
    func call(
        _ who: String, _ token: String, _ method: String, _ path: String, _ body: [String: Any], expect: Int, note: String
    ) async throws -> [String: Any] {
        let data = method == "POST" ? try JSONSerialization.data(withJSONObject: body) : Data()
        let response = try await client.send(
            HTTP1Request(
                method: method, path: "/api/v1" + path,
                headers: [("Authorization", "Bearer " + token), ("Content-Type", "application/json")], body: Array(data)))
        let json = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
        var outcome = "\(response.status)"
        if response.status >= 400 {
            refusals += 1
            if let detail = (json["error"] as? [String: Any])?["message"] as? String { outcome += " " + detail }
        } else if let state = json["state"] as? String {
            outcome += ", state \(state)" + ((json["owner"] as? String).map { ", owner \($0)" } ?? "")
        }
        show.step(who, "\(note): \(method) /api/v1\(path) → \(outcome)")
        guard response.status == expect else {
            throw ValidationError(
                "the demo expected \(expect) from \(method) \(path) but got \(response.status): \(response.text.prefix(300))")
        }
        return json
    }

    /// What a relying party (nginx, mosquitto, a backend) sees of `certificate` without a token:
    /// the issuing CA's CRL and an OCSP answer, through the management listener as `serve`
    /// answers them; both are kept in `out` for `openssl crl` and `openssl ocsp -respin`.
    func relyingParty(checking certificate: Certificate, of id: String, issuer: Certificate, out: String) async throws {
        let crl = try await client.send(HTTP1Request(method: "GET", path: "/crl/issuing.crl"))
        let serial = certificate.serialNumber.hexString.lowercased()
        guard crl.status == 200, try CRLReader.revokedSerials(crl.body).contains(serial) else {
            throw ValidationError("the issuing CRL does not list \(id)'s revoked certificate (\(crl.status))")
        }
        try Data(crl.body).write(to: URL(fileURLWithPath: out + "/issuing.crl"))
        show.step("relying party", "GET /crl/issuing.crl (no token): \(id)'s certificate \(serial.prefix(12))… is listed")
        let ocsp = try await client.send(
            HTTP1Request(
                method: "POST", path: "/ocsp", headers: [("Content-Type", "application/ocsp-request")],
                body: try OCSP.request(for: certificate, issuer: issuer)))
        guard ocsp.status == 200, case .successful = try OCSP.statuses(inResponse: ocsp.body).status,
            case .revoked(_, let reason)? = try OCSP.statuses(inResponse: ocsp.body).certificates.first?.status
        else {
            throw ValidationError("OCSP did not answer revoked for \(id)'s certificate (\(ocsp.status))")
        }
        try Data(ocsp.body).write(to: URL(fileURLWithPath: out + "/\(id).ocsp"))
        show.step(
            "relying party",
            "POST /ocsp (no token): revoked, reason \(RevocationReason(rawValue: reason).map(\.description) ?? "\(reason)")")
    }

    func device(_ id: String, _ token: String) async throws -> [String: Any] {
        let response = try await client.send(
            HTTP1Request(method: "GET", path: "/api/v1/devices/\(id)", headers: [("Authorization", "Bearer " + token)]))
        guard response.status == 200, let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
            throw ValidationError("the demo could not read device \(id): \(response.status)")
        }
        return json
    }

    func state(_ id: String, _ token: String) async throws {
        let json = try await device(id, token)
        show.step("registry", "\(id) is \(json["state"] as? String ?? "?")")
    }

    func owner(_ id: String, _ token: String) async throws {
        let json = try await device(id, token)
        show.step("registry", "\(id) is \(json["state"] as? String ?? "?"), owned by \(json["owner"] as? String ?? "nobody")")
    }
}

/// Simulated devices: each makes its key pair in memory, sends a CSR over EST and keeps what it gets.
final class DemoDevices: @unchecked Sendable {
    let est: ESTClient
    let show: DemoOutput
    let out: String
    var certificates: [String: Certificate] = [:]
    var issuedCount = 0
    var refusals = 0

    init(est: ESTClient, show: DemoOutput, out: String) {
        self.est = est
        self.show = show
        self.out = out
    }

    func issued(_ id: String) throws -> Certificate {
        guard let certificate = certificates[id] else { throw ValidationError("\(id) holds no certificate") }
        return certificate
    }

    func enroll(_ id: String, key: P256.Signing.PrivateKey, _ credential: ESTClient.Credential, expect: Int, note: String) async throws {
        let csr = try DeviceCSR.make(key: key, deviceID: id)
        try await record(id, note, "simpleenroll", expect: expect) { try await self.est.enroll(csr: csr, with: credential) }
    }

    func reenroll(
        _ id: String, key: P256.Signing.PrivateKey, current: [Certificate], currentKey: P256.Signing.PrivateKey, expect: Int, note: String
    ) async throws {
        let csr = try DeviceCSR.make(key: key, deviceID: id)
        try await record(id, note, "simplereenroll", expect: expect) {
            try await self.est.reenroll(csr: csr, current: current, key: currentKey)
        }
    }

    private func record(
        _ id: String, _ note: String, _ operation: String, expect: Int, _ body: () async throws -> ESTClient.Outcome
    ) async throws {
        var status = 0
        var outcome = ""
        do {
            switch try await body() {
            case .issued(let certificate, let der):
                status = 200
                certificates[id] = certificate
                issuedCount += 1
                try AtomicFile.write(Array(PEM.encode(der, label: "CERTIFICATE").utf8), to: out + "/\(id).pem", permissions: 0o644)
                let days = Int(certificate.notValidAfter.timeIntervalSince(certificate.notValidBefore) / 86_400)
                outcome = "200 certificate \(certificate.serialNumber.hexString.prefix(12))…, \(certificate.subject), \(days) days"
            case .pending(let retryAfter):
                status = 202
                outcome = "202 pending approval, Retry-After \(retryAfter) s"
            }
        } catch let error as DeviceError where error.code == .refused {
            status = error.status ?? 0
            refusals += 1
            outcome = "\(status) " + (error.message.components(separatedBy: "): ").dropFirst().joined(separator: "): "))
        }
        show.step(id, "\(note): \(operation) → \(outcome)")
        guard status == expect else { throw ValidationError("the demo expected \(expect) from \(operation) for \(id) but got \(status)") }
    }
}

/// A manufacturer's own CA, made in memory, for the enrollment-group flow.
struct DemoManufacturer {
    let key: P256.Signing.PrivateKey
    let certificate: Certificate

    init() throws {
        let key = P256.Signing.PrivateKey()
        self.key = key
        let name = try DistinguishedName {
            OrganizationName("Acme Devices")
            CommonName("Acme Device CA")
        }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 365 * 86_400, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
            },
            issuerPrivateKey: .init(key))
    }

    var caPEM: String {
        (try? certificate.serializeAsPEM().pemString) ?? ""
    }

    /// A device certificate naming `id`, for the device's `key`.
    func issue(_ id: String, key deviceKey: P256.Signing.PrivateKey) throws -> Certificate {
        let now = Date()
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(deviceKey.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 365 * 86_400, issuer: certificate.subject,
            subject: try DistinguishedName {
                OrganizationName("Acme Devices")
                CommonName(id)
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.clientAuth])
                AuthorityKeyIdentifier(keyIdentifier: try certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: .init(key))
    }
}
