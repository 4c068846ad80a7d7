import FleetwardAuthority
import FleetwardRegistry
import Logging
import Foundation
import HTTPTypes
import Hummingbird

/// Authenticates every management API request but the public ones (the OpenAPI document, CRLs,
/// OCSP): `Authorization: Bearer
/// fwt_<id>_<secret>`, looked up by ID and compared by HMAC in constant time. Tokens that are
/// unknown, revoked or expired all get the same 401; an address that keeps failing gets 429.
struct BearerAuthenticator: RouterMiddleware {
    typealias Context = APIRequestContext

    let store: any RegistryStore
    let hasher: SecretHasher
    let limiter: AttemptLimiter
    let now: @Sendable () -> Date
    /// Paths served without a token.
    let publicPaths: Set<String>
    /// Path prefixes served without a token (`/ocsp/` for OCSP GET requests).
    var publicPrefixes: [String] = []

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if publicPaths.contains(path) || publicPrefixes.contains(where: { path.hasPrefix($0) }) {
            return try await next(request, context)
        }
        let unauthorized = HTTPProblem(
            .unauthorized, "a valid bearer token is required (Authorization: Bearer fwt_…)",
            headers: [.wwwAuthenticate: "Bearer realm=\"fleetward\""])
        // No credentials at all is not a guess: 401, and it neither counts nor waits.
        guard request.headers[.authorization] != nil else { throw unauthorized }
        let addressKey = "auth:" + AttemptLimiter.addressKey(context.remoteIP)
        // The limit is checked before the token: an address that keeps guessing is refused
        // whatever it sends next, so a guess that happens to be right does not get through either.
        if let wait = limiter.retryAfter(addressKey, now: now()) {
            throw HTTPProblem(.tooManyRequests, "too many failed sign-ins from this address", headers: [.retryAfter: "\(wait)"])
        }
        guard let actor = try await authenticate(request.headers[.authorization]) else {
            limiter.recordFailure(addressKey, now: now())
            throw unauthorized
        }
        var context = context
        context.actor = actor
        context.logger[metadataKey: "fleetward.actor"] = "\(actor.role):\(actor.name)"
        return try await next(request, context)
    }

    private func authenticate(_ header: String?) async throws -> Actor? {
        guard let header, header.count < 512 else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return try await Self.actor(token: parts[1].trimmingCharacters(in: .whitespaces), store: store, hasher: hasher, now: now())
    }

    /// The actor an API token (`fwt_<id>_<secret>`) stands for: nil when it is malformed,
    /// unknown, revoked, expired or its secret does not match (all alike). Also signs in to the console.
    static func actor(token: String, store: any RegistryStore, hasher: SecretHasher, now: Date) async throws -> Actor? {
        guard token.utf8.count < 512 else { return nil }
        // fwt_<16 hex>_<secret>
        let fields = token.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0] == "fwt", fields[1].count == 16,
            fields[1].utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }), !fields[2].isEmpty
        else { return nil }
        guard let record = try await store.apiToken(id: String(fields[1])) else { return nil }
        if let expiry = record.expiresAt, expiry <= now { return nil }
        guard hasher.matches(Array(fields[2].utf8), stored: record.secretHMAC) else { return nil }
        return Actor(role: record.role, name: record.id, owner: record.owner)
    }
}
