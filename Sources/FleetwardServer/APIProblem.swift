public import FleetwardPKI
public import FleetwardRegistry
import Foundation
public import HTTPTypes
public import Hummingbird
import Logging
import NIOCore

/// An error the API answers with: a status and one sentence, as `{"error": {"status", "code", "message"}}`.
public struct APIProblem: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    public var description: String { "\(status.code) \(message)" }

    /// The problem for any error: registry and PKI errors by their code, Hummingbird's HTTP errors
    /// by their status; anything else is a 500 whose detail goes to the log, not the client.
    static func from(_ error: any Error) -> APIProblem {
        switch error {
        case let problem as APIProblem:
            return problem
        case let registry as RegistryError:
            let status: HTTPResponse.Status
            switch registry.code {
            case .notFound: status = .notFound
            case .forbidden: status = .forbidden
            case .duplicate, .illegalTransition: status = .conflict
            case .invalidInput: status = .badRequest
            case .storage: return APIProblem(.serviceUnavailable, "the registry database is unavailable; try again")
            default: status = .internalServerError
            }
            if status == .internalServerError { return APIProblem(status, "internal error") }
            return APIProblem(status, registry.message)
        case let pki as PKIError:
            return APIProblem(.badRequest, pki.description)
        case let http as HTTPError:
            return APIProblem(http.status, http.body ?? http.status.reasonPhrase, headers: http.headers)
        case let response as any HTTPResponseError:
            let message = response.status == .contentTooLarge ? "the request body is too large" : response.status.reasonPhrase
            return APIProblem(response.status, message)
        default:
            return APIProblem(.internalServerError, "internal error")
        }
    }

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
}

/// Turns every error, from a route or from Hummingbird (no such route, body too large), into a
/// JSON error response; unexpected errors are logged and answered 500 without detail.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let problem = APIProblem.from(error)
            if problem.status.code >= 500 {
                // The detail (database text, driver errors) goes to the log, not to the client.
                context.logger.error(
                    "request failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(String(describing: error).prefix(300))"])
            }
            return problem.response()
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
