public import FleetwardMQTT
public import Crypto
public import Foundation
import FleetwardPKI
import SwiftASN1
public import X509

/// When to renew, and how long to wait after a failure.
public enum RenewalPolicy {
    /// Renewal is due once two thirds of the certificate's lifetime has passed.
    public static func renewalTime(notBefore: Date, notAfter: Date) -> Date {
        notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) * 2 / 3)
    }
}

/// Exponential backoff with jitter: the n-th wait is uniformly random in [d/2, d] where
/// d = min(cap, base × 2ⁿ), so a fleet that lost its server does not come back in lockstep.
public struct Backoff: Sendable {
    public var base: Double
    public var cap: Double
    public private(set) var attempt = 0

    public init(base: Double = 1, cap: Double = 300) {
        self.base = base
        self.cap = cap
    }

    /// The next wait, in seconds.
    public mutating func next() -> Double {
        var generator = SystemRandomNumberGenerator()
        return next(using: &generator)
    }

    public mutating func next(using generator: inout some RandomNumberGenerator) -> Double {
        let ceiling = min(cap, base * pow(2, Double(min(attempt, 30))))
        attempt += 1
        return Double.random(in: (ceiling / 2)...ceiling, using: &generator)
    }

    public mutating func reset() { attempt = 0 }
}

/// What an agent calls its proof on `simpleenroll`.
public enum EnrollmentProof: Sendable {
    /// The factory secret the device was programmed with (allow-list flow).
    case secret(String)
    /// A one-time enrollment token from the device's owner (trusted-user claim flow).
    case token(String)
    /// The birth certificate the factory signed for the device's birth key (birth-certificate flow).
    case birthCertificate
}

/// The device side of Fleetward on one device: provisioning configuration, sealed credential
/// store and key custody together. Enrolls by any flow, renews, connects to the gateway and
/// sends signed telemetry; the old credential stays until the new one is stored.
public struct DeviceAgent: Sendable {
    public let config: ProvisioningConfig
    public let store: CredentialStore

    public init(config: ProvisioningConfig, store: CredentialStore) {
        self.config = config
        self.store = store
    }

    /// The stored credential, or `.notEnrolled` when there is none.
    public func credential() throws -> DeviceCredential {
        guard let credential = try store.load() else {
            throw DeviceError(.notEnrolled, "this device holds no credential yet: run enroll first")
        }
        return credential
    }

    /// The operational certificate chain (leaf first) and its key.
    public func operationalIdentity() throws -> (credential: DeviceCredential, chain: [Certificate], key: any DeviceSigningKey) {
        let credential = try credential()
        guard let operational = credential.operational else {
            throw DeviceError(.notEnrolled, "device \(credential.deviceID) has no operational certificate yet: run enroll first")
        }
        let chain: [Certificate]
        do {
            chain = try operational.chain.map { try Certificate(derEncoded: Array($0)) }
        } catch {
            throw DeviceError(.sealedStore, "the stored certificate chain is unreadable: \(error)")
        }
        guard let leaf = chain.first else { throw DeviceError(.sealedStore, "the stored certificate chain is empty") }
        let key = try store.custody.key(reference: operational.keyReference)
        guard Certificate.PublicKey(key.publicKey) == leaf.publicKey else {
            throw DeviceError(.sealedStore, "the stored certificate is not for the stored key")
        }
        return (credential, chain, key)
    }

    // MARK: Factory

    /// Makes the birth key inside the custody and returns a CSR for the factory CA (DER): the key
    /// never leaves the device; the factory signs the request (`fleetward factory issue`).
    public func makeBirthRequest(deviceID: String) throws -> [UInt8] {
        var credential = try store.load() ?? DeviceCredential(deviceID: deviceID)
        guard credential.deviceID == deviceID else {
            throw DeviceError(.invalidInput, "this device is already \(credential.deviceID), not \(deviceID)")
        }
        let key = try store.custody.generateKey(purpose: .birth)
        let csr = try DeviceCSR.make(key: key, deviceID: deviceID)
        let previous = credential.birth?.keyReference
        credential.birth = DeviceCredential.Birth(keyReference: key.reference)
        try store.save(credential)
        if let previous { try store.custody.destroyKey(reference: previous) }
        return csr
    }

    /// Stores the birth certificate the factory signed; it must be for the birth key made here
    /// and chain to the pinned root through the factory CA (`factoryCA`).
    public func installBirthCertificate(_ der: [UInt8]) throws -> Certificate {
        var credential = try credential()
        guard let birth = credential.birth else {
            throw DeviceError(.invalidInput, "no birth key on this device: make one with factory-request first")
        }
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw DeviceError(.invalidInput, "the birth certificate is not a certificate: \(error)")
        }
        let key = try store.custody.key(reference: birth.keyReference)
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw DeviceError(.invalidInput, "the birth certificate is for another key, not this device's birth key")
        }
        credential.birth?.certificate = Data(der)
        try store.save(credential)
        return certificate
    }

    // MARK: Enrollment and renewal

    /// Enrolls with `proof`: a new operational key made in the custody, a CSR for it, `simpleenroll`,
    /// and the certificate stored with its chain. Waits out a 202 up to `waitForApproval`.
    public func enroll(deviceID: String, proof: EnrollmentProof, waitForApproval: Duration = .zero) async throws -> DeviceCredential {
        var credential = try store.load() ?? DeviceCredential(deviceID: deviceID)
        guard credential.deviceID == deviceID else {
            throw DeviceError(.invalidInput, "this device is already \(credential.deviceID), not \(deviceID)")
        }
        let estCredential: ESTClient.Credential
        switch proof {
        case .secret(let secret): estCredential = .secret(id: deviceID, secret: secret)
        case .token(let token): estCredential = .token(id: deviceID, token: token)
        case .birthCertificate:
            guard let birth = credential.birth, let der = birth.certificate else {
                throw DeviceError(.invalidInput, "this device has no birth certificate installed")
            }
            let certificate = try Certificate(derEncoded: Array(der))
            estCredential = .certificate(chain: [certificate], key: try store.custody.key(reference: birth.keyReference))
        }
        let client = try config.estClient()
        let key = try store.custody.generateKey(purpose: .operational)
        do {
            let csr = try DeviceCSR.make(key: key, deviceID: deviceID)
            let deadline = ContinuousClock.now + waitForApproval
            var outcome = try await client.enroll(csr: csr, with: estCredential)
            while case .pending(let retryAfter) = outcome {
                let wait = Duration.seconds(max(1, retryAfter))
                guard ContinuousClock.now + wait <= deadline else {
                    throw DeviceError(
                        .pending, "device \(deviceID) waits for an operator's approval; enroll again after \(retryAfter) s", status: 202)
                }
                try await Task.sleep(for: wait)
                outcome = try await client.enroll(csr: csr, with: estCredential)
            }
            guard case .issued(let certificate, let der) = outcome else { throw DeviceError(.malformedResponse, "no certificate") }
            try await store(certificate, der: der, key: key, into: &credential, client: client)
            return credential
        } catch {
            discard(key)
            throw error
        }
    }

    /// Re-enrolls (`simplereenroll`) with the current certificate, for a new key made in the
    /// custody; the old key and certificate stay until the new ones are stored.
    public func renew() async throws -> DeviceCredential {
        var (credential, chain, currentKey) = try operationalIdentity()
        let client = try config.estClient()
        let key = try store.custody.generateKey(purpose: .operational)
        do {
            let csr = try DeviceCSR.make(key: key, deviceID: credential.deviceID)
            let outcome = try await client.reenroll(csr: csr, current: chain, key: currentKey)
            guard case .issued(let certificate, let der) = outcome else {
                throw DeviceError(.refused, "the server put the renewal on hold (202)", status: 202)
            }
            try await store(certificate, der: der, key: key, into: &credential, client: client)
            return credential
        } catch {
            discard(key)
            throw error
        }
    }

    /// Destroys a key made for an enrollment that failed, unless the stored credential already
    /// refers to it (the save completed its rename and failed after).
    private func discard(_ key: any DeviceSigningKey) {
        if let stored = try? store.load(), stored.operational?.keyReference == key.reference { return }
        try? store.custody.destroyKey(reference: key.reference)
    }

    /// When the current certificate should be renewed.
    public func renewalTime() throws -> Date {
        let leaf = try operationalIdentity().chain[0]
        return RenewalPolicy.renewalTime(notBefore: leaf.notValidBefore, notAfter: leaf.notValidAfter)
    }

    /// Checks an issued certificate against the key and the pinned root, then switches the stored
    /// credential to it in one atomic write and destroys the replaced key.
    private func store(
        _ certificate: Certificate, der: [UInt8], key: any DeviceSigningKey, into credential: inout DeviceCredential, client: ESTClient
    ) async throws {
        guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
            throw DeviceError(.malformedResponse, "the server issued a certificate for another key")
        }
        let issuer = try await issuingCA(of: certificate, client: client)
        let replaced = credential.operational?.keyReference
        credential.operational = DeviceCredential.Operational(
            keyReference: key.reference, chain: [Data(der), Data(try PinnedTLS.der(issuer))], issuedAt: Date())
        try store.save(credential)
        if let replaced, replaced != key.reference { try? store.custody.destroyKey(reference: replaced) }
    }

    /// The CA that signed `certificate`, from the server's `cacerts`, signed in turn by a pinned root.
    private func issuingCA(of certificate: Certificate, client: ESTClient) async throws -> Certificate {
        let roots = try config.roots
        let published = try await client.caCertificates()
        for candidate in published where candidate.subject == certificate.issuer {
            guard candidate.publicKey.isValidSignature(certificate.signature, for: certificate) else { continue }
            if roots.contains(where: {
                $0.subject == candidate.issuer && $0.publicKey.isValidSignature(candidate.signature, for: candidate)
            }) {
                return candidate
            }
        }
        throw DeviceError(.untrustedServer, "the issued certificate does not chain to the pinned root")
    }

    // MARK: Gateway

    /// A kept-alive mTLS connection to the gateway with the operational certificate.
    public func connect(timeout: Duration = .seconds(15)) async throws -> GatewayConnection {
        let (_, chain, key) = try operationalIdentity()
        let endpoint = try config.gatewayEndpoint
        let tls = PinnedTLS(roots: try config.roots, serverName: config.serverName, clientChain: chain, clientKey: key)
        return try await GatewayConnection.connect(host: endpoint.host, port: endpoint.port, tls: tls, timeout: timeout)
    }

    /// An MQTT session through the front door with the operational certificate, the device ID as
    /// client identifier. `endpoint` overrides the provisioning file's.
    public func connectMQTT(
        endpoint: ProvisioningConfig.Endpoint? = nil, version: MQTTVersion = .v5, keepAlive: UInt16 = 60, cleanStart: Bool = true,
        sessionExpiry: UInt32 = 0, timeout: Duration = .seconds(15)
    ) async throws -> MQTTDeviceClient {
        let (credential, chain, key) = try operationalIdentity()
        let endpoint = try endpoint ?? config.mqttEndpoint
        let tls = PinnedTLS(roots: try config.roots, serverName: config.serverName, clientChain: chain, clientKey: key)
        return try await MQTTDeviceClient.connect(
            host: endpoint.host, port: endpoint.port, tls: tls, clientID: credential.deviceID, version: version, keepAlive: keepAlive,
            cleanStart: cleanStart, sessionExpiry: sessionExpiry, timeout: timeout)
    }

    /// Records the owner the gateway named, when it changed.
    public func remember(_ identity: GatewayIdentity) throws {
        var credential = try credential()
        guard credential.owner != identity.owner else { return }
        credential.owner = identity.owner
        try store.save(credential)
    }

    /// Connects, sends one signed telemetry message and closes.
    public func send(telemetry body: [UInt8]) async throws -> GatewayIdentity {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        let (_, _, key) = try operationalIdentity()
        try await connection.sendTelemetry(body, key: key)
        try? remember(connection.identity)
        return connection.identity
    }
}

/// What ``DeviceAgent/run(interval:until:telemetry:events:)`` reports as it goes.
public enum AgentEvent: Sendable {
    case connected(GatewayIdentity)
    case sent(bytes: Int)
    case disconnected(String)
    case renewed(serialHex: String, notAfter: Date)
    case retrying(String, afterSeconds: Double)
    /// The periodic task (``PeriodicTask``) failed this time; it runs again at its next turn.
    case taskFailed(String)
}

/// Work the agent does on its live gateway connection now and then (an update check): first right
/// after connecting, then every `every`. A failure is reported and retried at the next turn.
public struct PeriodicTask: Sendable {
    public var every: Duration
    public var work: @Sendable (GatewayConnection) async throws -> Void

    public init(every: Duration, work: @escaping @Sendable (GatewayConnection) async throws -> Void) {
        self.every = every
        self.work = work
    }
}

extension DeviceAgent {
    /// Stays connected to the gateway: sends `telemetry()` every `interval`, renews once two thirds
    /// of the certificate's lifetime has passed (jittered backoff on failure, the old credential
    /// kept meanwhile), and reconnects with jittered backoff when the connection drops.
    ///
    /// Returns at `until` (nil: never). Throws when the device cannot go on by itself: the server
    /// is not the pinned one, or the gateway refuses the device and EST refuses its renewal too
    /// (suspended, revoked, stolen), with the server's reason.
    public func run(
        interval: Duration, until deadline: ContinuousClock.Instant? = nil, telemetry: @Sendable () -> [UInt8],
        periodic: PeriodicTask? = nil, events: @Sendable (AgentEvent) -> Void
    ) async throws {
        var nextPeriodic = ContinuousClock.now
        var backoff = Backoff(base: 1, cap: 300)
        var renewalBackoff = Backoff(base: 5, cap: 900)
        var nextRenewalAttempt = try renewalTime()
        // One renewal per run of refused connections: it mends a certificate the registry no longer
        // has, or names the reason; renewing again while the gateway keeps refusing would only flood
        // the CA (a gateway whose clock is behind, a registry it cannot read).
        var renewedSinceRefusal = false
        func timeLeft() -> Bool { deadline.map { ContinuousClock.now < $0 } ?? true }
        func pause(_ seconds: Double) async throws {
            var wait = Duration.milliseconds(Int64(seconds * 1000))
            if let deadline { wait = min(wait, max(.zero, deadline - ContinuousClock.now)) }
            try await Task.sleep(for: wait)
        }
        /// Renews; false (and an event) when it failed for a reason that may pass.
        func tryRenewal() async throws -> Bool {
            do {
                let renewed = try await renew()
                renewalBackoff.reset()
                nextRenewalAttempt = try renewalTime()
                if let leaf = try? operationalIdentity().chain.first {
                    events(
                        .renewed(
                            serialHex: leaf.serialNumber.bytes.map { String(format: "%02x", $0) }.joined(), notAfter: leaf.notValidAfter))
                }
                _ = renewed
                return true
            } catch let error as DeviceError where Self.isPermanent(error) {
                throw error
            } catch {
                let wait = renewalBackoff.next()
                nextRenewalAttempt = Date().addingTimeInterval(wait)
                events(.retrying("renewal failed: \(error)", afterSeconds: wait))
                return false
            }
        }

        while timeLeft() {
            try Task.checkCancellation()
            let leaf = try operationalIdentity().chain[0]
            if Date() >= leaf.notValidAfter {
                throw DeviceError(
                    .notEnrolled, "the device certificate expired at \(leaf.notValidAfter) before it could be renewed: enroll again")
            }
            if Date() >= nextRenewalAttempt { _ = try await tryRenewal() }

            let connection: GatewayConnection
            do {
                connection = try await connect()
            } catch let error as DeviceError where error.code == .handshakeRefused {
                // The gateway does not say why; EST does. A renewal either mends it (a certificate
                // that is no longer on record) or names the reason (suspended, revoked, stolen).
                if renewedSinceRefusal {
                    let wait = backoff.next()
                    events(.retrying("\(error)", afterSeconds: wait))
                    try await pause(wait)
                    continue
                }
                do {
                    renewedSinceRefusal = true
                    _ = try await renew()
                    nextRenewalAttempt = try renewalTime()
                    continue
                } catch let refusal as DeviceError where Self.isPermanent(refusal) {
                    throw DeviceError(
                        .refused, "the gateway refused this device, and \(refusal.message)", status: refusal.status)
                } catch {
                    let wait = backoff.next()
                    events(.retrying("\(error)", afterSeconds: wait))
                    try await pause(wait)
                    continue
                }
            } catch let error as DeviceError where Self.isPermanent(error) {
                throw error
            } catch {
                let wait = backoff.next()
                events(.retrying("\(error)", afterSeconds: wait))
                try await pause(wait)
                continue
            }
            backoff.reset()
            renewedSinceRefusal = false
            try? remember(connection.identity)
            events(.connected(connection.identity))
            do {
                try await stayConnected(
                    connection, interval: interval, timeLeft: timeLeft, renewalDue: { Date() >= nextRenewalAttempt }, renew: tryRenewal,
                    telemetry: telemetry, periodic: periodic, nextPeriodic: &nextPeriodic, events: events)
            } catch {
                await connection.close()
                throw error
            }
            await connection.close()
            if timeLeft() { try await pause(backoff.next()) }
        }
    }

    /// Sends telemetry on `connection` until it closes, a renewal switches credentials (reconnect
    /// with the new certificate), or time is up.
    private func stayConnected(
        _ connection: GatewayConnection, interval: Duration, timeLeft: () -> Bool, renewalDue: () -> Bool,
        renew tryRenewal: () async throws -> Bool, telemetry: () -> [UInt8], periodic: PeriodicTask?,
        nextPeriodic: inout ContinuousClock.Instant, events: (AgentEvent) -> Void
    ) async throws {
        let (_, _, key) = try operationalIdentity()
        var nextSend = ContinuousClock.now
        while timeLeft() {
            if !connection.isActive {
                events(.disconnected("the gateway closed the connection"))
                return
            }
            if renewalDue(), try await tryRenewal() { return }
            if let periodic, ContinuousClock.now >= nextPeriodic {
                do {
                    try await periodic.work(connection)
                } catch let error as DeviceError where Self.isPermanent(error) {
                    throw error
                } catch {
                    events(.taskFailed("\(error)"))
                }
                nextPeriodic = ContinuousClock.now + periodic.every
            }
            if ContinuousClock.now >= nextSend {
                let body = telemetry()
                do {
                    try await connection.sendTelemetry(body, key: key)
                    events(.sent(bytes: body.count))
                } catch {
                    events(.disconnected("\(error)"))
                    return
                }
                nextSend = ContinuousClock.now + interval
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Errors a retry cannot mend: another server than the pinned one, a damaged store, bad settings.
    static func isPermanent(_ error: DeviceError) -> Bool {
        [.untrustedServer, .sealedStore, .notEnrolled, .invalidInput].contains(error.code)
            || (error.code == .refused && [401, 403].contains(error.status ?? 0))
    }
}
