import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

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

/// Answers the requests of a device listener; the answer is written by ``DeviceHTTPHandler``.
protocol DeviceHTTPResponder: Sendable {
    /// The answer to `request` when it can be made at once, on the connection's event loop,
    /// without waiting for anything (a fixed document, a lookup in memory); nil otherwise. Such an
    /// answer costs no task and no thread hop. Must not block.
    func answerNow(_ request: DeviceHTTPRequest) -> DeviceHTTPAnswer?

    /// The answer to `request`, in a task of its own.
    func answer(_ request: DeviceHTTPRequest) async -> DeviceHTTPAnswer
}

extension DeviceHTTPResponder {
    func answerNow(_ request: DeviceHTTPRequest) -> DeviceHTTPAnswer? { nil }
}
