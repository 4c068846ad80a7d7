public import FleetwardAuthority
import FleetwardKeyCustody
public import FleetwardPKI
public import FleetwardRegistry
import Foundation
public import HTTPTypes
public import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

/// An error as HTTP answers it: a status, one sentence, and any headers it needs (`Retry-After`,
/// `Allow`, `WWW-Authenticate`). Every listener turns errors into answers through ``from(_:)``:
/// the one place where an error of any module becomes a status. The management API and the
/// gateway answer it as JSON (`{"error": {"status", "code", "message"}}`), EST as one line of
/// text/plain.
public struct HTTPProblem: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    public var description: String { "\(status.code) \(message)" }

    /// The problem for any error: each module's error by its code, Hummingbird's HTTP errors by
    /// their status; anything else is a 500 whose detail goes to the log, not the client.
    public static func from(_ error: any Error) -> HTTPProblem {
        switch error {
        case let problem as HTTPProblem:
            return problem
        case let registry as RegistryError:
            switch registry.code {
            case .notFound: return HTTPProblem(.notFound, registry.message)
            case .forbidden: return HTTPProblem(.forbidden, registry.message)
            case .duplicate, .illegalTransition: return HTTPProblem(.conflict, registry.message)
            case .invalidInput: return HTTPProblem(.badRequest, registry.message)
            case .storage: return HTTPProblem(.serviceUnavailable, "the registry database is unavailable; try again")
            default: return HTTPProblem(.internalServerError, "internal error")
            }
        case let authority as AuthorityError:
            switch authority.code {
            case .invalidRequest: return HTTPProblem(.badRequest, authority.message)
            case .unauthenticated: return HTTPProblem(.unauthorized, authority.message)
            case .forbidden: return HTTPProblem(.forbidden, authority.message)
            case .notFound: return HTTPProblem(.notFound, authority.message)
            case .conflict, .alreadyInitialized: return HTTPProblem(.conflict, authority.message)
            case .tooManyRequests:
                return HTTPProblem(.tooManyRequests, authority.message, headers: [.retryAfter: "\(authority.retryAfter ?? 60)"])
            case .unavailable: return HTTPProblem(.serviceUnavailable, authority.message)
            default: return HTTPProblem(.internalServerError, "internal error")
            }
        case let pki as PKIError where pki.code == .signingFailed:
            // The CA's key (in a token: gone, locked or failing) could not sign: nothing was
            // issued or recorded; the detail (token and its return value, never the PIN) is logged.
            return HTTPProblem(
                .serviceUnavailable, "the CA cannot sign now (its key is unavailable); nothing was issued; try again later",
                headers: [.retryAfter: "30"])
        case let pki as PKIError:
            return HTTPProblem(.badRequest, pki.description)
        case is KeyCustodyError:
            return HTTPProblem(.serviceUnavailable, "a CA key cannot be used now; try again")
        case let http as HTTPError:
            return HTTPProblem(http.status, http.body ?? http.status.reasonPhrase, headers: http.headers)
        case let response as any HTTPResponseError:
            let message = response.status == .contentTooLarge ? "the request body is too large" : response.status.reasonPhrase
            return HTTPProblem(response.status, message)
        default:
            return HTTPProblem(.internalServerError, "internal error")
        }
    }

    /// The problem for `error`, logging the detail of a 5xx (database text, driver errors) with
    /// the request's path; the client gets the generic sentence.
    static func from(_ error: any Error, path: some StringProtocol, logger: Logger) -> HTTPProblem {
        let problem = from(error)
        if problem.status.code >= 500 {
            logger.error("request failed", metadata: ["http.path": "\(path)", "error": "\(String(describing: error).prefix(300))"])
        }
        return problem
    }

    /// The JSON answer.
    func response() -> Response {
        struct Body: Encodable {
            struct Detail: Encodable {
                var status: Int
                var code: String
                var message: String
            }
            var error: Detail
        }
        let code = status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "-")
        var response = JSONResponse.make(Body(error: .init(status: status.code, code: code, message: message)), status: status)
        for field in headers { response.headers.append(field) }
        return response
    }

    /// The text/plain answer (EST: RFC 7030 §4.2.3 leaves the body free).
    var textAnswer: DeviceHTTPAnswer {
        var fields: HTTPHeaders = ["Content-Type": "text/plain; charset=utf-8"]
        for field in headers { fields.add(name: field.name.canonicalName, value: field.value) }
        return .complete(
            HTTPResponseStatus(statusCode: status.code, reasonPhrase: status.reasonPhrase), headers: fields,
            body: ByteBuffer(string: message + "\n"))
    }
}

/// Turns every error, from a route or from Hummingbird (no such route, body too large), into a
/// JSON error response; unexpected errors are logged and answered 500 without detail.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    /// On the management listener, whose ``ManagementConnectionGuard`` closes after an answer
    /// that says `Connection: close`; the device listeners decide closing themselves.
    var closesOnRefusedBodies = false

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            var response = HTTPProblem.from(error, path: request.uri.path, logger: context.logger).response()
            // A refusal that may come before the request's body was read (no token, a wrong
            // type, too large) closes the connection rather than reading the rest of the body.
            if closesOnRefusedBodies, request.headers[.contentLength].map({ $0 != "0" }) ?? (request.headers[.transferEncoding] != nil) {
                response.headers[.connection] = "close"
            }
            return response
        }
    }
}

/// JSON responses: sorted keys, ISO 8601 dates.
enum JSONResponse {
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder().encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Answers 405 Method Not Allowed, with `Allow`, when the path is one the API serves but not with
/// this method (a path it does not serve stays 404). Added last to the router, so it only sees
/// requests that no route took.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: [(path: RouterPath, methods: [HTTPRequest.Method])]

    init(_ table: [(path: RouterPath, method: HTTPRequest.Method)]) {
        var byPath: [String: (path: RouterPath, methods: [HTTPRequest.Method])] = [:]
        for route in table {
            byPath[route.path.description, default: (route.path, [])].methods.append(route.method)
        }
        routes = byPath.values.sorted { $0.path.description < $1.path.description }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let segments = request.uri.path.split(separator: "/")
        // As the router does, the most specific match wins: `/devices/import` is its own route,
        // not `/devices/{id}` with the ID "import".
        let matching = routes.filter { Self.matches($0.path, segments) }
        let best = matching.map { Self.specificity($0.path) }.max { $0.lexicographicallyPrecedes($1) }
        var allowed = Set<String>()
        for route in matching where Self.specificity(route.path) == best {
            for method in route.methods { allowed.insert(method.rawValue) }
        }
        guard !allowed.isEmpty, !allowed.contains(request.method.rawValue) else { return try await next(request, context) }
        let list = allowed.sorted().joined(separator: ", ")
        throw HTTPProblem(.methodNotAllowed, "\(request.method.rawValue) is not allowed here; use \(list)", headers: [.allow: list])
    }

    /// Per segment: 2 for a literal, 1 for a capture or wildcard.
    static func specificity(_ path: RouterPath) -> [Int] {
        path.components.map { element in
            let text = element.description
            return text.contains("{") || text.contains("*") ? 1 : 2
        }
    }

    static func matches(_ path: RouterPath, _ segments: [Substring]) -> Bool {
        var index = 0
        for element in path.components {
            if element == .recursiveWildcard { return index < segments.count }
            guard index < segments.count, element ~= segments[index] else { return false }
            index += 1
        }
        return index == segments.count
    }
}
