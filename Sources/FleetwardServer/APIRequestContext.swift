public import FleetwardRegistry
public import Hummingbird
import NIOCore

/// The per-request context of the management API: who is asking, and from where.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The authenticated caller; set by ``BearerAuthenticator`` on every route except the OpenAPI document.
    public var actor: Actor?
    /// The peer's IP address, for rate limits (nil in in-process tests).
    public let remoteIP: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        actor = nil
        remoteIP = source.channel.remoteAddress?.ipAddress
    }

    /// JSON bodies are read by ``JSONBody`` with its own limits; this bounds anything else.
    public var maxUploadSize: Int { 64 * 1024 }

    /// The authenticated actor. - Throws: 401 when the route was reached without one (a wiring bug).
    func requireActor() throws -> Actor {
        guard let actor else { throw HTTPProblem(.unauthorized, "authentication required") }
        return actor
    }
}
