import FleetwardAuthority
import FleetwardPKI
import FleetwardRegistry
import FleetwardServer
import FleetwardTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// One route, how to call it, and the status each role must get (in ``APIFixture/roles`` order:
/// admin, manufacturer, operator, alice (owns D-ALICE), bob (owns nothing)).
struct RouteCase: Sendable, CustomStringConvertible {
    var method: HTTPRequest.Method
    /// The route as the router and the OpenAPI document name it.
    var route: String
    var path: @Sendable (APIFixture) -> String
    var body: @Sendable (APIFixture) -> String?
    var contentType = "application/json"
    var aliceState = DeviceState.active
    var expected: [Int]

    init(
        _ method: HTTPRequest.Method, _ route: String, path: (@Sendable (APIFixture) -> String)? = nil,
        body: @escaping @Sendable (APIFixture) -> String? = { _ in nil }, contentType: String = "application/json",
        aliceState: DeviceState = .active, _ expected: [Int]
    ) {
        self.method = method
        self.route = route
        self.path = path ?? { _ in route.replacingOccurrences(of: "{id}", with: "D-ALICE") }
        self.body = body
        self.contentType = contentType
        self.aliceState = aliceState
        self.expected = expected
    }

    var description: String { "\(method) \(route)" }
}

@Suite struct ManagementAPITests {
    static let csv = "id,secret,key_sha256,model,metadata\nNEW-1,0123456789abcdef0123,,cam,\nNEW-2,0123456789abcdef0124,,cam,\n"

    /// Every route × every role. Written out by hand from the issue's rules, not derived from
    /// the policy under test: an owner sees and acts on only their own devices (another's is a
    /// 404); a manufacturer imports and reads, never revokes; an operator suspends and revokes;
    /// an admin does everything.
    static let cases: [RouteCase] = [
        RouteCase(.get, "/api/v1/devices", [200, 200, 200, 200, 200]),
        RouteCase(
            .post, "/api/v1/devices", body: { _ in #"{"id":"NEW-1","model":"cam","secret":"0123456789abcdef0123"}"# },
            [201, 201, 403, 403, 403]),
        RouteCase(.post, "/api/v1/devices/import", body: { _ in csv }, contentType: "text/csv", [200, 200, 403, 403, 403]),
        RouteCase(.get, "/api/v1/devices/{id}", [200, 200, 200, 200, 404]),
        RouteCase(.get, "/api/v1/devices/{id}/certificates", [200, 200, 200, 200, 404]),
        RouteCase(.get, "/api/v1/devices/{id}/telemetry", [200, 200, 200, 200, 404]),
        RouteCase(.post, "/api/v1/devices/{id}/suspend", [200, 403, 200, 403, 403]),
        RouteCase(.post, "/api/v1/devices/{id}/resume", aliceState: .suspended, [200, 403, 200, 403, 403]),
        RouteCase(.post, "/api/v1/devices/{id}/revoke", [200, 403, 200, 403, 403]),
        RouteCase(.post, "/api/v1/devices/{id}/approve", aliceState: .pending, [200, 403, 200, 403, 403]),
        RouteCase(.post, "/api/v1/devices/{id}/report-stolen", [200, 403, 403, 200, 404]),
        RouteCase(.post, "/api/v1/devices/{id}/recover", aliceState: .stolen, [200, 403, 403, 200, 404]),
        RouteCase(.post, "/api/v1/devices/{id}/transfer", body: { _ in #"{"to":"carol"}"# }, [200, 403, 403, 200, 404]),
        RouteCase(
            // D-FREE has an unused code (the fixture's): only an explicit rotation replaces it, and
            // only by whoever registered it (the console here) or an admin.
            .post, "/api/v1/devices/{id}/claim-code", path: { _ in "/api/v1/devices/D-FREE/claim-code" }, body: { _ in #"{"rotate":true}"# },
            [201, 404, 403, 403, 403]),
        RouteCase(.post, "/api/v1/devices/{id}/enrollment-tokens", body: { _ in #"{"ttlSeconds":600}"# }, [201, 403, 201, 201, 404]),
        RouteCase(
            .post, "/api/v1/claims", body: { fixture in #"{"device":"D-FREE","claimCode":"\#(fixture.freeCode)"}"# },
            [403, 403, 403, 200, 200]),
        RouteCase(
            .post, "/api/v1/certificates/{serial}/revoke", path: { _ in "/api/v1/certificates/4a01/revoke" },
            body: { _ in #"{"reason":"superseded"}"# }, [200, 403, 200, 403, 403]),
        RouteCase(.get, "/api/v1/owners", [200, 403, 200, 403, 403]),
        RouteCase(.post, "/api/v1/owners", body: { _ in #"{"id":"dave","name":"Dave"}"# }, [201, 403, 201, 403, 403]),
        RouteCase(.get, "/api/v1/owners/{owner}", path: { _ in "/api/v1/owners/alice" }, [200, 403, 200, 403, 403]),
        RouteCase(.get, "/api/v1/groups", [200, 200, 200, 403, 403]),
        RouteCase(
            .post, "/api/v1/groups",
            body: { fixture in
                let pem = fixture.caPEM.replacingOccurrences(of: "\n", with: "\\n")
                return #"{"name":"globex","caCertificate":"\#(pem)","autoApprove":false}"#
            }, [201, 403, 201, 403, 403]),
        RouteCase(.get, "/api/v1/groups/{group}", path: { "/api/v1/groups/\($0.groupID)" }, [200, 200, 200, 403, 403]),
        RouteCase(.delete, "/api/v1/groups/{group}", path: { "/api/v1/groups/\($0.groupID)" }, [204, 403, 204, 403, 403]),
        RouteCase(.get, "/api/v1/mqtt/policies", [200, 200, 200, 403, 403]),
        RouteCase(
            .put, "/api/v1/mqtt/policies/{scope}", path: { _ in "/api/v1/mqtt/policies/model:cam" },
            body: { _ in #"{"statements":[{"effect":"allow","actions":["connect"]}]}"# }, [200, 403, 200, 403, 403]),
        // The fixture stores no policy: allowed roles learn there is none.
        RouteCase(.get, "/api/v1/mqtt/policies/{scope}", path: { _ in "/api/v1/mqtt/policies/model:cam" }, [404, 404, 404, 403, 403]),
        RouteCase(.delete, "/api/v1/mqtt/policies/{scope}", path: { _ in "/api/v1/mqtt/policies/model:cam" }, [404, 403, 404, 403, 403]),
        RouteCase(.get, "/api/v1/tokens", [200, 403, 403, 403, 403]),
        RouteCase(.post, "/api/v1/tokens", body: { _ in #"{"role":"operator"}"# }, [201, 403, 403, 403, 403]),
        RouteCase(.delete, "/api/v1/tokens/{token}", path: { "/api/v1/tokens/\($0.spareTokenID)" }, [204, 403, 403, 403, 403]),
        RouteCase(.get, "/api/v1/audit", [200, 403, 200, 403, 403]),
        RouteCase(.get, "/api/v1/security-events", [200, 403, 200, 403, 403]),
        RouteCase(.get, "/metrics", [200, 403, 200, 403, 403]),
        RouteCase(.get, "/api/v1/openapi.json", [200, 200, 200, 200, 200]),
        // Revocation status is public: relying parties carry no token.
        RouteCase(.get, "/crl/issuing.crl", [200, 200, 200, 200, 200]),
        RouteCase(.get, "/crl/factory.crl", [200, 200, 200, 200, 200]),
        RouteCase(.get, "/crl/root.crl", [200, 200, 200, 200, 200]),
        RouteCase(.post, "/ocsp", body: { _ in "not an OCSP request" }, contentType: "application/ocsp-request", [200, 200, 200, 200, 200]),
        RouteCase(.get, "/ocsp/{request}", path: { _ in "/ocsp/MAA%3D" }, [200, 200, 200, 200, 200]),
    ]

    /// Routes every caller may use without a token.
    static let publicRoutes: Set<String> = [
        ManagementAPI.openAPIPath, "/crl/issuing.crl", "/crl/factory.crl", "/crl/root.crl", "/ocsp", "/ocsp/{request}",
    ]

    @Test(arguments: cases)
    func everyRoleGetsTheAnswerTheRulesGive(_ route: RouteCase) async throws {
        for (index, role) in APIFixture.roles.enumerated() {
            let fixture = try await APIFixture.make(aliceState: route.aliceState)
            defer { fixture.close() }
            let before = try await fixture.snapshot()
            var fields = fixture.headers(role, json: false)
            fields[.contentType] = route.contentType
            let headers = fields
            let body = route.body(fixture).map { ByteBuffer(string: $0) }
            let path = route.path(fixture)
            let expected = route.expected[index]
            try await fixture.test { client in
                try await client.execute(uri: path, method: route.method, headers: headers, body: body) { response in
                    #expect(response.status.code == expected, "\(route) as \(role): \(response.body.text)")
                    if response.status.code >= 400 {
                        #expect((response.json["error"] as? [String: Any])?["message"] is String, "\(route) as \(role): no JSON error")
                    }
                }
            }
            if expected >= 400 {
                #expect(try await fixture.snapshot() == before, "\(route) as \(role) changed the registry")
            }
        }
    }

    @Test func everyRouteNeedsAToken() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let before = try await fixture.snapshot()
        var api = fixture.api
        api.authenticationLimiter = AttemptLimiter(.init(maximumFailures: 10_000, window: 60))
        for route in Self.cases where !Self.publicRoutes.contains(route.route) {
            for authorization in [
                nil, "Bearer fwt_0000000000000000_nope", "Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer \(String(repeating: "x", count: 600))",
            ] {
                var fields: HTTPFields = [.contentType: route.contentType]
                if let authorization { fields[.authorization] = authorization }
                let headers = fields
                let body = route.body(fixture).map { ByteBuffer(string: $0) }
                let path = route.path(fixture)
                try await fixture.test(api: api) { client in
                    try await client.execute(uri: path, method: route.method, headers: headers, body: body) { response in
                        #expect(response.status == .unauthorized, "\(route) with \(authorization ?? "no token")")
                        #expect(response.headers[.wwwAuthenticate] != nil)
                    }
                }
            }
        }
        #expect(try await fixture.snapshot() == before)
    }

    /// An address that keeps presenting bad tokens is refused, whatever it presents next.
    @Test func repeatedBadTokensFromOneAddressGet429() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        var api = fixture.api
        api.authenticationLimiter = AttemptLimiter(.init(maximumFailures: 3, window: 3600))
        let statuses = try await fixture.test(api: api) { client in
            var statuses: [Int] = []
            for _ in 0..<5 {
                let status = try await client.execute(
                    uri: "/api/v1/devices", method: .get, headers: [.authorization: "Bearer fwt_0123456789abcdef_guess"]
                ) { response in
                    if response.status == .tooManyRequests { #expect(Int(response.headers[.retryAfter] ?? "") ?? 0 >= 1) }
                    return response.status.code
                }
                statuses.append(status)
            }
            return statuses
        }
        #expect(statuses == [401, 401, 401, 429, 429])
        // The limit is checked before the token: from that address even a valid token (or a
        // lucky guess) is refused until the window passes.
        let admin = fixture.headers("admin")
        let status = try await fixture.test(api: api) { client in
            try await client.execute(uri: "/api/v1/devices", method: .get, headers: admin) { $0.status.code }
        }
        #expect(status == 429)
    }

    @Test func aTokenWithTheRightIDButAWrongSecretIsRefused() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let real = try #require(fixture.tokens["admin"])
        let forged = String(real.dropLast(2)) + (real.hasSuffix("AA") ? "BB" : "AA")
        try await fixture.test { client in
            try await client.execute(uri: "/api/v1/devices", method: .get, headers: [.authorization: "Bearer \(forged)"]) { response in
                #expect(response.status == .unauthorized)
            }
        }
    }

    /// The OpenAPI document lists exactly the routes the router serves, with their methods, and
    /// the matrix above covers every one of them.
    @Test func theOpenAPIDocumentMatchesTheRouter() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        @Sendable func normalize(_ path: String) -> String {
            path.split(separator: "/").map { $0.hasPrefix("{") || $0.hasPrefix(":") || $0 == "**" ? "{}" : String($0) }.joined(separator: "/")
        }
        // The console's pages are HTML for browsers, not part of the API's document.
        let served = Set(
            fixture.api.router().routes.filter { !"\($0.path)".hasPrefix("/console") }.map { "\($0.method.rawValue) \(normalize("\($0.path)"))" })
        let documented = try await fixture.test { client in
            try await client.execute(uri: ManagementAPI.openAPIPath, method: .get) { response in
                #expect(response.status == .ok)
                let paths = try #require(response.json["paths"] as? [String: [String: Any]])
                #expect(response.json["openapi"] as? String == "3.1.0")
                var documented = Set<String>()
                for (path, operations) in paths {
                    for method in operations.keys where ["get", "post", "put", "patch", "delete"].contains(method) {
                        documented.insert("\(method.uppercased()) \(normalize(path))")
                    }
                }
                return documented
            }
        }
        #expect(served.count >= 28)
        #expect(served.subtracting(documented).isEmpty, "served but not documented: \(served.subtracting(documented).sorted())")
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served).sorted())")
        let tested = Set(Self.cases.map { "\($0.method.rawValue) \(normalize($0.route))" })
        #expect(served.subtracting(tested).isEmpty, "routes without a role test: \(served.subtracting(tested).sorted())")
    }

    /// An independent validator (openapi-spec-validator, from PyPI) accepts the document.
    @Test func theOpenAPIDocumentIsValidOpenAPI31() async throws {
        let check = try Tool("python3").run(["-c", "import openapi_spec_validator"])
        try #require(check.succeeded, "openapi-spec-validator is not installed (scripts/test.sh installs it)")
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let document = try await fixture.test { client in
            try await client.execute(uri: ManagementAPI.openAPIPath, method: .get) { $0.body.text }
        }
        try fixture.directory.write("openapi.json", document)
        let result = try Tool("python3").run(["-m", "openapi_spec_validator", fixture.directory.file("openapi.json")])
        #expect(result.succeeded, "\(result)")
    }
}
