public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
public import X509
import SwiftASN1

/// Enrollment and renewal for every provisioning flow (DESIGN.md), whatever the transport (EST
/// today): who the device proved to be, whether the registry lets it enroll, and its certificate.
///
/// A device proves who it is with a password (its ID and factory secret, or its ID and a one-time
/// enrollment token), with the key whose fingerprint was registered (its ID and an empty
/// password; the CSR's signature proves the key), or with a TLS client certificate: a birth
/// certificate from the factory CA, a certificate under a registered enrollment group's CA, or
/// (to renew) its current operational certificate. The CSR never picks the identity: its subject
/// must name the proven device or nothing.
public final class Enroller: Sendable {
    /// What the device showed.
    public enum Credential: Sendable {
        /// HTTP Basic: a device ID and a factory secret, a one-time token (`fwe_…`), or nothing
        /// (for a device registered by its key's fingerprint).
        case password(user: String, password: String)
        /// A TLS client certificate, with the intermediates of the path the handshake found from it
        /// to one of Fleetward's anchors (``validatedPath(_:)``).
        case certificate(Certificate, der: [UInt8], intermediates: [Certificate])
        /// Nothing usable.
        case none
    }

    /// What an enrollment gave.
    public enum Outcome: Sendable {
        /// The operational certificate.
        case issued(IssuedCertificate)
        /// The device waits for an operator's approval; ask again after this many seconds.
        case pending(retryAfter: Int)
    }

    public let authority: CertificateAuthority
    public let registrar: Registrar
    let hasher: SecretHasher
    let batcher: EnrollmentBatcher
    /// Failed proofs per address, and a backoff per device that a stranger cannot turn into a lockout.
    let throttle: EnrollmentThrottle
    /// How long operational certificates last (nil: the device profile's default, 30 days).
    let deviceLifetime: TimeInterval?
    /// Seconds a pending device is told to wait.
    let pendingRetryAfter: Int
    /// Where refusals of stolen, revoked or suspended devices are recorded.
    let securityEvents: SecurityEventLog?
    let now: @Sendable () -> Date
    let issuing: Certificate
    let factory: Certificate

    public init(
        authority: CertificateAuthority, registrar: Registrar, hasher: SecretHasher, deviceLifetime: TimeInterval? = nil,
        throttle: EnrollmentThrottle = EnrollmentThrottle(), pendingRetryAfter: Int = 300, securityEvents: SecurityEventLog? = nil,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.securityEvents = securityEvents
        self.authority = authority
        self.registrar = registrar
        self.hasher = hasher
        self.deviceLifetime = deviceLifetime
        self.throttle = throttle
        self.pendingRetryAfter = pendingRetryAfter
        self.now = now
        batcher = EnrollmentBatcher(registrar: registrar, now: now)
        issuing = authority.hierarchy.member(.issuing).certificate
        factory = authority.hierarchy.member(.factory).certificate
    }

    var store: any RegistryStore { registrar.store }

    /// Who the device proved to be, and what the registry must check.
    struct Proof {
        var device: Device
        var registerIfMissing = false
        var acceptedStates: Set<DeviceState>
        var bindOwner: String?
        var method: String
        /// The enrollment group whose CA vouched for the device.
        var group: EnrollmentGroup?
        /// The key fingerprint the CSR must carry (public-key proof).
        var requiredKeySHA256: [UInt8]?
        /// The enrollment token to spend with the enrollment.
        var tokenHMAC: [UInt8]?
    }

    /// Enrolls (or, with `renewal`, re-enrolls) the device `credential` proves, for the key of `csr`.
    ///
    /// - Parameter address: where the request came from, for the failed-attempt limits.
    /// - Throws: ``AuthorityError`` `unauthenticated` (no or a wrong proof), `tooManyRequests`
    ///   (with `retryAfter`), `forbidden` (a suspended, revoked or stolen device, a revoked
    ///   certificate, the wrong kind of certificate), `invalidRequest` (a CSR naming another
    ///   device), `unavailable` (the registry failed).
    public func enroll(_ csr: CertificateRequest, with credential: Credential, renewal: Bool, from address: String?) async throws
        -> Outcome
    {
        do {
            do {
                return try await enrollChecked(csr, with: credential, renewal: renewal, from: address)
            } catch let error as RegistryError {
                throw error.code == .storage
                    ? AuthorityError(.unavailable, "the registry database is unavailable; try again", underlying: error)
                    : AuthorityError(.forbidden, error.message, underlying: error)
            }
        } catch let error as AuthorityError where error.code == .forbidden {
            await recordRefusal(error, credential: credential, from: address)
            throw error
        }
    }

    /// A refused device that is stolen, revoked or suspended, or a revoked certificate, is a
    /// security event.
    private func recordRefusal(_ error: AuthorityError, credential: Credential, from address: String?) async {
        guard let securityEvents else { return }
        var id: DeviceID?
        var serial: String?
        switch credential {
        case .password(let user, _): id = try? DeviceID(user)
        case .certificate(let certificate, _, _):
            serial = certificate.serialNumber.hexString.lowercased()
            id = DeviceID.named(by: certificate.subject).flatMap { try? DeviceID($0) }
        case .none: break
        }
        let device = try? await id.asyncMap { try await store.device($0) } ?? nil
        let alarming = [DeviceState.stolen, .revoked, .suspended].contains(device?.state) || error.message.contains("revoked")
        guard alarming else { return }
        securityEvents.record(
            kind: SecurityEventLog.enrollmentRefused, device: id?.rawValue, serial: serial, address: address,
            detail: error.message + (device.map { " (device is \($0.state))" } ?? ""))
    }

    private func enrollChecked(_ csr: CertificateRequest, with credential: Credential, renewal: Bool, from address: String?)
        async throws -> Outcome
    {
        let proof: Proof
        switch credential {
        case .certificate(let certificate, let der, let intermediates):
            proof = try await certificateProof(certificate, der: der, intermediates: CertificateStore(intermediates), renewal: renewal)
        case .password where renewal, .none where renewal:
            throw AuthorityError(.unauthenticated, "simplereenroll needs the current certificate as the TLS client certificate")
        case .password(let user, let password):
            proof = try await passwordProof(user: user, password: password, from: address)
        case .none:
            throw AuthorityError(
                .unauthenticated, "authenticate with HTTP Basic (device ID and secret or token) or a client certificate")
        }
        if let fingerprint = proof.requiredKeySHA256, csr.subjectPublicKeySHA256 != fingerprint {
            recordFailure(proof.device.id, from: address)
            throw AuthorityError(.unauthenticated, "the CSR's key is not the key registered for this device")
        }
        if let group = proof.group {
            switch EnrollmentRules.admission(into: group, of: proof.device.id, stored: try await store.device(proof.device.id)) {
            case .refuse(let reason):
                throw AuthorityError(.forbidden, reason)
            case .pending:
                return .pending(retryAfter: pendingRetryAfter)
            case .register(pending: true):
                var pending = proof.device
                pending.state = .pending
                try? await registrar.register(pending, by: Self.actor(proof), at: now())
                return .pending(retryAfter: pendingRetryAfter)
            case .register(pending: false), .enroll:
                break
            }
        }
        let identity = CertificateIdentity.device(proof.device.id)
        do {
            try csr.requireSubject(matching: identity)
        } catch let error as PKIError {
            throw AuthorityError(.invalidRequest, error.description, underlying: error)
        }
        let issued = try authority.issue(csr, profile: .device, identity: identity, lifetime: deviceLifetime, now: now())
        let time = now()
        let record = EnrollmentRecord(
            device: proof.device, registerIfMissing: proof.registerIfMissing, acceptedStates: proof.acceptedStates,
            bindOwner: proof.bindOwner,
            certificate: CertificateRecord(
                serial: issued.serialNumber.hexString, deviceID: proof.device.id, profile: issued.profile.rawValue, owner: nil,
                notBefore: issued.notValidBefore, notAfter: issued.notValidAfter, sha256: issued.sha256Fingerprint, issuedAt: time),
            method: proof.method, tokenHMAC: proof.tokenHMAC, group: proof.group?.id)
        _ = try await batcher.enroll(record, by: Self.actor(proof))
        throttle.recordSuccess(device: proof.device.id.rawValue)
        return .issued(issued)
    }

    static func actor(_ proof: Proof) -> Actor {
        Actor(role: .operator, name: "est:\(proof.method):\(proof.device.id)", owner: nil)
    }

    /// A device ID and its factory secret, a one-time enrollment token, or (for a device
    /// registered by key fingerprint) an empty password.
    private func passwordProof(user: String, password: String, from address: String?) async throws -> Proof {
        guard let id = try? DeviceID(user) else {
            throw AuthorityError(.unauthenticated, "the user name is not a device ID")
        }
        let time = now()
        if let wait = throttle.retryAfter(device: id.rawValue, address: address, now: time) {
            throw AuthorityError(.tooManyRequests, "too many failed attempts; try again later", retryAfter: wait)
        }
        let refused = AuthorityError(.unauthenticated, "device \(id) did not prove itself")
        guard let device = try await store.device(id) else {
            recordFailure(id, from: address)
            throw refused
        }
        if password.hasPrefix("fwe_") {
            let hmac = hasher.hash(Array(password.utf8))
            guard let token = try await registrar.usableEnrollmentToken(secretHMAC: hmac, for: id, at: time) else {
                recordFailure(id, from: address)
                throw refused
            }
            // Spent in the enrollment's own transaction: a refused enrollment leaves it unused.
            return Proof(device: device, acceptedStates: [.allowed, .active], bindOwner: token.owner, method: "token", tokenHMAC: hmac)
        }
        switch device.proof {
        case .secret(let stored) where !password.isEmpty:
            guard hasher.matches(Array(password.utf8), stored: stored) else { break }
            return Proof(device: device, acceptedStates: [.allowed], method: "secret")
        case .publicKey(let fingerprint) where password.isEmpty:
            return Proof(device: device, acceptedStates: [.allowed], method: "public-key", requiredKeySHA256: fingerprint)
        default:
            break
        }
        recordFailure(id, from: address)
        throw refused
    }

    private func recordFailure(_ id: DeviceID, from address: String?) {
        throttle.recordFailure(device: id.rawValue, address: address, now: now())
    }

    /// A birth certificate (factory CA), a certificate under a registered enrollment group, or,
    /// to renew, the device's current operational certificate.
    private func certificateProof(
        _ certificate: Certificate, der: [UInt8], intermediates: CertificateStore, renewal: Bool
    ) async throws -> Proof {
        let summary = try CertificateSummary(certificate: certificate, der: der)
        let time = now()
        if await Self.verify(certificate, under: issuing, at: time) {
            guard summary.profile == CertificateProfile.device.rawValue, let id = summary.deviceID.flatMap({ try? DeviceID($0) }) else {
                throw AuthorityError(.forbidden, "this certificate is not an operational device certificate")
            }
            guard renewal else { throw AuthorityError(.forbidden, "an operational certificate renews with simplereenroll") }
            // The same checks as the gateway's: this very certificate (serial and fingerprint) is
            // on record for this device and not revoked.
            let serial = summary.serialNumber.lowercased()
            guard let record = try await store.certificate(serial: serial), record.deviceID == id,
                record.sha256.lowercased() == summary.sha256Fingerprint.lowercased()
            else {
                throw AuthorityError(.forbidden, "certificate \(summary.serialNumber) is not on record for device \(id)")
            }
            guard record.revocation == nil else { throw AuthorityError(.forbidden, "certificate \(summary.serialNumber) is revoked") }
            guard let device = try await store.device(id) else { throw AuthorityError(.forbidden, "device \(id) is not registered") }
            return Proof(device: device, acceptedStates: [.active], method: "reenroll")
        }
        guard !renewal else {
            throw AuthorityError(.forbidden, "simplereenroll needs the device's current operational certificate")
        }
        if await Self.verify(certificate, under: factory, at: time) {
            guard summary.profile == CertificateProfile.birth.rawValue, let id = summary.deviceID.flatMap({ try? DeviceID($0) }) else {
                throw AuthorityError(.forbidden, "this factory certificate is not a birth certificate")
            }
            try await requireUnrevoked(summary)
            let template = Device(id: id, model: "unknown", proof: .none, createdAt: time)
            let stored = try await store.device(id)
            return Proof(device: stored ?? template, registerIfMissing: true, acceptedStates: [.allowed, .active], method: "birth")
        }
        for group in try await store.enrollmentGroups() {
            guard let ca = try? Certificate(derEncoded: group.caCertificateDER),
                await Self.verify(certificate, under: ca, intermediates: intermediates, at: time)
            else {
                continue
            }
            guard let id = DeviceID.named(by: certificate.subject).flatMap({ try? DeviceID($0) }) else {
                throw AuthorityError(.forbidden, "the certificate names no device ID (subject serialNumber or commonName)")
            }
            let stored = try await store.device(id)
            let template = Device(
                id: id, model: group.name, metadata: ["group": group.id], proof: .none, createdAt: time, group: group.id,
                registeredBy: "group:\(group.id)")
            return Proof(
                device: stored ?? template, registerIfMissing: true, acceptedStates: [.allowed, .active], method: "group", group: group)
        }
        throw AuthorityError(.forbidden, "the client certificate is not from the factory CA or a registered enrollment group")
    }

    private func requireUnrevoked(_ summary: CertificateSummary) async throws {
        if let record = try await store.certificate(serial: summary.serialNumber.lowercased()), record.revocation != nil {
            throw AuthorityError(.forbidden, "certificate \(summary.serialNumber) is revoked")
        }
    }

    /// Whether `certificate` chains to `ca` (directly, or through `intermediates` for a
    /// manufacturer's group) and is within its validity at `time`.
    static func verify(
        _ certificate: Certificate, under ca: Certificate, intermediates: CertificateStore = CertificateStore(), at time: Date
    ) async -> Bool {
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) { RFC5280Policy(validationTime: time) }
        let result = await verifier.validate(leafCertificate: certificate, intermediates: intermediates)
        if case .validCertificate = result { return true }
        return false
    }

    /// The path from the presented leaf through the presented intermediates to one of Fleetward's
    /// anchors (issuing CA, factory CA, each registered group's CA), valid now; nil when there is
    /// none. A TLS listener keeps it as the connection's validated chain, so a manufacturer's
    /// device can send its intermediates.
    public func validatedPath(_ presented: [Certificate]) async -> [Certificate]? {
        guard presented.count > 1, presented.count <= 8 else { return nil }
        var anchors = [issuing, factory]
        for group in (try? await store.enrollmentGroups()) ?? [] {
            if let ca = try? Certificate(derEncoded: group.caCertificateDER) { anchors.append(ca) }
        }
        let time = now()
        var verifier = Verifier(rootCertificates: CertificateStore(anchors)) { RFC5280Policy(validationTime: time) }
        guard
            case .validCertificate(let path) = await verifier.validate(
                leafCertificate: presented[0], intermediates: CertificateStore(presented.dropFirst()))
        else { return nil }
        return path
    }
}
