import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOHTTPTypesHTTP1

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
