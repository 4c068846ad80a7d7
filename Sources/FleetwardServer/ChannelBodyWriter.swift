import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// Writes one answer of a device listener to its channel, from the event loop or from a task,
/// and tells the connection's handler once its end is written (or failed).
struct AnswerWriter: Sendable {
    let channel: any Channel
    let version: HTTPVersion
    let isHead: Bool
    let closeAfter: Bool
    let logger: Logger
    /// Called on the event loop once the answer's end is written (false) or failed (true).
    let whenWritten: @Sendable (Bool) -> Void
    /// Answers 400 and closes (for ``DeviceHTTPAnswer/malformed``), on the event loop.
    let refuse: @Sendable () -> Void

    /// Writes `answer`; a streamed ``DeviceHTTPAnswer/response(_:)`` goes on in a task.
    func write(_ answer: DeviceHTTPAnswer) {
        switch answer {
        case .malformed:
            channel.eventLoop.execute(refuse)
        case .complete(let status, let headers, let body):
            var head = HTTPResponseHead(version: version, status: status, headers: headers)
            head.headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
            head.headers = AnswerHead.finished(head.headers, closeAfter: closeAfter)
            channel.write(HTTPServerResponsePart.head(head), promise: nil)
            if !isHead, body.readableBytes > 0 { channel.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil) }
            let whenWritten = whenWritten
            channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { result in
                if case .failure = result { whenWritten(true) } else { whenWritten(false) }
            }
        case .response(let response):
            Task { await stream(response) }
        }
    }

    /// Writes `answer`, waiting while a streamed body is produced.
    func finish(with answer: DeviceHTTPAnswer) async {
        if case .response(let response) = answer {
            await stream(response)
        } else {
            write(answer)
        }
    }

    /// A Hummingbird response, its body written as it is produced.
    private func stream(_ response: Response) async {
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
