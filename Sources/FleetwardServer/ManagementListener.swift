import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

extension ListenerLimits {
    /// The management API: operators' tools and scripts, not devices. Idle connections close
    /// after 60 s, a request must arrive whole within 30 s of its first byte, and a connection
    /// that says nothing is closed after 10 s (Hummingbird's idle timer runs from accept).
    public static let management = ListenerLimits(
        handshakeTimeout: .seconds(10), requestTimeout: .seconds(30), idleTimeout: .seconds(60), maximumConnections: 1024,
        maximumConnectionsPerAddress: 256)
}

/// Hummingbird's HTTP/1.1 child channel with ``ListenerLimits``: past the listener's or one
/// address's share a new connection is closed at once; Hummingbird's idle timer closes a
/// connection that is silent before its first request or between requests (a partial request
/// head counts as silent: nothing has been decoded yet); ``ManagementConnectionGuard`` closes one
/// whose request, once started, is not read whole in time, and one whose answer said
/// `Connection: close`.
struct LimitedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel
    let counter: ConnectionCounter
    let limits: ListenerLimits

    init(responder: @escaping HTTPChannelHandler.Responder, limits: ListenerLimits) {
        self.limits = limits
        counter = ConnectionCounter(limits: limits)
        let requestTimeout = limits.requestTimeout
        http1 = HTTP1Channel(
            responder: responder,
            configuration: .init(
                additionalChannelHandlers: [ManagementConnectionGuard(requestTimeout: requestTimeout)],
                idleTimeout: TimeAmount(limits.idleTimeout ?? limits.handshakeTimeout)))
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let key = ConnectionCounter.key(channel.remoteAddress)
        guard counter.admit(key) else {
            logger.warning("refused a connection: too many open", metadata: ["peer.key": "\(key)", "open": "\(counter.total)"])
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.inputClosed)
        }
        channel.closeFuture.whenComplete { [counter] _ in counter.release(key) }
        return http1.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

/// On a management connection, after HTTP decoding: a request must be read whole (head to end)
/// within `requestTimeout` of its head, or the connection closes; and an answer that carries
/// `Connection: close` (an error answered before its request body was read: the body is not
/// drained) closes the connection once written.
final class ManagementConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let requestTimeout: Duration
    private var requestTimer: Scheduled<Void>?
    private var closeAfterAnswer = false

    init(requestTimeout: Duration) {
        self.requestTimeout = requestTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            requestTimer?.cancel()
            let channel = context.channel
            requestTimer = context.eventLoop.scheduleTask(in: TimeAmount(requestTimeout)) { channel.close(promise: nil) }
        case .end:
            requestTimer?.cancel()
            requestTimer = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        switch part {
        case .head(let head):
            closeAfterAnswer = head.headerFields[.connection]?.lowercased() == "close"
            context.write(data, promise: promise)
        case .end where closeAfterAnswer:
            let written = promise ?? context.eventLoop.makePromise()
            let channel = context.channel
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
            context.write(data, promise: written)
        default:
            context.write(data, promise: promise)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        requestTimer?.cancel()
        requestTimer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        requestTimer?.cancel()
        requestTimer = nil
        context.fireChannelInactive()
    }
}
