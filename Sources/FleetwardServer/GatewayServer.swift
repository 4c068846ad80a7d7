import Foundation
import Crypto
import FleetwardAuthority
import FleetwardDevice
import FleetwardPKI
import FleetwardRegistry
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
public import ServiceLifecycle
public import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS
import SwiftASN1
import X509

/// The request context on the gateway: the channel, whose handshake proved the device.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    public var maxUploadSize: Int { GatewayServer.bodyLimit }
}

/// The device gateway listener: TLS 1.3 (1.2 only when asked) with a mandatory client
/// certificate that ``Gateway`` accepts or refuses inside the handshake, then the device API.
public enum GatewayServer {
    public static let bodyLimit = 64 * 1024

    /// - Parameters:
    ///   - certificateChainPEM: the server certificate and its issuing CA, PEM.
    ///   - privateKeyPKCS8: the server key, PKCS#8 DER (held in memory only).
    ///   - allowTLS12: accept TLS 1.2 for legacy devices.
    ///   - upstream: reverse-proxy mode: every request but whoami, telemetry and updates goes there.
    ///   - updates: the releases to offer on `/v1/updates` (nil: no update routes).
    public static func application(
        _ gateway: Gateway, address: ListenAddress, certificateChainPEM: [UInt8], privateKeyPKCS8: [UInt8], allowTLS12: Bool = false,
        upstream: Upstream? = nil, updates: UpdateCatalog? = nil, limits: ListenerLimits = .gateway, logger: Logger,
        onListening: @escaping @Sendable (ListenAddress) async -> Void = { _ in }
    ) throws -> some Service {
        var tls = try TLSListener.configuration(certificateChainPEM: certificateChainPEM, privateKeyPKCS8: privateKeyPKCS8)
        tls.minimumTLSVersion = allowTLS12 ? .tlsv12 : .tlsv13
        // A certificate is required; the callback replaces chain verification entirely.
        tls.certificateVerification = .noHostnameVerification
        return try TLSListener.application(
            responder: GatewayResponder(
                gateway: gateway,
                router: RouterDeviceHTTPResponder(responder: router(gateway, upstream: upstream, updates: updates).buildResponder())),
            tls: tls, address: address, bodyLimit: bodyLimit, limits: limits,
            logger: logger,
            onListening: onListening,
            afterTLS: { _ in ResumptionGate(gateway: gateway) }
        ) { presented, channel, promise in
            gateway.verify(presented, channel: channel, promise: promise)
        }
    }

    static let whoamiPath = "/v1/whoami"
    static let telemetryPath = "/v1/telemetry"

    static func router(_ gateway: Gateway, upstream: Upstream? = nil, updates: UpdateCatalog? = nil) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        if let upstream {
            router.add(
                middleware: UpstreamProxyMiddleware(
                    gateway: gateway, upstream: upstream, localPaths: [whoamiPath, telemetryPath],
                    localPrefixes: updates == nil ? [] : [updatesPath]))
        }
        let v1 = router.group("v1")
        if let updates { addUpdateRoutes(to: v1, gateway: gateway, catalog: updates) }
        v1.get("whoami") { _, context in
            guard let identity = gateway.identity(of: context.channel) else {
                throw HTTPProblem(.unauthorized, "this connection proved no device")
            }
            return JSONResponse.make(identity)
        }
        // One JSON object per message, at most bodyLimit bytes, signed by the device key with a
        // fresh timestamp and a nonce never used before (SignedMessage), stored for the proven device.
        v1.post("telemetry") { request, context in
            guard let identity = gateway.identity(of: context.channel) else {
                throw HTTPProblem(.unauthorized, "this connection proved no device")
            }
            guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
                throw HTTPProblem(.unsupportedMediaType, "send telemetry as application/json")
            }
            var request = request
            let buffer = try await request.collectBody(upTo: bodyLimit)
            let received = Date()
            let nonce = try await TelemetrySignature.check(
                request.headers, body: buffer.readableBytesView, device: identity.device, channel: context.channel, gateway: gateway,
                now: received)
            if let wait = gateway.telemetryQuota.admit(device: identity.device, bytes: buffer.readableBytes, now: received) {
                throw HTTPProblem(
                    .tooManyRequests, "this device is over its telemetry quota; try again later", headers: [.retryAfter: "\(wait)"])
            }
            let bytes = Data(buffer.readableBytesView)
            guard (try? JSONSerialization.jsonObject(with: bytes)) is [String: Any] else {
                throw HTTPProblem(.badRequest, "telemetry is one JSON object")
            }
            do {
                try await gateway.registrar.recordTelemetry(
                    String(decoding: bytes, as: UTF8.self), from: try DeviceID(identity.device), nonce: nonce,
                    keeping: gateway.telemetryQuota.limits.keptPerDevice, at: received)
            } catch let error as RegistryError where error.code == .duplicate {
                throw HTTPProblem(.conflict, "this message was already received (its nonce was used before): a replay is refused")
            }
            return JSONResponse.make(TelemetryReceipt(device: identity.device, receivedAt: received), status: .accepted)
        }
        return router
    }
}

/// The gateway's answers: `GET /v1/whoami`, asked on every kept-alive connection, at once on the
/// event loop from the identity the handshake proved (no task, no router, no JSON encoder);
/// everything else through the router (telemetry, updates, the upstream proxy).
struct GatewayResponder<Router: DeviceHTTPResponder>: DeviceHTTPResponder {
    let gateway: Gateway
    let router: Router

    func answerNow(_ request: DeviceHTTPRequest) -> DeviceHTTPAnswer? {
        guard request.head.method == .GET || request.head.method == .HEAD, request.path == GatewayServer.whoamiPath else { return nil }
        guard let identity = gateway.identity(of: request.channel) else {
            return .complete(
                .unauthorized, headers: ["Content-Type": "application/json"],
                body: ByteBuffer(string: #"{"error":{"code":"unauthorized","message":"this connection proved no device","status":401}}"#))
        }
        return .complete(.ok, headers: ["Content-Type": "application/json"], body: identity.json)
    }

    func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer {
        await router.answer(request)
    }
}

/// Holds a connection's application data until its device is admitted.
///
/// BoringSSL resumes TLS 1.3 sessions from tickets by default (swift-nio-ssl offers no switch),
/// and a resumed handshake runs no verification callback. So when the handshake completes
/// without an identity, the certificate the session carries goes through the same checks
/// (``Gateway/admitResumed(_:)``) before a byte reaches HTTP; a device suspended, revoked or
/// stolen since its ticket was issued is disconnected there.
final class ResumptionGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        case handshaking
        case checking
        case open
    }

    /// The most a client may send before its resumed session is admitted; more closes it.
    static let heldLimit = 64 * 1024

    let gateway: Gateway
    let listener: FleetMetrics.DeviceListenerKind
    private var state = State.handshaking
    private var held: [NIOAny] = []
    private var heldBytes = 0
    private var readCompletePending = false

    init(gateway: Gateway, listener: FleetMetrics.DeviceListenerKind = .gateway) {
        self.gateway = gateway
        self.listener = listener
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls, case .handshaking = state {
            if gateway.identity(of: context.channel) != nil {
                state = .open
                context.fireUserInboundEventTriggered(event)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            } else {
                state = .checking
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                gateway.admitResumed(context.channel, listener: listener).hop(to: context.eventLoop).whenComplete { result in
                    let (gate, context) = loopBound.value
                    if case .success(true) = result {
                        gate.release(context)
                    } else {
                        gate.held.removeAll()
                        context.close(promise: nil)
                    }
                }
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .open = state {
            context.fireChannelRead(data)
        } else {
            heldBytes += unwrapInboundIn(data).readableBytes
            guard heldBytes <= Self.heldLimit else {
                held.removeAll()
                context.close(promise: nil)
                return
            }
            held.append(data)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .open = state {
            context.fireChannelReadComplete()
        } else {
            readCompletePending = true
        }
    }

    private func release(_ context: ChannelHandlerContext) {
        state = .open
        let data = held
        held.removeAll()
        for item in data { context.fireChannelRead(item) }
        if readCompletePending || !data.isEmpty { context.fireChannelReadComplete() }
        readCompletePending = false
        // Nothing left to guard: out of the way of every later read.
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Checks a telemetry message's signature (``SignedMessage``): by the key of the certificate this
/// connection proved, over this device, body, timestamp and nonce, with the timestamp within
/// ``window`` of the gateway's clock. Returns the nonce, which the store keeps unique per device.
enum TelemetrySignature {
    /// How far a message's timestamp may be from the gateway's clock, either way.
    static let window: TimeInterval = 300

    static func check(
        _ headers: HTTPFields, body: ByteBufferView, device: String, channel: any Channel, gateway: Gateway, now: Date
    ) async throws -> String {
        guard let timestampText = headers[HTTPField.Name(SignedMessage.timestampHeader)!],
            let nonce = headers[HTTPField.Name(SignedMessage.nonceHeader)!],
            let signatureText = headers[HTTPField.Name(SignedMessage.signatureHeader)!]
        else {
            throw HTTPProblem(
                .unauthorized,
                "telemetry must be signed by the device key: send \(SignedMessage.timestampHeader), \(SignedMessage.nonceHeader) and \(SignedMessage.signatureHeader)"
            )
        }
        guard let timestamp = Int64(timestampText) else {
            throw HTTPProblem(.badRequest, "\(SignedMessage.timestampHeader) must be Unix seconds")
        }
        guard abs(Double(timestamp) - now.timeIntervalSince1970) <= window else {
            throw HTTPProblem(
                .unauthorized, "the message's timestamp is more than \(Int(window)) s from the gateway's clock: stale or replayed")
        }
        guard SignedMessage.isValidNonce(nonce) else {
            throw HTTPProblem(.badRequest, "\(SignedMessage.nonceHeader) must be 16 to 64 characters of A-Z a-z 0-9 - _")
        }
        guard let signatureDER = Data(base64Encoded: signatureText),
            let signature = try? P256.Signing.ECDSASignature(derRepresentation: signatureDER)
        else {
            throw HTTPProblem(.badRequest, "\(SignedMessage.signatureHeader) must be a base64 DER ECDSA signature")
        }
        guard let key = await gateway.certificateKey(of: channel) else {
            throw HTTPProblem(.unauthorized, "this connection's certificate has no P-256 key to check the signature with")
        }
        let signed = SignedMessage.signedBytes(device: device, timestamp: timestamp, nonce: nonce, body: body)
        guard key.isValidSignature(signature, for: signed) else {
            throw HTTPProblem(.unauthorized, "the message's signature does not verify with this device's certificate")
        }
        return nonce
    }
}

struct TelemetryReceipt: Encodable {
    var device: String
    var receivedAt: Date
}
