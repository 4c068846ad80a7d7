public import FleetwardAuthority
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import Crypto
public import Logging
public import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
public import X509

/// The device gateway's trust decisions: who may complete a handshake, who is connected, and who
/// must be cut off when the registry changes.
///
/// A connection is accepted only when its client certificate chains to the issuing CA, has the
/// `device` profile, is within its validity, is on record for its device and not revoked, and
/// the device is `active`. The registry facts live in memory (one read per device on first
/// contact); the audit log is the change feed: whatever writes the registry (the management API,
/// `fleetward devices …` at the console, another node on the same PostgreSQL) appends an entry
/// naming the device or certificate, and ``watch(interval:)`` evicts it and closes the live
/// connections that no longer pass.
public final class Gateway: Sendable {
    /// What the gateway knows about one device.
    struct Entry: Sendable {
        var state: DeviceState
        var owner: String?
        /// Serial (lower-case hex) → (SHA-256 fingerprint, revoked).
        var certificates: [String: (sha256: String, revoked: Bool)]
    }

    /// The identity a live connection proved.
    public struct Identity: Sendable, Encodable {
        public var device: String
        public var owner: String?
        public var serial: String
        public var certificateSHA256: String
        public var notAfter: Date

        /// `GET /v1/whoami`'s answer: the identity as JSON with sorted keys, as `JSONEncoder`
        /// would write it, built by hand (an encoder per request costs more than the rest of it).
        var json: ByteBuffer {
            var buffer = ByteBuffer()
            buffer.reserveCapacity(256)
            buffer.writeStaticString(#"{"certificateSHA256":""#)
            buffer.writeString(RegistryEncoding.jsonEscape(certificateSHA256))
            buffer.writeStaticString(#"","device":""#)
            buffer.writeString(RegistryEncoding.jsonEscape(device))
            buffer.writeStaticString(#"","notAfter":""#)
            buffer.writeString(Self.iso8601(notAfter))
            if let owner {
                buffer.writeStaticString(#"","owner":""#)
                buffer.writeString(RegistryEncoding.jsonEscape(owner))
            }
            buffer.writeStaticString(#"","serial":""#)
            buffer.writeString(RegistryEncoding.jsonEscape(serial))
            buffer.writeStaticString(#""}"#)
            return buffer
        }

        /// `2026-12-25T09:14:53Z`, as `JSONEncoder`'s `.iso8601` writes dates.
        static func iso8601(_ date: Date) -> String {
            var time = time_t(date.timeIntervalSince1970.rounded(.down))
            var parts = tm()
            gmtime_r(&time, &parts)
            func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
            return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
                + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
        }
    }

    struct Live: Sendable {
        var channel: any Channel
        var identity: Identity
    }

    private struct State: Sendable {
        var entries: [DeviceID: Entry] = [:]
        /// Bumped on every eviction of the device, so a handshake that loaded an older entry knows.
        var generations: [DeviceID: UInt64] = [:]
        var live: [DeviceID: [ObjectIdentifier: Live]] = [:]
        var byChannel: [ObjectIdentifier: Identity] = [:]
        /// The public key of each live connection's certificate, once a signed message needed it.
        var signingKeys: [ObjectIdentifier: P256.Signing.PublicKey] = [:]
        /// Connections whose session depends on the owner (MQTT: policies name `${device.owner}`):
        /// a new owner ends them rather than being carried over.
        var ownerBound: Set<ObjectIdentifier> = []
    }

    public let registrar: Registrar
    var store: any RegistryStore { registrar.store }
    /// Where refusals of stolen, revoked or suspended devices are recorded.
    let securityEvents: SecurityEventLog?
    /// Per-device telemetry rate and size quotas.
    let telemetryQuota: TelemetryQuota
    let issuing: Certificate
    /// The factory CA, only to say why a birth certificate is refused.
    let factory: Certificate?
    let logger: Logger
    /// Handshakes admitted and refused, revocation-to-disconnect times.
    public let metrics: FleetMetrics
    let now: @Sendable () -> Date
    private let state = Mutex(State())
    private let head = Atomic<Int64>(0)
    /// Called with the scope (`model:…`, `group:…`) of each MQTT policy that changes.
    private let policyWatchers = Mutex<[@Sendable (MQTTPolicyScope) -> Void]>([])

    public init(
        registrar: Registrar, issuing: Certificate, factory: Certificate? = nil, securityEvents: SecurityEventLog? = nil,
        telemetryQuota: TelemetryQuota = TelemetryQuota(), metrics: FleetMetrics = FleetMetrics(), logger: Logger,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.metrics = metrics
        self.telemetryQuota = telemetryQuota
        self.securityEvents = securityEvents
        self.now = now
        self.factory = factory
        self.registrar = registrar
        self.issuing = issuing
        self.logger = logger
    }

    // MARK: Handshake

    /// Why a certificate was refused; logged, never sent (the TLS alert says only that it was bad).
    struct Refusal: Error, CustomStringConvertible {
        var code: FleetMetrics.HandshakeRefusal
        var reason: String
        var device: String?
        var serial: String?
        /// A stolen, revoked or suspended device or a revoked certificate: a security event.
        var isAlarming = false
        var description: String { reason }

        init(
            _ code: FleetMetrics.HandshakeRefusal, reason: String, device: String? = nil, serial: String? = nil, isAlarming: Bool = false
        ) {
            self.code = code
            self.reason = reason
            self.device = device
            self.serial = serial
            self.isAlarming = isAlarming
        }
    }

    /// Certificates that passed the checks below, by the SHA-256 of their DER: a device reconnects
    /// with the same certificate for its whole lifetime, and the same bytes carry the same valid
    /// signature, so only the time and the registry are checked again. Bounded; emptied when full.
    private let verifiedCertificates = Mutex<[SHA256Digest: (id: DeviceID, identity: Identity, notBefore: Date)]>([:])
    static let verifiedCertificateLimit = 100_000

    /// The checks that need no registry: chain to the issuing CA, validity, profile.
    func checkCertificate(_ der: [UInt8]) throws -> (DeviceID, Identity) {
        let digest = SHA256.hash(data: der)
        if let known = verifiedCertificates.withLock({ $0[digest] }) {
            let time = now()
            guard time >= known.notBefore else { throw Refusal(.notYetValid, reason: "the certificate is not yet valid", serial: known.identity.serial) }
            guard time <= known.identity.notAfter else {
                throw Refusal(.expired, reason: "the certificate has expired", serial: known.identity.serial)
            }
            return (known.id, known.identity)
        }
        let (id, identity, notBefore) = try checkNewCertificate(der, digest: digest)
        verifiedCertificates.withLock { cache in
            if cache.count >= Self.verifiedCertificateLimit { cache.removeAll(keepingCapacity: true) }
            cache[digest] = (id, identity, notBefore)
        }
        return (id, identity)
    }

    /// ``checkCertificate(_:)`` for a certificate not seen before: parse, issuer and signature,
    /// validity, profile and device ID.
    private func checkNewCertificate(_ der: [UInt8], digest: SHA256Digest) throws -> (DeviceID, Identity, Date) {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw Refusal(.malformed, reason: "the client certificate does not parse")
        }
        if let factory, certificate.issuer == factory.subject {
            throw Refusal(.wrongProfile, reason: "a birth certificate cannot connect; the device enrolls over EST for an operational certificate")
        }
        guard certificate.issuer == issuing.subject, issuing.publicKey.isValidSignature(certificate.signature, for: certificate) else {
            throw Refusal(.untrustedIssuer, reason: "the client certificate is not issued by the Fleetward issuing CA")
        }
        let serial = certificate.serialNumber.hexString.lowercased()
        let named: (profile: CertificateProfile?, deviceID: String?)
        do {
            named = try CertificateSummary.fleetwardIdentity(of: certificate)
        } catch {
            throw Refusal(.malformed, reason: "the client certificate's extensions do not decode", serial: serial)
        }
        let time = now()
        guard time >= certificate.notValidBefore else { throw Refusal(.notYetValid, reason: "the certificate is not yet valid", serial: serial) }
        guard time <= certificate.notValidAfter else { throw Refusal(.expired, reason: "the certificate has expired", serial: serial) }
        guard named.profile == .device else {
            let what = named.profile.map { "a \($0.rawValue) certificate" } ?? "a certificate without a Fleetward profile"
            throw Refusal(.wrongProfile, reason: "\(what) cannot connect; the gateway takes operational device certificates", serial: serial)
        }
        guard let id = named.deviceID.flatMap({ try? DeviceID($0) }) else {
            throw Refusal(.wrongProfile, reason: "the certificate names no device", serial: serial)
        }
        let identity = Identity(
            device: id.rawValue, owner: nil, serial: serial, certificateSHA256: digest.hexString, notAfter: certificate.notValidAfter)
        return (id, identity, certificate.notValidBefore)
    }

    /// The registry checks, against `entry`.
    static func checkRegistry(_ entry: Entry?, _ id: DeviceID, _ identity: Identity) throws -> Identity {
        guard let entry else { throw Refusal(.notRegistered, reason: "device \(id) is not registered", device: id.rawValue, serial: identity.serial) }
        guard entry.state == .active else {
            throw Refusal(
                .notActive, reason: "device \(id) is \(entry.state)", device: id.rawValue, serial: identity.serial,
                isAlarming: [.stolen, .revoked, .suspended].contains(entry.state))
        }
        guard let record = entry.certificates[identity.serial], record.sha256 == identity.certificateSHA256 else {
            throw Refusal(
                .unknownCertificate, reason: "certificate \(identity.serial) is not on record for device \(id)", device: id.rawValue, serial: identity.serial)
        }
        guard !record.revoked else {
            throw Refusal(
                .revoked, reason: "certificate \(identity.serial) is revoked", device: id.rawValue, serial: identity.serial, isAlarming: true)
        }
        var identity = identity
        identity.owner = entry.owner
        return identity
    }

    /// The verification callback's work for one connection: refuse, or accept and track it.
    /// Completes at once when the device is in memory; otherwise after one registry read.
    func verify(
        _ presented: [NIOSSLCertificate], channel: any Channel, listener: FleetMetrics.DeviceListenerKind = .gateway,
        promise: EventLoopPromise<NIOSSLVerificationResultWithMetadata>
    ) {
        let peer = Peer(channel: channel, listener: listener)
        let checked: (DeviceID, Identity)
        do {
            guard let leaf = presented.first else { throw Refusal(.noCertificate, reason: "no client certificate") }
            checked = try checkCertificate(try leaf.toDERBytes())
        } catch {
            refuse(error, peer: peer, promise: promise)
            return
        }
        let (id, identity) = checked
        let cached = state.withLock { state in state.entries[id].map { ($0, state.generations[id, default: 0]) } }
        // A certificate the cached entry has never seen may be minutes old (an enrollment the
        // change feed has not reached yet): read the device again rather than refuse.
        if let (entry, generation) = cached, entry.certificates[identity.serial] != nil {
            accept(entry, generation: generation, id, identity, channel: channel, peer: peer, promise: promise)
            return
        }
        promise.completeWithTask {
            let generation = self.state.withLock { $0.generations[id, default: 0] }
            let entry = try await self.load(id)
            if let entry {
                self.state.withLock { state in if state.generations[id, default: 0] == generation { state.entries[id] = entry } }
            }
            return try await channel.eventLoop.submit {
                try self.acceptNow(entry, generation: generation, id, identity, channel: channel)
            }.get()
        }
        promise.futureResult.whenComplete { result in
            switch result {
            case .success(.certificateVerified): self.logAccepted(identity, peer: peer)
            case .success(.failed): break
            case .failure(let error): self.logRefused(error, peer: peer)
            }
        }
    }

    /// The same checks for a resumed session, whose handshake ran no verification callback, on
    /// the certificate the session carries; succeeds with false when the connection must close.
    func admitResumed(_ channel: any Channel, listener: FleetMetrics.DeviceListenerKind = .gateway) -> EventLoopFuture<Bool> {
        let promise = channel.eventLoop.makePromise(of: NIOSSLVerificationResultWithMetadata.self)
        let presented = ((try? channel.pipeline.syncOperations.nioSSL_peerCertificate()) ?? nil).map { [$0] } ?? []
        verify(presented, channel: channel, listener: listener, promise: promise)
        return promise.futureResult.map { result in
            if case .certificateVerified = result { return true }
            return false
        }.recover { _ in false }
    }

    private func accept(
        _ entry: Entry?, generation: UInt64, _ id: DeviceID, _ identity: Identity, channel: any Channel, peer: Peer,
        promise: EventLoopPromise<NIOSSLVerificationResultWithMetadata>
    ) {
        do {
            promise.succeed(try acceptNow(entry, generation: generation, id, identity, channel: channel))
            logAccepted(identity, peer: peer)
        } catch {
            refuse(error, peer: peer, promise: promise)
        }
    }

    /// Checks `entry` and records the connection as live for its device.
    private func acceptNow(
        _ entry: Entry?, generation: UInt64, _ id: DeviceID, _ identity: Identity, channel: any Channel
    ) throws -> NIOSSLVerificationResultWithMetadata {
        let proven = try Self.checkRegistry(entry, id, identity)
        let key = ObjectIdentifier(channel)
        let stale = state.withLock { state -> Bool in
            state.live[id, default: [:]][key] = Live(channel: channel, identity: proven)
            state.byChannel[key] = proven
            return state.generations[id, default: 0] != generation
        }
        // The certificate's validity ends the connection too.
        let remaining = proven.notAfter.timeIntervalSince(now())
        let expiry = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(max(0, remaining) * 1000) + 1)) { [logger] in
            logger.notice(
                "gateway closed a device connection",
                metadata: ["device": "\(id)", "serial": "\(proven.serial)", "reason": "the certificate expired"])
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
            expiry.cancel()
            self.state.withLock { state in
                state.live[id]?[key] = nil
                if state.live[id]?.isEmpty == true { state.live[id] = nil }
                state.byChannel[key] = nil
                state.signingKeys[key] = nil
                state.ownerBound.remove(key)
            }
        }
        // The device changed while this handshake read it: check again with fresh facts.
        if stale { Task { await self.reevaluate(id) } }
        return .certificateVerified(VerificationMetadata(nil))
    }

    private func refuse(_ error: any Error, peer: Peer, promise: EventLoopPromise<NIOSSLVerificationResultWithMetadata>) {
        logRefused(error, peer: peer)
        promise.succeed(.failed)
    }

    /// Where a connection comes from, for the logs: made into a string only when a line is
    /// written, not for every admitted connection (≈ 0.6 % of a resumed handshake's CPU).
    struct Peer: CustomStringConvertible, Sendable {
        let channel: any Channel
        let listener: FleetMetrics.DeviceListenerKind
        var description: String { channel.remoteAddress?.description ?? "unknown" }
    }

    private func logAccepted(_ identity: Identity, peer: Peer) {
        metrics.handshakeAdmitted(peer.listener)
        logger.debug(
            "gateway accepted a device", metadata: ["device": "\(identity.device)", "serial": "\(identity.serial)", "peer": "\(peer)"])
    }

    private func logRefused(_ error: any Error, peer: Peer) {
        metrics.handshakeRefused(peer.listener, (error as? Refusal)?.code ?? .registryUnavailable)
        var metadata: Logger.Metadata = ["reason": "\(error)", "peer": "\(peer)"]
        if let refusal = error as? Refusal {
            if let device = refusal.device { metadata["device"] = "\(device)" }
            if let serial = refusal.serial { metadata["serial"] = "\(serial)" }
            if refusal.isAlarming {
                securityEvents?.record(
                    kind: SecurityEventLog.handshakeRefused, device: refusal.device, serial: refusal.serial,
                    address: peer.channel.remoteAddress?.ipAddress, detail: refusal.reason)
            }
        }
        logger.notice("gateway refused a client certificate", metadata: metadata)
    }

    /// The device and its certificates from the registry.
    func load(_ id: DeviceID) async throws -> Entry? {
        guard let device = try await store.device(id) else { return nil }
        var certificates: [String: (sha256: String, revoked: Bool)] = [:]
        for record in try await store.certificates(for: id) where record.profile == CertificateProfile.device.rawValue {
            certificates[record.serial.lowercased()] = (record.sha256.lowercased(), record.revocation != nil)
        }
        return Entry(state: device.state, owner: device.owner, certificates: certificates)
    }

    // MARK: Live connections

    /// The identity a live connection proved in its handshake.
    public func identity(of channel: any Channel) -> Identity? {
        state.withLock { $0.byChannel[ObjectIdentifier(channel)] }
    }

    /// The P-256 key of the certificate `channel` proved, once ``rememberSigningKey(_:for:)`` kept it.
    func signingKey(of channel: any Channel) -> P256.Signing.PublicKey? {
        state.withLock { $0.signingKeys[ObjectIdentifier(channel)] }
    }

    /// The P-256 key of the certificate `channel` proved in its handshake (read once, then kept
    /// while the connection lives); nil when it has none.
    func certificateKey(of channel: any Channel) async -> P256.Signing.PublicKey? {
        if let key = signingKey(of: channel) { return key }
        guard let peer = try? await channel.nioSSL_peerCertificate().get(),
            let certificate = try? Certificate(derEncoded: try peer.toDERBytes()),
            let key = P256.Signing.PublicKey(certificate.publicKey)
        else { return nil }
        rememberSigningKey(key, for: channel)
        return key
    }

    /// Keeps the connection's key for its later messages; forgotten when the connection closes.
    func rememberSigningKey(_ publicKey: P256.Signing.PublicKey, for channel: any Channel) {
        let key = ObjectIdentifier(channel)
        state.withLock { state in
            if state.byChannel[key] != nil { state.signingKeys[key] = publicKey }
        }
    }

    /// Marks `channel` as ending when its device's owner changes.
    func cutOnOwnerChange(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        state.withLock { state in
            if state.byChannel[key] != nil { state.ownerBound.insert(key) }
        }
    }

    /// Calls `body` with the scope of every MQTT policy set or removed from now on (on any node:
    /// the change is read from the audit log).
    func onMQTTPolicyChange(_ body: @escaping @Sendable (MQTTPolicyScope) -> Void) {
        policyWatchers.withLock { $0.append(body) }
    }

    /// How many device connections are open.
    public var liveConnections: Int { state.withLock { $0.byChannel.count } }

    /// How many connections device `id` has open now (gateway and MQTT).
    public func liveConnections(of id: DeviceID) -> Int { state.withLock { $0.live[id]?.count ?? 0 } }

    /// Forgets what is known about `id` and closes its connections that no longer pass.
    /// - Parameter changedAt: when the registry change was written: the connections this closes
    ///   record how long the change took to cut them.
    func reevaluate(_ id: DeviceID, changedAt: Date? = nil) async {
        let live = state.withLock { state -> [Live] in
            state.entries[id] = nil
            state.generations[id, default: 0] &+= 1
            return Array(state.live[id]?.values ?? [:].values)
        }
        guard !live.isEmpty else { return }
        let entry: Entry?
        do {
            entry = try await load(id)
        } catch {
            logger.error("gateway could not re-read a device; closing its connections", metadata: ["device": "\(id)", "error": "\(error)"])
            for connection in live { connection.channel.close(promise: nil) }
            return
        }
        for connection in live {
            do {
                let current = try Self.checkRegistry(entry, id, connection.identity)
                // Still admitted: carry the registry's owner from now on (X-Fleetward-Owner, whoami).
                if current.owner != connection.identity.owner {
                    let key = ObjectIdentifier(connection.channel)
                    if state.withLock({ $0.ownerBound.contains(key) }) {
                        throw Refusal(.notActive, reason: "the device has a new owner", device: id.rawValue, serial: connection.identity.serial)
                    }
                    state.withLock { state in
                        state.live[id]?[key]?.identity.owner = current.owner
                        state.byChannel[key]?.owner = current.owner
                    }
                }
            } catch {
                logger.notice(
                    "gateway closed a device connection",
                    metadata: ["device": "\(id)", "serial": "\(connection.identity.serial)", "reason": "\(error)"])
                connection.channel.close(promise: nil)
                if let changedAt { metrics.disconnected(afterChangeSeconds: now().timeIntervalSince(changedAt)) }
            }
        }
    }

    /// Follows the audit log from its current end: every entry about a device or a certificate
    /// re-checks that device. Runs until cancelled.
    ///
    /// Where the store pushes appends (PostgreSQL LISTEN/NOTIFY, ``RegistryStore/auditAppends()``)
    /// the gateway catches up on each notification and polls only every `fallback` as a safety
    /// net; otherwise (SQLite, where another process may write the same file) it polls every
    /// `interval`.
    public func watch(interval: Duration = .milliseconds(200), fallback: Duration = .seconds(1)) async throws {
        head.store(try await store.auditHead(), ordering: .relaxed)
        guard let appends = store.auditAppends() else {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                await catchUpLogged()
            }
            return
        }
        logger.notice("gateway follows registry changes through PostgreSQL notifications")
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in appends { wake.yield() }
            }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: fallback)
                    wake.yield()
                }
            }
            for await _ in wakes {
                if Task.isCancelled { break }
                await catchUpLogged()
            }
            group.cancelAll()
        }
    }

    private func catchUpLogged() async {
        do {
            try await catchUp()
        } catch {
            logger.warning("gateway could not read the audit log", metadata: ["error": "\(error)"])
        }
    }

    /// Applies every audit entry after the last one seen.
    func catchUp() async throws {
        while true {
            let subjects = try await store.auditSubjects(after: head.load(ordering: .relaxed), limit: 1000)
            guard let last = subjects.last else { return }
            // Each device once, with the time of its earliest change in this batch.
            var devices: [DeviceID: Date?] = [:]
            func note(_ id: DeviceID, _ time: Date?) {
                if let known = devices[id], let knownTime = known, let time, knownTime <= time { return }
                devices[id] = time
            }
            for entry in subjects {
                if entry.subject.hasPrefix("device:"), let id = try? DeviceID(String(entry.subject.dropFirst(7))) {
                    note(id, entry.time)
                } else if entry.subject.hasPrefix("certificate:") {
                    let serial = String(entry.subject.dropFirst(12)).lowercased()
                    if let id = try await store.certificate(serial: serial)?.deviceID { note(id, entry.time) }
                } else if entry.subject.hasPrefix("mqtt-policy:"), let scope = try? MQTTPolicyScope(parsing: String(entry.subject.dropFirst(12))) {
                    for watcher in policyWatchers.withLock({ $0 }) { watcher(scope) }
                }
            }
            for (id, time) in devices { await reevaluate(id, changedAt: time) }
            head.store(last.sequence, ordering: .relaxed)
            if subjects.count < 1000 { return }
        }
    }
}
