import NIOCore
import NIOHTTP1

/// One device-facing HTTP/1.1 connection (EST, the gateway) as a state machine: requests are
/// answered one at a time in the order they came, a request that arrives while another is
/// answered (pipelining) waits its turn, and the connection closes when a request says so, when
/// its body is too large, when bytes do not parse, or once the client has closed its side and
/// nothing is left to answer.
///
/// Pure: each event returns the ``Action`` for ``DeviceHTTPHandler`` to carry out on its channel,
/// so every path can be tested without a socket (like NIO's `HTTPServerPipelineHandler` and
/// Hummingbird's `HTTPConnectionStateHandler`).
struct DeviceConnectionStateMachine {
    /// A whole request as read: its head and its body, kept up to the limit and one byte more so
    /// the responder can tell a body that was too large.
    struct Received {
        var head: HTTPRequestHead
        var body: ByteBuffer
        /// The connection closes after this request's answer.
        var closeAfter: Bool
    }

    /// What waits for its turn: a request, or bytes that did not parse as one (answered 400 in
    /// their turn, and then the connection closes).
    enum Waiting {
        case request(Received)
        case malformed
    }

    enum Action {
        case none
        /// Read more from the socket.
        case read
        /// Write `100 Continue` for the request being read.
        case sendContinue(HTTPVersion)
        /// Answer this request (then, when `thenRead`, read again: the queue has drained).
        case respond(Received, thenRead: Bool)
        /// Answer 400 with `Connection: close`.
        case refuseMalformed(HTTPVersion)
        /// Close: through TLS (close_notify), or, when the client already closed its side, the
        /// socket itself (a close_notify answer can no longer come).
        case close(belowTLS: Bool)
    }

    let bodyLimit: Int

    /// The request being read: its head, its body so far, whether its body overflowed.
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    /// The request being read asked for `100 Continue` while an earlier answer was still being
    /// made: it goes out once that answer is written, never in the middle of it.
    private var continueDeferred = false
    /// An answer is being made or written.
    private(set) var isAnswering = false
    /// Requests read while an answer was being made, in order.
    private var waiting: [Waiting] = []
    /// A read the channel asked for while a request waited.
    private var readHeld = false
    /// The connection closes after the answer in flight.
    private(set) var isClosing = false
    /// The client closed its side.
    private var isInputClosed = false

    init(bodyLimit: Int) {
        self.bodyLimit = bodyLimit
    }

    /// Nothing is being read, answered or waiting: the connection is between requests.
    var isIdle: Bool { head == nil && !isAnswering && waiting.isEmpty && !isClosing }

    mutating func receivedHead(_ requestHead: HTTPRequestHead) -> Action {
        head = requestHead
        body = nil
        bodyTooLarge = false
        continueDeferred = false
        guard requestHead.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) else { return .none }
        // RFC 9110 §10.1.1: the interim answer belongs to this request; while an earlier answer
        // is still being written it would land in the middle of that answer.
        if isAnswering || !waiting.isEmpty {
            continueDeferred = true
            return .none
        }
        return .sendContinue(requestHead.version)
    }

    mutating func receivedBody(_ part: ByteBuffer) {
        guard !bodyTooLarge else { return }
        var part = part
        let kept = body?.readableBytes ?? 0
        if kept + part.readableBytes > bodyLimit {
            // Keep one byte past the limit, so the responder refuses it; drop the rest unread.
            part = part.getSlice(at: part.readerIndex, length: bodyLimit + 1 - kept) ?? part
            bodyTooLarge = true
        }
        if body == nil {
            body = part
        } else {
            body!.writeImmutableBuffer(part)
        }
    }

    mutating func receivedEnd() -> Action {
        guard let requestHead = head else { return .none }
        head = nil
        continueDeferred = false
        let received = Received(head: requestHead, body: body ?? ByteBuffer(), closeAfter: bodyTooLarge || !requestHead.isKeepAlive)
        body = nil
        // Nothing is read after a request that closes the connection.
        if isClosing { return .none }
        if isAnswering {
            waiting.append(.request(received))
            return .none
        }
        return startAnswering(received, thenRead: false)
    }

    /// Bytes that are not HTTP: answered 400 in their turn, after what came before them; the
    /// decoder reads nothing more. After a request that closes the connection, nothing is answered.
    mutating func receivedMalformed() -> Action {
        if isClosing { return .none }
        if isAnswering {
            waiting.append(.malformed)
            return .none
        }
        return startRefusing(.http1_1)
    }

    /// The channel asks to read: reading pauses only while a request waits, so a pipelining
    /// client cannot make the server buffer more than what one read brought, and a client that
    /// waits for each answer never pauses reading.
    mutating func readRequested() -> Action {
        guard waiting.isEmpty else {
            readHeld = true
            return .none
        }
        return .read
    }

    /// The client closed its side (remote half-closure is allowed): close once the answers in
    /// flight and waiting are written.
    mutating func inputClosed() -> Action {
        isInputClosed = true
        return isAnswering ? .none : .close(belowTLS: true)
    }

    /// An answer's end was written (or writing it failed): the next request, or the end.
    mutating func answerWritten(failed: Bool) -> Action {
        isAnswering = false
        if failed || isClosing {
            waiting.removeAll()
            return .close(belowTLS: isInputClosed)
        }
        guard !waiting.isEmpty else {
            if isInputClosed { return .close(belowTLS: true) }
            if continueDeferred, let head {
                continueDeferred = false
                return .sendContinue(head.version)
            }
            return .none
        }
        let next = waiting.removeFirst()
        let thenRead = waiting.isEmpty && readHeld
        if thenRead { readHeld = false }
        switch next {
        case .request(let received): return startAnswering(received, thenRead: thenRead)
        case .malformed: return startRefusing(.http1_1)
        }
    }

    private mutating func startAnswering(_ received: Received, thenRead: Bool) -> Action {
        isAnswering = true
        isClosing = received.closeAfter
        return .respond(received, thenRead: thenRead)
    }

    private mutating func startRefusing(_ version: HTTPVersion) -> Action {
        isAnswering = true
        isClosing = true
        return .refuseMalformed(version)
    }
}
