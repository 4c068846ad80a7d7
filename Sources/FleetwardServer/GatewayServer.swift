public import Foundation
import FleetwardPKI
import FleetwardRegistry
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
public import NIOCore
import NIOSSL
import NIOTLS

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
    ///   - upstream: reverse-proxy mode: every request but whoami and telemetry goes there.
    public static func application(
        _ gateway: Gateway, address: ListenAddress, certificateChainPEM: [UInt8], privateKeyPKCS8: [UInt8], allowTLS12: Bool = false,
        upstream: Upstream? = nil, logger: Logger, onListening: @escaping @Sendable (ListenAddress) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        var tls = try TLSListener.configuration(certificateChainPEM: certificateChainPEM, privateKeyPKCS8: privateKeyPKCS8)
        tls.minimumTLSVersion = allowTLS12 ? .tlsv12 : .tlsv13
        // A certificate is required; the callback replaces chain verification entirely.
        tls.certificateVerification = .noHostnameVerification
        return try TLSListener.application(
            router: router(gateway, upstream: upstream), tls: tls, address: address, logger: logger, onListening: onListening,
            afterTLS: { _ in ResumptionGate(gateway: gateway) }
        ) { presented, channel, promise in
            gateway.verify(presented, channel: channel, promise: promise)
        }
    }

    static let whoamiPath = "/v1/whoami"
    static let telemetryPath = "/v1/telemetry"

    static func router(_ gateway: Gateway, upstream: Upstream? = nil) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        if let upstream {
            router.add(middleware: UpstreamProxyMiddleware(gateway: gateway, upstream: upstream, localPaths: [whoamiPath, telemetryPath]))
        }
        let v1 = router.group("v1")
        v1.get("whoami") { _, context in
            guard let identity = gateway.identity(of: context.channel) else {
                throw APIProblem(.unauthorized, "this connection proved no device")
            }
            return JSONResponse.make(identity)
        }
        // One JSON object per message, at most bodyLimit bytes, stored for the proven device.
        v1.post("telemetry") { request, context in
            guard let identity = gateway.identity(of: context.channel) else {
                throw APIProblem(.unauthorized, "this connection proved no device")
            }
            guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
                throw APIProblem(.unsupportedMediaType, "send telemetry as application/json")
            }
            var request = request
            let buffer = try await request.collectBody(upTo: bodyLimit)
            let bytes = Data(buffer.readableBytesView)
            guard (try? JSONSerialization.jsonObject(with: bytes)) is [String: Any] else {
                throw APIProblem(.badRequest, "telemetry is one JSON object")
            }
            let received = Date()
            try await gateway.store.insertTelemetry(
                String(decoding: bytes, as: UTF8.self), from: try DeviceID(identity.device), at: received)
            return JSONResponse.make(TelemetryReceipt(device: identity.device, receivedAt: received), status: .accepted)
        }
        return router
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

    let gateway: Gateway
    private var state = State.handshaking
    private var held: [NIOAny] = []
    private var readCompletePending = false

    init(gateway: Gateway) {
        self.gateway = gateway
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
                gateway.admitResumed(context.channel).hop(to: context.eventLoop).whenComplete { result in
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

struct TelemetryReceipt: Encodable {
    var device: String
    var receivedAt: Date
}
