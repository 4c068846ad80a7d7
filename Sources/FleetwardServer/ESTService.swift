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
/// Parse, call, render: the request's CSR and credential (HTTP Basic, or the TLS client
/// certificate and the path the handshake found) go to ``Enroller``, which decides; its outcome
/// or error comes back as a certs-only PKCS#7, a 202 with `Retry-After`, or one line of text.
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

    public let enroller: Enroller
    /// The `cacerts` answer: the same for every request.
    let cacertsBody: ByteBuffer

    /// Enrollments by flow, credential and result.
    public let metrics: FleetMetrics

    public init(enroller: Enroller, metrics: FleetMetrics = FleetMetrics()) {
        self.enroller = enroller
        self.metrics = metrics
        let hierarchy = enroller.authority.hierarchy
        cacertsBody = ByteBuffer(bytes: CertsOnlyPKCS7.base64Bytes([hierarchy.member(.root).der, hierarchy.member(.issuing).der]))
    }

    /// Answers what needs no waiting at once, on the event loop: `cacerts`, `csrattrs`, and
    /// every refusal of a path or method; nil for an enrollment.
    func answerNow(_ request: DeviceHTTPRequest) -> DeviceHTTPAnswer? {
        do {
            return try routeNow(request)
        } catch {
            return render(error, for: request)
        }
    }

    /// Answers an enrollment (`simpleenroll`, `simplereenroll`).
    func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer {
        do {
            return try await enroll(request, renewal: request.pathSegments.last == "simplereenroll")
        } catch {
            return render(error, for: request)
        }
    }

    /// Every refusal as one line of text/plain.
    private func render(_ error: any Error, for request: DeviceHTTPRequest) -> DeviceHTTPAnswer {
        var problem = HTTPProblem.from(error, path: request.path, logger: request.logger)
        // RFC 9110 §11.6.1: a 401 names the scheme that would do; a password does, except to renew.
        if problem.status == .unauthorized, request.pathSegments.last != "simplereenroll" {
            problem.headers[.wwwAuthenticate] = "Basic realm=\"fleetward-est\""
        }
        return problem.textAnswer
    }

    /// The answer when it needs no waiting; nil for an enrollment, which ``answer(_:)`` makes.
    private func routeNow(_ request: DeviceHTTPRequest) throws -> DeviceHTTPAnswer? {
        let segments = request.pathSegments
        guard segments.count == Self.prefixSegments.count + 1, segments.starts(with: Self.prefixSegments) else {
            throw HTTPProblem(.notFound, "no such resource; EST is under \(Self.prefix)/")
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
            return nil
        case "simplereenroll":
            try Self.require(method, .POST, "simplereenroll")
            return nil
        default:
            throw HTTPProblem(.notFound, "no such EST operation; there are cacerts, csrattrs, simpleenroll and simplereenroll")
        }
    }

    /// 405 unless `method` is `allowed` (or HEAD for GET).
    private static func require(_ method: HTTPMethod, _ allowed: HTTPMethod, _ operation: String) throws {
        guard method == allowed || (allowed == .GET && method == .HEAD) else {
            throw HTTPProblem(
                .methodNotAllowed, "\(operation) takes \(allowed.rawValue)", headers: [.allow: allowed == .GET ? "GET, HEAD" : allowed.rawValue])
        }
    }

    // MARK: Enrollment

    private func enroll(_ request: DeviceHTTPRequest, renewal: Bool) async throws -> DeviceHTTPAnswer {
        let flow: FleetMetrics.EnrollmentFlow = renewal ? .reenroll : .enroll
        var kind = FleetMetrics.EnrollmentCredential.none
        do {
            let csr = try readCSR(request)
            let credential = try await readCredential(request, renewal: renewal)
            switch credential {
            case .password: kind = .password
            case .certificate: kind = .certificate
            case .none: kind = .none
            }
            switch try await enroller.enroll(csr, with: credential, renewal: renewal, from: request.remoteIP) {
            case .issued(let certificate):
                metrics.enrollment(flow, kind, .issued)
                return Self.pkcs7Answer(ByteBuffer(bytes: CertsOnlyPKCS7.base64Bytes([certificate.der])))
            case .pending(let retryAfter):
                metrics.enrollment(flow, kind, .pending)
                return .complete(.accepted, headers: ["Retry-After": "\(retryAfter)"], body: ByteBuffer())
            }
        } catch {
            metrics.enrollment(flow, kind, Self.result(of: error))
            throw error
        }
    }

    /// The metrics' name for why an enrollment was refused.
    static func result(of error: any Error) -> FleetMetrics.EnrollmentResult {
        switch error {
        case let error as AuthorityError:
            switch error.code {
            case .unauthenticated: .unauthenticated
            case .forbidden, .notFound, .conflict: .forbidden
            case .invalidRequest: .invalidRequest
            case .tooManyRequests: .tooManyRequests
            case .unavailable: .unavailable
            default: .error
            }
        case is HTTPProblem: .invalidRequest
        default: .error
        }
    }

    /// HTTP Basic on `simpleenroll` takes precedence; only without it is the TLS client
    /// certificate asked for (a hop onto the channel's event loop), with the path to one of our
    /// anchors the handshake found through the certificates the client sent (``ESTServer``).
    private func readCredential(_ request: DeviceHTTPRequest, renewal: Bool) async throws -> Enroller.Credential {
        if !renewal, let header = request.header("authorization"), Self.isBasic(header) {
            return Self.basicCredentials(header).map { .password(user: $0.user, password: $0.password) } ?? .none
        }
        let channel = request.channel
        let (leaf, chain) = try await channel.eventLoop.submit {
            let tls = channel.pipeline.syncOperations
            return (try tls.nioSSL_peerCertificate(), try tls.nioSSL_peerValidatedCertificateChain())
        }.get()
        guard let leaf else { return .none }
        let der = try leaf.toDERBytes()
        let intermediates = try chain.map { chain in try chain.dropFirst().map { try Certificate(derEncoded: $0.toDERBytes()) } } ?? []
        return .certificate(try Certificate(derEncoded: der), der: der, intermediates: intermediates)
    }

    /// Reads the base64 PKCS#10 body (RFC 7030 §4.2.1): `application/pkcs10`, whitespace ignored.
    private func readCSR(_ request: DeviceHTTPRequest) throws -> CertificateRequest {
        guard let type = request.header("content-type"), Self.hasPrefix(type, ignoringCase: "application/pkcs10") else {
            throw HTTPProblem(.unsupportedMediaType, "send the CSR as application/pkcs10 (base64 DER)")
        }
        let buffer = request.body
        guard buffer.readableBytes <= Self.bodyLimit else {
            throw HTTPProblem(.contentTooLarge, "the request body is too large (at most \(Self.bodyLimit) bytes)")
        }
        // A PEM CSR (the commonest mistake) is named as such, with the command that makes the right body.
        if buffer.readableBytesView.starts(with: "-----BEGIN".utf8) {
            throw HTTPProblem(
                .badRequest, "the body is a PEM CSR: send base64 DER (openssl req -in dev.csr -outform DER | base64), not PEM")
        }
        // Base64 with line breaks, decoded straight from the body's bytes.
        guard let der = Base64.decode(buffer.readableBytesView, skippingWhitespace: true), !der.isEmpty else {
            throw HTTPProblem(.badRequest, "the body is not base64 DER of a CSR (openssl req -outform DER | base64)")
        }
        return try CertificateRequest(bytes: der)
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

    /// The path from the presented leaf through the presented intermediates to one of Fleetward's
    /// anchors, valid now, as the TLS layer keeps it; nil when there is none.
    func validatedChain(_ presented: [NIOSSLCertificate]) async -> [NIOSSLCertificate]? {
        guard presented.count > 1, presented.count <= 8,
            let certificates = try? presented.map({ try Certificate(derEncoded: $0.toDERBytes()) }),
            let path = await enroller.validatedPath(certificates)
        else { return nil }
        return try? path.map { certificate in
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            return try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
        }
    }

    /// A certs-only PKCS#7, base64 (RFC 7030 §4.1.3, §4.2.3).
    static func pkcs7Answer(_ base64: ByteBuffer) -> DeviceHTTPAnswer {
        .complete(
            .ok, headers: ["Content-Type": "application/pkcs7-mime; smime-type=certs-only", "Content-Transfer-Encoding": "base64"],
            body: base64)
    }
}

extension ESTService: DeviceHTTPResponder {}
