public import FleetwardAuthority
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import Hummingbird
import NIOCore
import Synchronization
import X509

/// The OCSP responder (RFC 6960) for the issuing and factory CAs: `good`, `revoked` (with time
/// and reason) or `unknown` for each certificate asked about, straight from the registry, signed
/// by a delegated responder certificate (profile `ocsp`, with id-pkix-ocsp-nocheck) that each CA
/// issues to a key made in memory when the server starts and re-issues before it expires.
public final class OCSPService: Sendable {
    /// How long an answer may be cached (nextUpdate − thisUpdate).
    public static let validity: TimeInterval = 3600
    /// A responder certificate is replaced when it has less than this left.
    static let renewBefore: TimeInterval = 7 * 86_400

    struct Delegate: Sendable {
        var role: CARole
        var ca: Certificate
        var responder: OCSPResponder
    }

    let authority: CertificateAuthority
    let registrar: Registrar
    let now: @Sendable () -> Date
    private let delegates = Mutex<[CARole: Delegate]>([:])

    public init(authority: CertificateAuthority, registrar: Registrar, now: @escaping @Sendable () -> Date = Date.init) {
        self.authority = authority
        self.registrar = registrar
        self.now = now
    }

    /// The responder for `role`'s CA, issuing a new one when there is none or it is near expiry.
    func delegate(_ role: CARole) async throws -> Delegate {
        let time = now()
        if let current = delegates.withLock({ $0[role] }),
            current.responder.certificate.notValidAfter.timeIntervalSince(time) > Self.renewBefore
        {
            return current
        }
        let key = SigningKey(generating: .p256)
        let issuer = try authority.issuer(for: role)
        var rng = SystemRandomNumberGenerator()
        let issued = try issuer.issue(publicKey: key.publicKey, profile: .ocsp, identity: .ocspResponder, now: time, using: &rng)
        try await registrar.recordCertificates(
            [CertificateRecord(
                serial: issued.serialNumber.hexString, deviceID: nil, profile: CertificateProfile.ocsp.rawValue, owner: nil,
                notBefore: issued.notValidBefore, notAfter: issued.notValidAfter, sha256: issued.sha256Fingerprint, issuedAt: time)],
            by: Actor(role: .admin, name: "ocsp-responder"), at: time)
        let made = Delegate(role: role, ca: issuer.caCertificate, responder: try OCSPResponder(certificateDER: issued.der, key: key))
        delegates.withLock { $0[role] = made }
        return made
    }

    /// The DER OCSPResponse to the DER OCSPRequest `der`; never throws: failures are OCSP statuses.
    public func answer(_ der: [UInt8]) async -> [UInt8] {
        let request: OCSP.Request
        do {
            request = try OCSP.parseRequest(der)
        } catch {
            return OCSP.errorResponse(.malformedRequest)
        }
        do {
            // One response is signed by one CA's responder: every certificate asked about must be
            // from the same CA, and it must be one of ours.
            var chosen: Delegate?
            for role in [CARole.issuing, .factory] {
                let ca = authority.hierarchy.member(role).certificate
                if request.certIDs.allSatisfy({ $0.isIssued(by: ca) }) {
                    chosen = try await delegate(role)
                    break
                }
            }
            guard let delegate = chosen else { return OCSP.errorResponse(.unauthorized) }
            let time = now()
            var singles: [OCSP.SingleResponse] = []
            for certID in request.certIDs {
                let status: OCSP.CertStatus
                if let record = try await registrar.store.certificate(serial: certID.serialHex),
                    let profile = CertificateProfile(rawValue: record.profile), profile.allowedIssuers.contains(delegate.role)
                {
                    if let revocation = record.revocation {
                        status = .revoked(time: revocation.time, reason: revocation.reason)
                    } else if let id = record.deviceID, let device = try await registrar.store.device(id), device.state == .suspended {
                        // On hold while its device is suspended (RFC 6960 §2.2, RFC 5280 §5.3.1).
                        status = .revoked(time: device.updatedAt, reason: RevocationReason.certificateHold.rawValue)
                    } else {
                        status = .good
                    }
                } else {
                    status = .unknown
                }
                singles.append(
                    OCSP.SingleResponse(
                        certID: certID, status: status, thisUpdate: time, nextUpdate: time.addingTimeInterval(Self.validity)))
            }
            return try delegate.responder.response(singles, nonceExtension: request.nonceExtension, producedAt: time)
        } catch {
            return OCSP.errorResponse(.internalError)
        }
    }
}

/// `POST /ocsp` (body `application/ocsp-request`) and `GET /ocsp/{url-encoded base64}` (RFC 6960
/// Appendix A). Every answer is 200 `application/ocsp-response`; a bad request is an OCSP
/// `malformedRequest`, never an HTTP error page.
enum OCSPRoutes {
    static func add(to router: Router<APIRequestContext>, _ ocsp: OCSPService, metrics: FleetMetrics) {
        router.post("ocsp") { request, _ in
            metrics.ocspRequest()
            guard request.headers[.contentType]?.lowercased().hasPrefix("application/ocsp-request") == true else {
                return respond(OCSP.errorResponse(.malformedRequest))
            }
            var request = request
            guard let body = try? await request.collectBody(upTo: OCSP.maximumRequestBytes) else {
                return respond(OCSP.errorResponse(.malformedRequest))
            }
            return respond(await ocsp.answer(Array(body.readableBytesView)))
        }
        router.get("ocsp/**") { request, _ in
            metrics.ocspRequest()
            let encoded = String(request.uri.path.dropFirst("/ocsp/".count))
            guard encoded.utf8.count <= OCSP.maximumRequestBytes * 2, let text = encoded.removingPercentEncoding,
                let der = Data(base64Encoded: text)
            else {
                return respond(OCSP.errorResponse(.malformedRequest))
            }
            return respond(await ocsp.answer(Array(der)))
        }
    }

    static func respond(_ der: [UInt8]) -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/ocsp-response"], body: .init(byteBuffer: ByteBuffer(bytes: der)))
    }
}
