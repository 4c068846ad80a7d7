import FleetwardAuthority
import FleetwardRegistry
import FleetwardServer
import FleetwardTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// The management API keeps the HTTP contract its document states: 405 with `Allow` for a method
/// a route does not have, JSON only as `application/json` and without duplicate keys, path
/// parameters percent-decoded, cursors validated, and 401 for a request without credentials
/// whatever the sign-in limiter holds.
@Suite struct APIContractTests {
    /// Sends one request; returns its status, headers and body text.
    static func send(
        _ fixture: APIFixture, _ method: HTTPRequest.Method, _ path: String, role: String? = "admin", contentType: String? = nil,
        body: String? = nil, api: ManagementAPI? = nil
    ) async throws -> (status: Int, headers: HTTPFields, body: String) {
        var fields = fixture.headers(role, json: false)
        if let contentType { fields[.contentType] = contentType }
        let headers = fields
        return try await fixture.test(api: api) { client in
            try await client.execute(uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) {
                ($0.status.code, $0.headers, $0.body.text)
            }
        }
    }

    @Test func aMethodTheRouteDoesNotHaveIs405WithAllow() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let cases: [(HTTPRequest.Method, String, String)] = [
            (.put, "/api/v1/devices", "GET, HEAD, POST"),
            (.delete, "/api/v1/devices/D-ALICE", "GET, HEAD"),
            (.patch, "/api/v1/devices/D-ALICE/suspend", "POST"),
            (.get, "/api/v1/tokens/0123456789abcdef", "DELETE"),
            (.trace, "/api/v1/audit", "GET, HEAD"),
            (.put, "/ocsp", "POST"),
            // The literal route wins over /devices/{id}, as in the router.
            (.get, "/api/v1/devices/import", "POST"),
        ]
        for (method, path, allow) in cases {
            let answer = try await Self.send(fixture, method, path)
            #expect(answer.status == 405, "\(method) \(path): \(answer.status) \(answer.body)")
            #expect(answer.headers[.allow] == allow, "\(method) \(path): Allow \(answer.headers[.allow] ?? "none")")
            #expect(answer.body.contains("\"status\":405"), "\(answer.body)")
        }
        // A path nobody serves stays 404; HEAD goes with every GET.
        #expect(try await Self.send(fixture, .get, "/api/v1/nothing-here").status == 404)
        #expect(try await Self.send(fixture, .head, "/api/v1/devices").status == 200)
        // Without a token the answer is 401 first: the method is not a way around sign-in.
        #expect(try await Self.send(fixture, .put, "/api/v1/devices", role: nil).status == 401)
    }

    @Test func jsonBodiesMustSayTheyAreJSONAndNameEachFieldOnce() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let before = try await fixture.snapshot()
        let device = #"{"id":"CT-1","model":"cam","secret":"0123456789abcdef0123"}"#
        let refused: [(String?, String, Int, String)] = [
            (nil, device, 415, "application/json"),
            ("application/jsonx", device, 415, "application/json"),
            ("text/plain", device, 415, "application/json"),
            ("application/json", #"{"id":"CT-1","id":"CT-2","model":"cam","secret":"0123456789abcdef0123"}"#, 400, "'id' appears more than once"),
            (
                "application/json", #"{"id":"CT-1","model":"cam","secret":"0123456789abcdef0123","metadata":{"a":"1","\u0061":"2"}}"#, 400,
                "'a' appears more than once"
            ),
            ("application/json", #"{"id":"CT-1","model":"cam","secret":"0123456789abcdef0123","metadata":null}"#, 400, "'metadata' is null"),
        ]
        for (type, body, status, fragment) in refused {
            let answer = try await Self.send(fixture, .post, "/api/v1/devices", contentType: type, body: body)
            #expect(answer.status == status && answer.body.contains(fragment), "\(type ?? "no type"): \(answer.status) \(answer.body)")
        }
        #expect(try await fixture.snapshot() == before, "a refused body changed the registry")
        // Parameters are allowed; the same key in two different objects is not a duplicate.
        let accepted = try await Self.send(
            fixture, .post, "/api/v1/devices", contentType: "Application/JSON; charset=utf-8",
            body: #"{"id":"CT-1","model":"cam","secret":"0123456789abcdef0123","metadata":{"id":"x"}}"#)
        #expect(accepted.status == 201, "\(accepted.status) \(accepted.body)")
        // A route whose fields are all optional takes an empty body without a type.
        let token = try await Self.send(fixture, .post, "/api/v1/devices/D-ALICE/enrollment-tokens", role: "alice")
        #expect(token.status == 201, "\(token.status) \(token.body)")
    }

    @Test func pathParametersArePercentDecodedAndCursorsChecked() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        try await fixture.server.registrar.createOwner(try Owner(id: "dave@example.com", createdAt: Date()), by: .console, at: Date())
        let encoded = try await Self.send(fixture, .get, "/api/v1/owners/dave%40example.com")
        #expect(encoded.status == 200 && encoded.body.contains("dave@example.com"), "\(encoded.status) \(encoded.body)")
        #expect(try await Self.send(fixture, .get, "/api/v1/owners/dave@example.com").status == 200)
        #expect(try await Self.send(fixture, .get, "/api/v1/devices/D%2DALICE").status == 200)
        let badEscape = try await Self.send(fixture, .get, "/api/v1/owners/dave%4")
        #expect(badEscape.status == 400, "\(badEscape.status) \(badEscape.body)")
        let cursor = try await Self.send(fixture, .get, "/api/v1/owners?after=not%20an%20owner!")
        #expect(cursor.status == 400 && cursor.body.contains("'after'"), "\(cursor.status) \(cursor.body)")
        #expect(try await Self.send(fixture, .get, "/api/v1/owners?after=bob").status == 200)
    }

    @Test func noCredentialsIs401EvenFromAnAddressThatIsLockedOut() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        var api = fixture.api
        api.authenticationLimiter = AttemptLimiter(.init(maximumFailures: 2, window: 600))
        for _ in 0..<3 {
            _ = try await Self.send(fixture, .get, "/api/v1/devices", role: "fwt_0123456789abcdef_wrong", api: api)
        }
        let guessing = try await Self.send(fixture, .get, "/api/v1/devices", role: "fwt_0123456789abcdef_wrong", api: api)
        #expect(guessing.status == 429 && guessing.headers[.retryAfter] != nil, "\(guessing.status)")
        let bare = try await Self.send(fixture, .get, "/api/v1/devices", role: nil, api: api)
        #expect(bare.status == 401 && bare.headers[.wwwAuthenticate] != nil, "\(bare.status) \(bare.body)")
    }
}
