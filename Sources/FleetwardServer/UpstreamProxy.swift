import FleetwardDevice
public import Foundation
import HTTPTypes
public import Hummingbird
import Logging
import NIOCore

/// Where the gateway forwards device requests in reverse-proxy mode (`--upstream http://HOST:PORT`).
public struct Upstream: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// Parses `http://HOST:PORT` (IPv6 in brackets); only plain HTTP, to a backend beside the gateway.
    public init(parsing text: String) throws {
        guard text.hasPrefix("http://") else { throw HTTPProblem(.badRequest, "--upstream takes http://HOST:PORT, not '\(text)'") }
        var rest = String(text.dropFirst("http://".count))
        while rest.hasSuffix("/") { rest.removeLast() }
        let address = try ListenAddress(parsing: rest)
        guard address.port > 0 else { throw HTTPProblem(.badRequest, "--upstream needs a port other than 0") }
        host = address.host
        port = address.port
    }

    public var description: String { "http://" + (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }
}

/// Forwards every gateway request it does not answer itself to the upstream, with the identity
/// the handshake proved in `X-Fleetward-Device`, `X-Fleetward-Owner` and `X-Fleetward-Cert-Sha256`;
/// any `X-Fleetward-*` header the client sent is dropped first, with the hop-by-hop headers.
struct UpstreamProxyMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let gateway: Gateway
    let upstream: Upstream
    /// Paths the gateway answers itself.
    let localPaths: Set<String>
    /// Path prefixes the gateway answers itself (the prefix and everything below it).
    var localPrefixes: [String] = []

    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-authenticate", "host", "content-length",
    ]

    /// The header names the client listed in `Connection` (RFC 9110 §7.6.1: hop-by-hop, never forwarded).
    static func connectionOptions(_ headers: HTTPFields) -> Set<String> {
        var names = Set<String>()
        for value in headers[values: .connection] {
            for token in value.split(separator: ",") {
                names.insert(token.trimmingCharacters(in: .whitespaces).lowercased())
            }
        }
        return names
    }

    /// Whether a client's header must not reach the upstream: hop-by-hop ones, those named in
    /// `Connection`, and every spelling of the identity headers (`X-Fleetward-*`, any case,
    /// `_` for `-`, which many backends treat alike), which only the gateway sets.
    static func isDropped(_ lowercasedName: String, connectionOptions: Set<String>) -> Bool {
        let folded = lowercasedName.replacingOccurrences(of: "_", with: "-")
        return folded.hasPrefix("x-fleetward") || hopByHop.contains(lowercasedName) || connectionOptions.contains(lowercasedName)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if localPaths.contains(path) || localPrefixes.contains(where: { path == $0 || path.hasPrefix($0 + "/") }) {
            return try await next(request, context)
        }
        guard let identity = gateway.identity(of: context.channel) else {
            throw HTTPProblem(.unauthorized, "this connection proved no device")
        }
        var headers: [(name: String, value: String)] = []
        let named = Self.connectionOptions(request.headers)
        for field in request.headers where !Self.isDropped(field.name.canonicalName, connectionOptions: named) {
            headers.append((field.name.rawName, field.value))
        }
        headers.append(("X-Fleetward-Device", identity.device))
        if let owner = identity.owner { headers.append(("X-Fleetward-Owner", owner)) }
        headers.append(("X-Fleetward-Cert-Sha256", identity.certificateSHA256))
        var request = request
        let body = try await request.collectBody(upTo: GatewayServer.bodyLimit)
        let answer: HTTP1Response
        do {
            answer = try await HTTP1Client(host: upstream.host, port: upstream.port, timeout: .seconds(30)).send(
                HTTP1Request(
                    method: request.method.rawValue, path: request.uri.description, headers: headers, body: Array(body.readableBytesView)))
        } catch {
            context.logger.warning("the upstream did not answer", metadata: ["upstream": "\(upstream)", "error": "\(error)"])
            throw HTTPProblem(.badGateway, "the upstream service did not answer")
        }
        var fields = HTTPFields()
        for (name, value) in answer.headers where !Self.hopByHop.contains(name.lowercased()) {
            if let field = HTTPField.Name(name) { fields.append(HTTPField(name: field, value: value)) }
        }
        return Response(
            status: HTTPResponse.Status(code: answer.status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
    }
}
