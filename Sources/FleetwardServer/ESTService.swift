public import FleetwardAuthority
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SwiftASN1
import X509

/// Enrollment over Secure Transport (RFC 7030): `cacerts`, `simpleenroll`, `simplereenroll` and
/// `csrattrs` under `/.well-known/est/`, for the four provisioning flows (DESIGN.md).
///
/// A device proves who it is with HTTP Basic (device ID and factory secret, or device ID and a
/// one-time enrollment token), with the key whose fingerprint was registered (Basic with the
/// device ID and an empty password; the CSR's signature proves the key), or with a TLS client
/// certificate: a birth certificate from the factory CA, a certificate under a registered
/// enrollment group's CA, or (for `simplereenroll`) its current operational certificate. The CSR
/// never picks the identity: its subject must name the proven device or nothing.
public struct ESTService: Sendable {
    public static let bodyLimit = 64 * 1024
    public static let prefix = "/.well-known/est"
    /// ``prefix`` as path segments, to match a request's against.
    static let prefixSegments = prefix.split(separator: "/")

    /// CsrAttrs ::= SEQUENCE OF AttrOrOID (RFC 7030 §4.5.2), base64: ecdsa-with-SHA256 and the
    /// serialNumber attribute that names the device. The same for every request.
    static let csrAttributes = ByteBuffer(
        string: Data([
            0x30, 0x0F, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02, 0x06, 0x03, 0x55, 0x04, 0x05,
        ]).base64EncodedString() + "\n")

    public let authority: CertificateAuthority
    public let store: any RegistryStore
    public let hasher: SecretHasher
    /// Enrollments are written by group commit.
    let batcher: EnrollmentBatcher
    /// Failed proofs per device and per address before 429.
    public var limiter = AttemptLimiter(.init(maximumFailures: 10, window: 900))
    /// Seconds a pending device is told to wait (Retry-After on 202).
    public var retryAfter = 300
    /// How long operational certificates last (nil: the device profile's default, 30 days).
    public var deviceLifetime: TimeInterval?
    public var now: @Sendable () -> Date = Date.init

    let rootDER: [UInt8]
    let issuingDER: [UInt8]
    /// The `cacerts` answer: the same for every request.
    let cacertsBody: ByteBuffer
    let factory: Certificate
    let issuing: Certificate

    public init(authority: CertificateAuthority, store: any RegistryStore, hasher: SecretHasher) {
        self.authority = authority
        self.store = store
        self.hasher = hasher
        batcher = EnrollmentBatcher(store: store)
        rootDER = authority.hierarchy.member(.root).der
        issuingDER = authority.hierarchy.member(.issuing).der
        cacertsBody = ByteBuffer(bytes: CertsOnlyPKCS7.base64Bytes([rootDER, issuingDER]))
        factory = authority.hierarchy.member(.factory).certificate
        issuing = authority.hierarchy.member(.issuing).certificate
    }

    /// Answers one request: the four operations under ``prefix``; every refusal as text/plain.
    func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer {
        do {
            return try await route(request)
        } catch let problem as ESTProblem {
            return problem.answer
        } catch {
            let api = APIProblem.from(error)
            if api.status.code >= 500 {
                request.logger.error(
                    "EST request failed", metadata: ["http.path": "\(request.path)", "error": "\(String(describing: error).prefix(300))"])
            }
            return ESTProblem(api.status, api.message).answer
        }
    }

    private func route(_ request: DeviceHTTPRequest) async throws -> DeviceHTTPAnswer {
        let segments = request.pathSegments
        guard segments.count == Self.prefixSegments.count + 1, segments.starts(with: Self.prefixSegments) else {
            throw ESTProblem(.notFound, "no such resource; EST is under \(Self.prefix)/")
        }
        let method = request.head.method
        switch segments[Self.prefixSegments.count] {
        case "cacerts":
            try Self.require(method, .GET, "cacerts")
            return Self.pkcs7Answer(cacertsBody)
        case "csrattrs":
            try Self.require(method, .GET, "csrattrs")
            return .complete(
                .ok, headers: ["Content-Type": "application/csrattrs", "Content-Transfer-Encoding": "base64"],
                body: Self.csrAttributes)
        case "simpleenroll":
            try Self.require(method, .POST, "simpleenroll")
            return try await enroll(request, renewal: false)
        case "simplereenroll":
            try Self.require(method, .POST, "simplereenroll")
            return try await enroll(request, renewal: true)
        default:
            throw ESTProblem(.notFound, "no such EST operation; there are cacerts, csrattrs, simpleenroll and simplereenroll")
        }
    }

    /// 405 unless `method` is `allowed` (or HEAD for GET).
    private static func require(_ method: HTTPMethod, _ allowed: HTTPMethod, _ operation: String) throws {
        guard method == allowed || (allowed == .GET && method == .HEAD) else {
            var problem = ESTProblem(.methodNotAllowed, "\(operation) takes \(allowed.rawValue)")
            problem.allow = allowed == .GET ? "GET, HEAD" : allowed.rawValue
            throw problem
        }
    }

    // MARK: Enrollment

    /// Who the device proved to be, and what the registry must check.
    struct Proof {
        var device: Device
        var registerIfMissing = false
        var acceptedStates: Set<DeviceState>
        var bindOwner: String?
        var method: String
        /// For a group whose devices wait for approval.
        var pendingGroup = false
        /// The key fingerprint the CSR must carry (public-key proof).
        var requiredKeySHA256: [UInt8]?
        /// The enrollment token to spend with the enrollment.
        var tokenHMAC: [UInt8]?
    }

    private func enroll(_ request: DeviceHTTPRequest, renewal: Bool) async throws -> DeviceHTTPAnswer {
        let csr = try readCSR(request)
        // HTTP Basic on simpleenroll takes precedence; only without it is the TLS client
        // certificate asked for (a hop onto the channel's event loop).
        let hasBasic = !renewal && (request.header("authorization").map(Self.isBasic) ?? false)
        // The certificate and, when the handshake found a path to one of our anchors through the
        // certificates the client sent, that path (ESTTLSChannel): one hop onto the channel's loop.
        let channel = request.channel
        let (clientCertificate, chain) =
            hasBasic
            ? (nil, nil)
            : try await channel.eventLoop.submit {
                let tls = channel.pipeline.syncOperations
                return (try tls.nioSSL_peerCertificate(), try tls.nioSSL_peerValidatedCertificateChain())
            }.get()
        let proof: Proof
        if let clientCertificate {
            let der = try clientCertificate.toDERBytes()
            let intermediates = try chain.map { chain in try chain.dropFirst().map { try Certificate(derEncoded: $0.toDERBytes()) } } ?? []
            proof = try await certificateProof(
                try Certificate(derEncoded: der), der: der, intermediates: CertificateStore(intermediates), renewal: renewal)
        } else if renewal {
            throw ESTProblem(.unauthorized, "simplereenroll needs the current certificate as the TLS client certificate", basic: false)
        } else {
            proof = try await basicProof(request, csr: csr)
        }
        if let fingerprint = proof.requiredKeySHA256 {
            guard csr.subjectPublicKeySHA256 == fingerprint else {
                recordFailure(proof.device.id, request)
                throw ESTProblem(.unauthorized, "the CSR's key is not the key registered for this device", basic: true)
            }
        }
        if proof.pendingGroup {
            let stored = try await store.device(proof.device.id)
            if stored == nil {
                var pending = proof.device
                pending.state = .pending
                try? await store.insert(pending, by: Self.actor(proof), at: now())
            }
            if stored == nil || stored?.state == .pending {
                return .complete(.accepted, headers: ["Retry-After": "\(retryAfter)"], body: ByteBuffer())
            }
        }
        let identity = CertificateIdentity.device(proof.device.id)
        do {
            try csr.requireSubject(matching: identity)
        } catch let error as PKIError {
            throw ESTProblem(.badRequest, error.description)
        }
        let issued = try authority.issue(csr, profile: .device, identity: identity, lifetime: deviceLifetime, now: now())
        let time = now()
        let record = EnrollmentRecord(
            device: proof.device, registerIfMissing: proof.registerIfMissing, acceptedStates: proof.acceptedStates,
            bindOwner: proof.bindOwner,
            certificate: CertificateRecord(
                serial: issued.serialNumber.hexString, deviceID: proof.device.id, profile: issued.profile.rawValue, owner: nil,
                notBefore: issued.notValidBefore, notAfter: issued.notValidAfter, sha256: issued.sha256Fingerprint, issuedAt: time),
            method: proof.method, tokenHMAC: proof.tokenHMAC)
        do {
            _ = try await batcher.enroll(record, by: Self.actor(proof))
        } catch let error as RegistryError where error.code == .forbidden || error.code == .notFound || error.code == .duplicate {
            throw ESTProblem(.forbidden, error.message)
        }
        if !limiter.isEmpty { limiter.reset("est-device:\(proof.device.id)") }
        return Self.pkcs7Answer(ByteBuffer(bytes: CertsOnlyPKCS7.base64Bytes([issued.der])))
    }

    static func actor(_ proof: Proof) -> Actor {
        Actor(role: .operator, name: "est:\(proof.method):\(proof.device.id)", owner: nil)
    }

    /// Reads the base64 PKCS#10 body (RFC 7030 §4.2.1): `application/pkcs10`, whitespace ignored.
    private func readCSR(_ request: DeviceHTTPRequest) throws -> CertificateRequest {
        guard let type = request.header("content-type"), Self.hasPrefix(type, ignoringCase: "application/pkcs10") else {
            throw ESTProblem(.unsupportedMediaType, "send the CSR as application/pkcs10 (base64 DER)")
        }
        let buffer = request.body
        guard buffer.readableBytes <= Self.bodyLimit else {
            throw ESTProblem(.contentTooLarge, "the request body is too large (at most \(Self.bodyLimit) bytes)")
        }
        // Base64 with line breaks, decoded straight from the body's bytes.
        guard let der = Base64.decode(buffer.readableBytesView, skippingWhitespace: true), !der.isEmpty else {
            throw ESTProblem(.badRequest, "the body is not base64")
        }
        do {
            return try CertificateRequest(bytes: der)
        } catch let error as PKIError {
            throw ESTProblem(.badRequest, error.description)
        }
    }

    /// HTTP Basic: device ID and factory secret, one-time enrollment token, or (for a device
    /// registered by key fingerprint) an empty password.
    private func basicProof(_ request: DeviceHTTPRequest, csr: CertificateRequest) async throws -> Proof {
        guard let header = request.header("authorization"), let (user, password) = Self.basicCredentials(header) else {
            throw ESTProblem(
                .unauthorized, "authenticate with HTTP Basic (device ID and secret or token) or a client certificate", basic: true)
        }
        guard let id = try? DeviceID(user) else {
            throw ESTProblem(.unauthorized, "the user name is not a device ID", basic: true)
        }
        let time = now()
        if !limiter.isEmpty {
            for key in ["est-device:\(id)", "est-address:\(request.remoteIP ?? "local")"] {
                if let wait = limiter.retryAfter(key, now: time) {
                    throw ESTProblem(.tooManyRequests, "too many failed attempts; try again later", retryAfter: wait)
                }
            }
        }
        guard let device = try await store.device(id) else {
            recordFailure(id, request)
            throw ESTProblem(.unauthorized, "device \(id) did not prove itself", basic: true)
        }
        if password.hasPrefix("fwe_") {
            let hmac = hasher.hash(Array(password.utf8))
            guard let token = try await store.enrollmentToken(secretHMAC: hmac, for: id, at: time) else {
                recordFailure(id, request)
                throw ESTProblem(.unauthorized, "device \(id) did not prove itself", basic: true)
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
        recordFailure(id, request)
        throw ESTProblem(.unauthorized, "device \(id) did not prove itself", basic: true)
    }

    /// Whether `header` names the Basic scheme (RFC 7617; the scheme is case-insensitive).
    static func isBasic(_ header: String) -> Bool { hasPrefix(header, ignoringCase: "basic ") }

    /// Whether `text` starts with `prefix` (lower-case ASCII), ASCII letters compared without case.
    static func hasPrefix(_ text: String, ignoringCase prefix: StaticString) -> Bool {
        let wanted = UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
        var characters = text.utf8.makeIterator()
        for expected in wanted {
            guard var byte = characters.next() else { return false }
            if (0x41...0x5A).contains(byte) { byte |= 0x20 }
            guard byte == expected else { return false }
        }
        return true
    }

    /// The user name and password of a Basic `Authorization` header, or nil when it is not one:
    /// base64 of UTF-8 `user:password`, the user name without a colon (RFC 7617 §2).
    static func basicCredentials(_ header: String) -> (user: String, password: String)? {
        guard header.utf8.count < 1024, isBasic(header) else { return nil }
        var token = header.utf8.dropFirst(6)
        while token.first == 0x20 || token.first == 0x09 { token = token.dropFirst() }
        while token.last == 0x20 || token.last == 0x09 { token = token.dropLast() }
        guard let decoded = Base64.decode(token), let colon = decoded.firstIndex(of: 0x3A),
            let user = String(validating: decoded[..<colon], as: UTF8.self),
            let password = String(validating: decoded[(colon + 1)...], as: UTF8.self)
        else { return nil }
        return (user, password)
    }

    private func recordFailure(_ id: DeviceID, _ request: DeviceHTTPRequest) {
        let time = now()
        limiter.recordFailure("est-device:\(id)", now: time)
        limiter.recordFailure("est-address:\(request.remoteIP ?? "local")", now: time)
    }

    /// A TLS client certificate: a birth certificate (factory CA), a certificate under a registered
    /// enrollment group, or, for re-enrollment, the device's current operational certificate.
    private func certificateProof(
        _ certificate: Certificate, der: [UInt8], intermediates: CertificateStore, renewal: Bool
    ) async throws -> Proof {
        let summary = try CertificateSummary(certificate: certificate, der: der)
        let time = now()
        if try await Self.verify(certificate, under: issuing, at: time) {
            guard summary.profile == CertificateProfile.device.rawValue, let id = summary.deviceID.flatMap({ try? DeviceID($0) }) else {
                throw ESTProblem(.forbidden, "this certificate is not an operational device certificate")
            }
            guard renewal else { throw ESTProblem(.forbidden, "an operational certificate renews with simplereenroll") }
            try await requireUnrevoked(summary)
            guard let device = try await store.device(id) else { throw ESTProblem(.forbidden, "device \(id) is not registered") }
            return Proof(device: device, acceptedStates: [.active], method: "reenroll")
        }
        guard !renewal else {
            throw ESTProblem(.forbidden, "simplereenroll needs the device's current operational certificate")
        }
        if try await Self.verify(certificate, under: factory, at: time) {
            guard summary.profile == CertificateProfile.birth.rawValue, let id = summary.deviceID.flatMap({ try? DeviceID($0) }) else {
                throw ESTProblem(.forbidden, "this factory certificate is not a birth certificate")
            }
            try await requireUnrevoked(summary)
            let template = Device(id: id, model: "unknown", proof: .none, createdAt: time)
            let stored = try await store.device(id)
            return Proof(device: stored ?? template, registerIfMissing: true, acceptedStates: [.allowed, .active], method: "birth")
        }
        for group in try await store.enrollmentGroups() {
            guard let ca = try? Certificate(derEncoded: group.caCertificateDER),
                try await Self.verify(certificate, under: ca, intermediates: intermediates, at: time)
            else {
                continue
            }
            guard let id = Self.groupDeviceID(certificate) else {
                throw ESTProblem(.forbidden, "the certificate names no device ID (subject serialNumber or commonName)")
            }
            let stored = try await store.device(id)
            let template = Device(id: id, model: group.name, metadata: ["group": group.id], proof: .none, createdAt: time)
            return Proof(
                device: stored ?? template, registerIfMissing: true, acceptedStates: [.allowed, .active], method: "group",
                pendingGroup: !group.autoApprove)
        }
        throw ESTProblem(.forbidden, "the client certificate is not from the factory CA or a registered enrollment group")
    }

    private func requireUnrevoked(_ summary: CertificateSummary) async throws {
        if let record = try await store.certificate(serial: summary.serialNumber.lowercased()), record.revocation != nil {
            throw ESTProblem(.forbidden, "certificate \(summary.serialNumber) is revoked")
        }
    }

    /// Whether `certificate` chains to `ca` (directly, or through `intermediates` for a
    /// manufacturer's group) and is within its validity at `time`.
    static func verify(
        _ certificate: Certificate, under ca: Certificate, intermediates: CertificateStore = CertificateStore(), at time: Date
    ) async throws -> Bool {
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) { RFC5280Policy(validationTime: time) }
        let result = await verifier.validate(leafCertificate: certificate, intermediates: intermediates)
        if case .validCertificate = result { return true }
        return false
    }

    /// The path from the presented leaf through the presented intermediates to one of Fleetward's
    /// anchors (issuing CA, factory CA, each registered group's CA), valid now; nil when there is none.
    func validatedChain(_ presented: [NIOSSLCertificate]) async -> [NIOSSLCertificate]? {
        guard presented.count > 1, presented.count <= 8,
            let certificates = try? presented.map({ try Certificate(derEncoded: $0.toDERBytes()) })
        else { return nil }
        var anchors = [issuing, factory]
        for group in (try? await store.enrollmentGroups()) ?? [] {
            if let ca = try? Certificate(derEncoded: group.caCertificateDER) { anchors.append(ca) }
        }
        let time = now()
        var verifier = Verifier(rootCertificates: CertificateStore(anchors)) { RFC5280Policy(validationTime: time) }
        guard
            case .validCertificate(let path) = await verifier.validate(
                leafCertificate: certificates[0], intermediates: CertificateStore(certificates.dropFirst()))
        else { return nil }
        return try? path.map { certificate in
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            return try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
        }
    }

    /// The device ID a manufacturer's certificate names: subject serialNumber, else commonName.
    static func groupDeviceID(_ certificate: Certificate) -> DeviceID? {
        DeviceID.named(by: certificate.subject).flatMap { try? DeviceID($0) }
    }

    /// A certs-only PKCS#7, base64 (RFC 7030 §4.1.3, §4.2.3).
    static func pkcs7Answer(_ base64: ByteBuffer) -> DeviceHTTPAnswer {
        .complete(
            .ok, headers: ["Content-Type": "application/pkcs7-mime; smime-type=certs-only", "Content-Transfer-Encoding": "base64"],
            body: base64)
    }
}

extension ESTService: DeviceHTTPResponder {}

/// An EST refusal: a status and one sentence, as text/plain (RFC 7030 §4.2.3 leaves the body
/// free); 401s carry `WWW-Authenticate: Basic` when a password would do.
struct ESTProblem: Error, CustomStringConvertible {
    var status: HTTPResponse.Status
    var message: String
    var basic = false
    var retryAfter: Int?
    /// The methods a 405 names.
    var allow: String?

    init(_ status: HTTPResponse.Status, _ message: String, basic: Bool = false, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.basic = basic
        self.retryAfter = retryAfter
    }

    var description: String { "\(status.code) \(message)" }

    var answer: DeviceHTTPAnswer {
        var headers: HTTPHeaders = ["Content-Type": "text/plain; charset=utf-8"]
        if basic { headers.add(name: "WWW-Authenticate", value: "Basic realm=\"fleetward-est\"") }
        if let retryAfter { headers.add(name: "Retry-After", value: "\(retryAfter)") }
        if let allow { headers.add(name: "Allow", value: allow) }
        return .complete(
            HTTPResponseStatus(statusCode: status.code, reasonPhrase: status.reasonPhrase), headers: headers,
            body: ByteBuffer(string: message + "\n"))
    }
}
