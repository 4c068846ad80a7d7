import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// HTTP/1.1 for the device-facing listeners (EST and the gateway) as plain NIO channel handlers.
///
/// Hummingbird's `HTTP1Channel` runs a Swift task for the life of every connection, reading
/// through an `NIOAsyncChannel`; a fleet's connections sit idle most of the time, and that task,
/// its async streams and its buffers cost memory per connection and a few thread hops per
/// request (measured: EST +7.6 % per core, idle memory 53 → 40 KiB per connection without them).
/// Here a connection is only its NIO pipeline: the request is read by an ordinary handler (the
/// body collected up to `bodyLimit`), answered at once on the event loop when the responder can
/// (``DeviceHTTPResponder/answerNow(_:)``), else in a task that exists only while it answers.
enum DeviceHTTPChannel {
    /// Adds the HTTP/1.1 handlers after what `pipeline` already holds (TLS).
    /// - Parameter bodyLimit: the largest request body the responder accepts; one byte more is
    ///   kept so that it can tell a body that is too large and refuse it (413).
    static func configure<Responder: DeviceHTTPResponder>(
        _ pipeline: ChannelPipeline.SynchronousOperations, responder: Responder, bodyLimit: Int, limits: ListenerLimits? = nil,
        logger: Logger
    ) throws {
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = 16 * 1024
        decoderLimits.maxHeaderListSize = 64 * 1024
        decoderLimits.maxHeaderFieldCount = 200
        // Pipelined requests are queued by DeviceHTTPHandler itself: NIO's pipelining handler
        // withholds every read while an answer is pending, and each withheld read costs the
        // event loop two epoll_ctl calls per request, pipelined or not. It also answers requests
        // that do not parse (400), in their turn.
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
        try pipeline.addHandler(
            DeviceHTTPHandler(
                responder: responder, bodyLimit: bodyLimit, idleTimeout: limits?.idleTimeout, requestTimeout: limits?.requestTimeout,
                logger: logger))
    }
}

/// Carries out ``DeviceConnectionStateMachine``'s actions on one connection: reads, writes
/// answers, closes.
final class DeviceHTTPHandler<Responder: DeviceHTTPResponder>: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let responder: Responder
    private let logger: Logger
    private var state: DeviceConnectionStateMachine
    /// Between requests: the connection closes when this fires (nil: it may stay idle).
    private let idleTimeout: Duration?
    /// From a request's head to its end: a request read too slowly closes the connection.
    private let requestTimeout: Duration?
    private var idleTimer: Scheduled<Void>?
    private var requestTimer: Scheduled<Void>?
    /// A request's head has been read and its end not yet.
    private var readingRequest = false

    init(responder: Responder, bodyLimit: Int, idleTimeout: Duration? = nil, requestTimeout: Duration? = nil, logger: Logger) {
        self.responder = responder
        self.logger = logger
        self.idleTimeout = idleTimeout
        self.requestTimeout = requestTimeout
        state = DeviceConnectionStateMachine(bodyLimit: bodyLimit)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armIdleTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        requestTimer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            idleTimer?.cancel()
            idleTimer = nil
            readingRequest = true
            perform(state.receivedHead(head), context: context)
        case .body(let part):
            state.receivedBody(part)
        case .end:
            readingRequest = false
            requestTimer?.cancel()
            requestTimer = nil
            perform(state.receivedEnd(), context: context)
        }
    }

    /// The request clock starts only when a read ends with a request still incomplete: a request
    /// that arrives whole in one read (nearly all of them) costs no timer.
    func channelReadComplete(context: ChannelHandlerContext) {
        if readingRequest, requestTimer == nil, let requestTimeout {
            let channel = context.channel
            requestTimer = context.eventLoop.scheduleTask(in: TimeAmount(requestTimeout)) { channel.close(promise: nil) }
        }
        context.fireChannelReadComplete()
    }

    /// Starts the idle clock when nothing is read, answered or waiting.
    private func armIdleTimer(context: ChannelHandlerContext) {
        guard let idleTimeout, idleTimer == nil, state.isIdle else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: TimeAmount(idleTimeout)) {
            let (handler, context) = bound.value
            handler.idleTimer = nil
            if handler.state.isIdle { context.close(promise: nil) }
        }
    }

    func read(context: ChannelHandlerContext) {
        perform(state.readRequested(), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            // Nothing more will come: without this the connection would wait half-closed
            // (CLOSE-WAIT) for NIOSSL's shutdown timeout or forever.
            perform(state.inputClosed(), context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.close(promise: nil)
            return
        }
        perform(state.receivedMalformed(), context: context)
    }

    /// On the event loop, once an answer is written (or failed).
    private func answered(context: ChannelHandlerContext, failed: Bool) {
        perform(state.answerWritten(failed: failed), context: context)
        armIdleTimer(context: context)
    }

    private func perform(_ action: DeviceConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .read:
            context.read()
        case .sendContinue(let version):
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .continue))), promise: nil)
        case .respond(let received, let thenRead):
            respond(to: received, context: context)
            if thenRead { context.read() }
        case .refuseMalformed(let version):
            refuseMalformed(version: version, context: context)
        case .close(let belowTLS):
            if belowTLS { Self.closeBelowTLS(context) } else { context.close(promise: nil) }
        }
    }

    /// Closes the socket itself once the client has closed its side. Closing through NIOSSL
    /// would send close_notify and then wait for the client's, which can no longer come (a
    /// client that just drops the connection never sends it), until NIOSSL's shutdown timeout:
    /// 5 s of a connection held for nothing.
    private static func closeBelowTLS(_ context: ChannelHandlerContext) {
        if let tls = try? context.pipeline.syncOperations.context(handlerType: NIOSSLServerHandler.self) {
            tls.close(promise: nil)
        } else {
            context.close(promise: nil)
        }
    }

    private func respond(to received: DeviceConnectionStateMachine.Received, context: ChannelHandlerContext) {
        let channel = context.channel
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let request = DeviceHTTPRequest(head: received.head, body: received.body, channel: channel, logger: logger)
        let writer = AnswerWriter(
            channel: channel, version: received.head.version, isHead: received.head.method == .HEAD, closeAfter: received.closeAfter,
            logger: logger,
            whenWritten: { failed in
                // Called on the event loop once the answer's end is written or could not be.
                let (handler, context) = bound.value
                handler.answered(context: context, failed: failed)
            },
            refuse: {
                let (handler, context) = bound.value
                handler.refuseMalformed(version: received.head.version, context: context)
            })
        if let answer = responder.answerNow(request) {
            writer.write(answer)
            return
        }
        let responder = responder
        Task { await writer.finish(with: responder.answer(request)) }
    }

    /// 400 with `Connection: close`, then the connection ends.
    private func refuseMalformed(version: HTTPVersion, context: ChannelHandlerContext) {
        let head = HTTPResponseHead(version: version, status: .badRequest, headers: ["content-length": "0", "connection": "close"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            let (handler, context) = bound.value
            handler.answered(context: context, failed: true)
        }
    }
}
