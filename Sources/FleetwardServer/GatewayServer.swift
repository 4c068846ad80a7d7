public import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
public import NIOCore
import NIOSSL

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
    public static func application(
        _ gateway: Gateway, address: ListenAddress, certificateChainPEM: [UInt8], privateKeyPKCS8: [UInt8], allowTLS12: Bool = false,
        logger: Logger, onListening: @escaping @Sendable (ListenAddress) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        var tls = try TLSListener.configuration(certificateChainPEM: certificateChainPEM, privateKeyPKCS8: privateKeyPKCS8)
        tls.minimumTLSVersion = allowTLS12 ? .tlsv12 : .tlsv13
        // A certificate is required; the callback replaces chain verification entirely.
        tls.certificateVerification = .noHostnameVerification
        return try TLSListener.application(
            router: router(gateway), tls: tls, address: address, logger: logger, onListening: onListening
        ) { presented, channel, promise in
            gateway.verify(presented, channel: channel, promise: promise)
        }
    }

    static func router(_ gateway: Gateway) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        let v1 = router.group("v1")
        v1.get("whoami") { _, context in
            guard let identity = gateway.identity(of: context.channel) else {
                throw APIProblem(.unauthorized, "this connection proved no device")
            }
            return JSONResponse.make(identity)
        }
        return router
    }
}
