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

/// Bad input of every kind gets a 4xx with a JSON error body, never a 500, and changes nothing.
@Suite struct BadInputTests {
    static let jsonRoutes: [(HTTPRequest.Method, String)] = [
        (.post, "/api/v1/devices"), (.post, "/api/v1/devices/D-ALICE/transfer"), (.post, "/api/v1/devices/D-ALICE/enrollment-tokens"),
        (.post, "/api/v1/claims"), (.post, "/api/v1/owners"), (.post, "/api/v1/groups"), (.post, "/api/v1/tokens"),
    ]

    /// Sends `requests` as admin (or `role`) and checks each answer is the expected 4xx with a JSON
    /// error, then that the registry is as it was.
    func expectRefused(
        _ requests: [(HTTPRequest.Method, String, String?, String)], role: String = "admin", statuses: Set<Int>? = nil,
        fixture: APIFixture
    ) async throws {
        let before = try await fixture.snapshot()
        var api = fixture.api
        api.importLimit = 4096
        for (method, path, body, contentType) in requests {
            var fields = fixture.headers(role, json: false)
            fields[.contentType] = contentType
            let headers = fields
            try await fixture.test(api: api) { client in
                try await client.execute(uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) {
                    response in
                    let code = response.status.code
                    #expect((400..<500).contains(code), "\(method) \(path) \(body?.prefix(60) ?? ""): \(code) \(response.body.text)")
                    if let statuses { #expect(statuses.contains(code), "\(method) \(path): \(code) \(response.body.text)") }
                    let error = response.json["error"] as? [String: Any]
                    #expect(error?["message"] is String && error?["status"] as? Int == code, "\(path): \(response.body.text)")
                }
            }
        }
        #expect(try await fixture.snapshot() == before, "a refused request changed the registry")
    }

    @Test func malformedJSONUnknownFieldsAndWrongTypesAre400() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let bodies = [
            "{", "[]", "\"device\"", "null", "42", "{\"id\": }", "{\"unknown\": 1}", "{\"id\": 1, \"model\": 2}",
            "{\"id\": \"X\", \"model\": \"m\", \"secret\": \"0123456789abcdef0\", \"isAdmin\": true}",
            "{\"to\": [\"carol\"]}", "{\"ttlSeconds\": \"soon\"}", "{\"role\": null}", "\u{0}\u{1}\u{2}",
            String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000),
        ]
        var requests: [(HTTPRequest.Method, String, String?, String)] = []
        for (method, path) in Self.jsonRoutes {
            for body in bodies { requests.append((method, path, body, "application/json")) }
            requests.append((method, path, "{}", "text/plain"))
        }
        try await expectRefused(requests, fixture: fixture)
    }

    @Test func semanticallyBadValuesAre4xx() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let requests: [(HTTPRequest.Method, String, String?, String)] = [
            (.post, "/api/v1/devices", #"{"id":"NEW-1","model":"cam"}"#, "application/json"),  // no proof
            (.post, "/api/v1/devices", #"{"id":"NEW-1","model":"cam","secret":"short"}"#, "application/json"),
            (.post, "/api/v1/devices", #"{"id":"NEW-1","model":"cam","secret":"0123456789abcdef0","keySHA256":"00"}"#, "application/json"),
            (.post, "/api/v1/devices", #"{"id":"NEW-1","model":"cam","keySHA256":"zz"}"#, "application/json"),
            (.post, "/api/v1/devices", #"{"id":"NEW 1","model":"cam","secret":"0123456789abcdef0"}"#, "application/json"),
            (.post, "/api/v1/devices", #"{"id":"D-ALICE","model":"cam","secret":"0123456789abcdef0"}"#, "application/json"),  // 409
            (.post, "/api/v1/devices", #"{"id":"NEW-1","model":"","secret":"0123456789abcdef0"}"#, "application/json"),
            (.post, "/api/v1/devices/D-ALICE/transfer", #"{"to":"nobody"}"#, "application/json"),  // 400: no such owner
            (.post, "/api/v1/devices/D-ALICE/transfer", #"{"to":"alice"}"#, "application/json"),  // already theirs
            (.post, "/api/v1/devices/D-ALICE/transfer", #"{"to":"x' OR '1'='1"}"#, "application/json"),
            (.post, "/api/v1/devices/D-ALICE/enrollment-tokens", #"{"ttlSeconds":5}"#, "application/json"),
            (.post, "/api/v1/devices/D-ALICE/enrollment-tokens", #"{"ttlSeconds":99999999}"#, "application/json"),
            (.post, "/api/v1/devices/D-ALICE/resume", nil, "application/json"),  // active → active: 409
            (.post, "/api/v1/owners", #"{"id":"alice"}"#, "application/json"),  // exists
            (.post, "/api/v1/owners", #"{"id":"a/b"}"#, "application/json"),
            (.post, "/api/v1/groups", #"{"name":"g","caCertificate":"not a certificate"}"#, "application/json"),
            (.post, "/api/v1/groups", #"{"name":"","caCertificate":"x"}"#, "application/json"),
            (.post, "/api/v1/tokens", #"{"role":"root"}"#, "application/json"),
            (.post, "/api/v1/tokens", #"{"role":"owner"}"#, "application/json"),  // owner token without owner
            (.post, "/api/v1/tokens", #"{"role":"admin","owner":"alice"}"#, "application/json"),
            (
                .post, "/api/v1/devices/import", "id,secret,key_sha256,model,metadata\nOK-1,0123456789abcdef0,,m,\nBAD ID,x,,m,\n",
                "text/csv"
            ),
            (.post, "/api/v1/devices/import", "not,a,header\n", "text/csv"),
            (.post, "/api/v1/devices/import", "id,secret,key_sha256,model,metadata\n", "application/json"),
            (.delete, "/api/v1/tokens/not-hex", nil, "application/json"),
            (.delete, "/api/v1/tokens/0000000000000000", nil, "application/json"),  // 404
            (.delete, "/api/v1/groups/zz", nil, "application/json"),
        ]
        try await expectRefused(requests, fixture: fixture)
    }

    @Test func oddIDsAndQueryValuesAre4xxNever500() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let ids = [
            "D%27--", "..%2F..%2Fetc", "%00", "a%20b", String(repeating: "A", count: 65), "%C3%9C", "%27%3BDROP%20TABLE%20devices%3B--",
            "-leading", "D-ALICE%0A", "*",
        ]
        var requests: [(HTTPRequest.Method, String, String?, String)] = []
        for id in ids {
            requests.append((.get, "/api/v1/devices/\(id)", nil, "application/json"))
            requests.append((.post, "/api/v1/devices/\(id)/revoke", nil, "application/json"))
            requests.append((.get, "/api/v1/owners/\(id)", nil, "application/json"))
        }
        for query in [
            "state=bogus", "limit=0", "limit=100000", "limit=abc", "after=..%2F", "owner=%27%20OR%201%3D1%20--", "colour=red",
            "model=" + String(repeating: "m", count: 200),
        ] {
            requests.append((.get, "/api/v1/devices?\(query)", nil, "application/json"))
        }
        requests.append((.get, "/api/v1/audit?after=-1", nil, "application/json"))
        requests.append((.get, "/api/v1/audit?after=9223372036854775807", nil, "application/json"))
        requests.append((.get, "/api/v1/audit?after=99999999999999999999", nil, "application/json"))
        requests.append((.get, "/api/v1/nowhere", nil, "application/json"))
        try await expectRefused(requests, fixture: fixture)
    }

    /// SQL metacharacters in a well-formed filter are data, not SQL: the answer is an empty page.
    @Test func sqlMetacharactersInFiltersMatchNothing() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let headers = fixture.headers("admin")
        try await fixture.test { client in
            try await client.execute(uri: "/api/v1/devices?model=%27%20OR%20%271%27%3D%271", method: .get, headers: headers) { response in
                #expect(response.status == .ok)
                #expect((response.json["devices"] as? [Any])?.isEmpty == true)
            }
        }
    }

    @Test func oversizedBodiesAre413() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let big = "{\"id\":\"" + String(repeating: "A", count: 70 * 1024) + "\"}"
        let csv = "id,secret,key_sha256,model,metadata\n" + (0..<200).map { "BIG-\($0),0123456789abcdef0123,,m," }.joined(separator: "\n")
        try await expectRefused(
            [(.post, "/api/v1/devices", big, "application/json"), (.post, "/api/v1/devices/import", csv, "text/csv")], statuses: [413],
            fixture: fixture)
    }

    /// Seeded random bytes at every POST route: always a 4xx, never a change.
    @Test func randomBodiesNeverCauseA500() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        var rng = SeededRandom(seed: 4)
        var requests: [(HTTPRequest.Method, String, String?, String)] = []
        for (method, path) in Self.jsonRoutes + [(.post, "/api/v1/devices/import")] {
            for _ in 0..<20 {
                let count = Int.random(in: 1..<400, using: &rng)
                var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if Bool.random(using: &rng) { bytes.insert(UInt8(ascii: "{"), at: 0) }
                let text = String(decoding: bytes, as: UTF8.self)
                requests.append((method, path, text, path.hasSuffix("import") ? "text/csv" : "application/json"))
            }
        }
        try await expectRefused(requests, fixture: fixture)
    }
}
