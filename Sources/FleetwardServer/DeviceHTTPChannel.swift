import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// A device-facing listener (EST, the gateway) as a plain NIO server: each accepted connection
/// gets its pipeline from `initializer` on its event loop, and nothing else.
///
/// Hummingbird's `Server` hands every accepted connection through an async sequence to a task
/// group and runs a task per connection for its `handle`; the device listeners have nothing to do
/// there (a connection lives in its pipeline, ``DeviceHTTPChannel``), and that path cost about
/// 6 % of a resumed handshake's CPU. The socket options are the ones Hummingbird sets.
struct DeviceListener: Service {
    let address: ListenAddress
    let onListening: @Sendable (ListenAddress) async -> Void
    /// Sets up an accepted connection's pipeline.
    let initializer: @Sendable (any Channel) -> EventLoopFuture<Void>

    func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer(initializer)
            .bind(host: address.host, port: address.port).get()
        let bound = server.localAddress
        await onListening(ListenAddress(host: bound?.ipAddress ?? address.host, port: bound?.port ?? address.port))
        // Until graceful shutdown or cancellation: then stop accepting (connections in their
        // pipelines end with the process).
        await withTaskCancellationOrGracefulShutdownHandler {
            try? await server.closeFuture.get()
        } onCancelOrGracefulShutdown: {
            server.close(promise: nil)
        }
    }
}

/// A request as a device listener read it: NIO's head and the whole body (at most the
/// listener's limit and one byte more, so that an answer can tell a body that was too large).
struct DeviceHTTPRequest: Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer
    let channel: any Channel
    let logger: Logger

    /// The target's path, without its query; for an absolute-form target
    /// (`https://host/path`, RFC 9112 §3.2.2), the path after the authority.
    var path: Substring {
        var target = head.uri[...]
        if let query = target.firstIndex(of: "?") { target = target[..<query] }
        if target.first != "/", let scheme = target.range(of: "://") {
            let afterAuthority = target[scheme.upperBound...]
            target = afterAuthority.firstIndex(of: "/").map { afterAuthority[$0...] } ?? "/"
        }
        return target
    }

    /// The path's segments, empty ones (`//`, a trailing `/`) left out.
    var pathSegments: [Substring] { path.split(separator: "/") }

    /// The first value of header `name` (compared without case).
    func header(_ name: String) -> String? { head.headers.first(name: name) }

    /// The client's address, formatted when a rate limit needs it.
    var remoteIP: String? { channel.remoteAddress?.ipAddress }
}

/// What a device listener answers.
enum DeviceHTTPAnswer: Sendable {
    /// A whole answer, written with its head in one flush (`content-length` is added).
    case complete(HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer)
    /// A Hummingbird response, its body written as it is produced.
    case response(Response)
    /// The request's head cannot be used: 400, and the connection closes.
    case malformed
}

/// Answers the requests of a device listener. Runs in a task of its own per request; the
/// answer is written by ``DeviceHTTPHandler``.
protocol DeviceHTTPResponder: Sendable {
    func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer
}

/// A Hummingbird router (its routes, request contexts, middleware and errors unchanged) as a
/// device listener's responder.
struct RouterDeviceHTTPResponder<Responder: HTTPResponder>: DeviceHTTPResponder
where Responder.Context: RequestContext, Responder.Context.Source == ApplicationRequestContextSource {
    let responder: Responder

    func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer {
        guard let head = try? HTTPRequest(request.head, secure: true, splitCookie: false) else { return .malformed }
        let routed = Request(head: head, body: .init(buffer: request.body))
        let context = Responder.Context(source: .init(channel: request.channel, logger: request.logger))
        do {
            return .response(try await responder.respond(to: routed, context: context))
        } catch let error as any HTTPResponseError {
            return .response((try? error.response(from: routed, context: context)) ?? Response(status: .internalServerError))
        } catch {
            request.logger.debug("a request failed", metadata: ["error": "\(error)"])
            return .response(Response(status: .internalServerError))
        }
    }
}

/// HTTP/1.1 for the device-facing listeners (EST and the gateway) as plain NIO channel handlers.
///
/// Hummingbird's `HTTP1Channel` runs a Swift task for the life of every connection, reading
/// through an `NIOAsyncChannel`; a fleet's connections sit idle most of the time, and that task,
/// its async streams and its buffers cost memory per connection and a few thread hops per
/// request. Here a connection is only its NIO pipeline: the request is read by an ordinary
/// handler (the body collected up to `bodyLimit`), a task exists only while the responder
/// answers, and the answer is written from the event loop.
enum DeviceHTTPChannel {
    /// Adds the HTTP/1.1 handlers after what `pipeline` already holds (TLS).
    /// - Parameter bodyLimit: the largest request body the responder accepts; one byte more is
    ///   kept so that it can tell a body that is too large and refuse it (413).
    static func configure<Responder: DeviceHTTPResponder>(
        _ pipeline: ChannelPipeline.SynchronousOperations, responder: Responder, bodyLimit: Int, logger: Logger
    ) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 16 * 1024
        limits.maxHeaderListSize = 64 * 1024
        limits.maxHeaderFieldCount = 200
        // Pipelined requests are queued by DeviceHTTPHandler itself: NIO's pipelining handler
        // withholds every read while an answer is pending, and each withheld read costs the
        // event loop two epoll_ctl calls per request, pipelined or not. It also answers requests
        // that do not parse (400), in their turn.
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
        try pipeline.addHandler(DeviceHTTPHandler(responder: responder, bodyLimit: bodyLimit, logger: logger))
    }
}

/// Answers one request at a time through its responder, in the order they came. A request that
/// arrives while another is answered (HTTP/1.1 pipelining) waits in a queue; reading from the
/// socket pauses only while one waits, so a pipelining client cannot make the server buffer more
/// than what one read brought, and a client that waits for each answer never pauses reading.
final class DeviceHTTPHandler<Responder: DeviceHTTPResponder>: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private struct Received {
        var head: HTTPRequestHead
        var body: ByteBuffer
        var closeAfter: Bool
    }

    /// What waits for its turn: a request, or bytes that did not parse as one (answered 400,
    /// and the connection closed, once everything before them is answered).
    private enum Waiting {
        case request(Received)
        case malformed
    }

    private let responder: Responder
    private let bodyLimit: Int
    private let logger: Logger
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    /// An answer is being made or written.
    private var answering = false
    /// Requests read while an answer was being made, in order.
    private var waiting: [Waiting] = []
    /// A read the channel asked for while a request waited.
    private var readHeld = false
    /// The connection closes after the answer in flight (its request said so, or its body was too large).
    private var closing = false
    /// The client closed its side (the server runs with remote half-closure allowed): close once
    /// the answers in flight and waiting, if any, are written.
    private var inputClosed = false

    init(responder: Responder, bodyLimit: Int, logger: Logger) {
        self.responder = responder
        self.bodyLimit = bodyLimit
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = nil
            bodyTooLarge = false
            if requestHead.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(
                    wrapOutboundOut(.head(HTTPResponseHead(version: requestHead.version, status: .continue))), promise: nil)
            }
        case .body(var part):
            guard !bodyTooLarge else { return }
            let kept = (body?.readableBytes ?? 0)
            if kept + part.readableBytes > bodyLimit {
                // Keep one byte past the limit, so the route refuses it; drop the rest unread.
                part = part.getSlice(at: part.readerIndex, length: bodyLimit + 1 - kept) ?? part
                bodyTooLarge = true
            }
            if body == nil {
                body = part
            } else {
                body!.writeImmutableBuffer(part)
            }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            let received = Received(
                head: requestHead, body: body ?? ByteBuffer(), closeAfter: bodyTooLarge || !requestHead.isKeepAlive)
            body = nil
            if answering || closing {
                // Nothing is read after a request that closes the connection.
                if !closing { waiting.append(.request(received)) }
            } else {
                respond(to: received, context: context)
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        if waiting.isEmpty {
            context.read()
        } else {
            readHeld = true
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            // Nothing more will come: without this the connection would wait half-closed
            // (CLOSE-WAIT) for NIOSSL's shutdown timeout or forever.
            inputClosed = true
            if !answering { Self.closeBelowTLS(context) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// On the event loop, once an answer is written (or failed).
    private func answered(context: ChannelHandlerContext, failed: Bool) {
        answering = false
        if failed || closing {
            waiting.removeAll()
            if inputClosed { Self.closeBelowTLS(context) } else { context.close(promise: nil) }
            return
        }
        if !waiting.isEmpty {
            switch waiting.removeFirst() {
            case .request(let received): respond(to: received, context: context)
            case .malformed: refuseMalformed(version: .http1_1, context: context)
            }
            if waiting.isEmpty, readHeld {
                readHeld = false
                context.read()
            }
        } else if inputClosed {
            Self.closeBelowTLS(context)
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

    private func respond(to received: Received, context: ChannelHandlerContext) {
        let requestHead = received.head
        let channel = context.channel
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        answering = true
        closing = received.closeAfter
        let closeAfter = received.closeAfter
        let responder = responder
        let logger = logger
        let isHead = requestHead.method == .HEAD
        let version = requestHead.version
        let request = DeviceHTTPRequest(head: requestHead, body: received.body, channel: channel, logger: logger)
        // Called on the event loop once the answer's end is written or could not be.
        let whenWritten: @Sendable (Bool) -> Void = { failed in
            let (handler, context) = bound.value
            handler.answered(context: context, failed: failed)
        }
        Task {
            let answer = await responder.answer(request)
            switch answer {
            case .malformed:
                channel.eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.refuseMalformed(version: version, context: context)
                }
            case .complete(let status, let headers, let body):
                var head = HTTPResponseHead(version: version, status: status, headers: headers)
                head.headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
                head.headers = AnswerHead.finished(head.headers, closeAfter: closeAfter)
                channel.write(HTTPServerResponsePart.head(head), promise: nil)
                if !isHead, body.readableBytes > 0 { channel.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil) }
                channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { result in
                    if case .failure = result { whenWritten(true) } else { whenWritten(false) }
                }
            case .response(let response):
                var head = HTTPResponseHead(response.head)
                head.version = version
                if head.headers["content-length"].isEmpty, let length = response.body.contentLength {
                    head.headers.replaceOrAdd(name: "content-length", value: String(length))
                }
                head.headers = AnswerHead.finished(head.headers, closeAfter: closeAfter)
                let writer = ChannelBodyWriter(channel: channel, head: head, skipsBody: isHead, whenWritten: whenWritten)
                await AnswerHead.write(response.body, to: writer, logger: logger)
            }
        }
    }

    /// 400 with `Connection: close`, then the connection ends.
    private func refuseMalformed(version: HTTPVersion, context: ChannelHandlerContext) {
        let head = HTTPResponseHead(version: version, status: .badRequest, headers: ["content-length": "0", "connection": "close"])
        answering = true
        closing = true
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            let (handler, context) = bound.value
            handler.answered(context: context, failed: true)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.close(promise: nil)
            return
        }
        // Bytes that are not HTTP: answered 400 in their turn, after what came before them; the
        // decoder reads nothing more. After a request that closes the connection, nothing is answered.
        if closing {
            return
        } else if answering {
            waiting.append(.malformed)
        } else {
            refuseMalformed(version: .http1_1, context: context)
        }
    }
}

/// What ``DeviceHTTPHandler`` adds to every answer's head, and the writing of a streamed body.
enum AnswerHead {
    /// Writes a streamed body; when it fails before its end, the client cannot tell where the
    /// answer ends, so the connection goes.
    static func write(_ body: ResponseBody, to writer: ChannelBodyWriter, logger: Logger) async {
        do {
            try await body.write(writer)
        } catch {
            logger.debug("could not write an answer", metadata: ["error": "\(error)"])
            let whenWritten = writer.whenWritten
            writer.channel.eventLoop.execute { whenWritten(true) }
        }
    }

    /// The headers every answer carries: `Date`, and `Connection: close` when the connection ends after it.
    static func finished(_ headers: HTTPHeaders, closeAfter: Bool) -> HTTPHeaders {
        var headers = headers
        headers.replaceOrAdd(name: "date", value: HTTPDate.now())
        if closeAfter { headers.replaceOrAdd(name: "connection", value: "close") }
        return headers
    }
}

/// Writes an answer's body to the channel: small answers (a known length up to 64 KiB) in one
/// flush with their head, larger or unknown ones flushed piece by piece with at most two pieces
/// in flight, so a slow reader holds back the producer.
struct ChannelBodyWriter: ResponseBodyWriter {
    static let smallAnswer = 64 * 1024

    let channel: any Channel
    let head: HTTPResponseHead
    let skipsBody: Bool
    /// Called on the event loop once the answer's end is written (false) or failed (true). The
    /// answer does not wait for it: the connection's handler takes the next request from there.
    let whenWritten: @Sendable (Bool) -> Void
    private let streams: Bool
    private var headWritten = false
    private var inFlight: EventLoopFuture<Void>?

    init(channel: any Channel, head: HTTPResponseHead, skipsBody: Bool, whenWritten: @escaping @Sendable (Bool) -> Void) {
        self.channel = channel
        self.head = head
        self.skipsBody = skipsBody
        self.whenWritten = whenWritten
        let length = head.headers["content-length"].first.flatMap { Int($0) }
        streams = length.map { $0 > Self.smallAnswer } ?? true
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
        if !headWritten {
            headWritten = true
            channel.write(HTTPServerResponsePart.head(head), promise: nil)
        }
        guard !skipsBody else { return }
        if streams {
            // Two writes in flight at most: this one is queued while the previous one drains,
            // so the producer reads its next piece meanwhile, and a slow reader holds it back.
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: written)
            if let previous = inFlight { try await previous.get() }
            inFlight = written.futureResult
        } else {
            channel.write(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if !headWritten {
            channel.write(HTTPServerResponsePart.head(head), promise: nil)
        }
        let whenWritten = whenWritten
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { result in
            if case .failure = result { whenWritten(true) } else { whenWritten(false) }
        }
    }
}

/// The `Date` header's value (RFC 9110 §6.6.1), formatted once a second.
enum HTTPDate {
    private static let cache = NIOLockedValueBox<(second: Int, text: String)>((-1, ""))

    static func now() -> String {
        let now = Date()
        let second = Int(now.timeIntervalSince1970)
        return cache.withLockedValue { cached in
            if cached.second != second { cached = (second, format(second)) }
            return cached.text
        }
    }

    /// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func format(_ second: Int) -> String {
        var time = time_t(second)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
