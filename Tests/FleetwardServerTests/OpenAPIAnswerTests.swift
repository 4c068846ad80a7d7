import FleetwardServer
import FleetwardTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// What the server sends matches what its OpenAPI document says: each answer's status is
/// documented for its route and its JSON body validates against the documented schema (checked
/// by Python's `jsonschema`, JSON Schema 2020-12, not by our own code).
@Suite struct OpenAPIAnswerTests {
    struct Call: Sendable {
        var method: HTTPRequest.Method
        var route: String
        var path: String
        var role: String?
        var body: String?
        var contentType = "application/json"
    }

    @Test func answersOfTheMainRoutesMatchTheirSchemas() async throws {
        let check = try Tool("python3").run(["-c", "import jsonschema, referencing"])
        try #require(check.succeeded, "python3 needs jsonschema and referencing (pip install jsonschema)")
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let pem = fixture.caPEM.replacingOccurrences(of: "\n", with: "\\n")
        let calls: [Call] = [
            Call(method: .get, route: "/api/v1/devices", path: "/api/v1/devices", role: "admin"),
            Call(method: .get, route: "/api/v1/devices", path: "/api/v1/devices?limit=1", role: "admin"),
            Call(method: .get, route: "/api/v1/devices", path: "/api/v1/devices", role: nil),
            Call(method: .get, route: "/api/v1/devices", path: "/api/v1/devices?state=lost", role: "admin"),
            Call(
                method: .post, route: "/api/v1/devices", path: "/api/v1/devices", role: "manufacturer",
                body: #"{"id":"NEW-1","model":"cam","secret":"0123456789abcdef0123","metadata":{"site":"a"}}"#),
            Call(
                method: .post, route: "/api/v1/devices", path: "/api/v1/devices", role: "manufacturer",
                body: #"{"id":"NEW-1","model":"cam","secret":"0123456789abcdef0123"}"#),
            Call(
                method: .post, route: "/api/v1/devices/import", path: "/api/v1/devices/import", role: "admin",
                body: "id,secret,key_sha256,model,metadata\nNEW-2,0123456789abcdef0124,,cam,\n", contentType: "text/csv"),
            Call(method: .get, route: "/api/v1/devices/{id}", path: "/api/v1/devices/D-ALICE", role: "alice"),
            Call(method: .get, route: "/api/v1/devices/{id}", path: "/api/v1/devices/D-ALICE", role: "bob"),
            Call(method: .get, route: "/api/v1/devices/{id}/certificates", path: "/api/v1/devices/D-ALICE/certificates", role: "admin"),
            Call(method: .get, route: "/api/v1/devices/{id}/telemetry", path: "/api/v1/devices/D-ALICE/telemetry", role: "admin"),
            Call(
                method: .post, route: "/api/v1/claims", path: "/api/v1/claims", role: "bob",
                body: #"{"device":"D-FREE","claimCode":"\#(fixture.freeCode)"}"#),
            Call(method: .post, route: "/api/v1/devices/{id}/claim-code", path: "/api/v1/devices/NEW-1/claim-code", role: "manufacturer"),
            Call(method: .post, route: "/api/v1/devices/{id}/suspend", path: "/api/v1/devices/D-ALICE/suspend", role: "operator"),
            Call(method: .post, route: "/api/v1/devices/{id}/suspend", path: "/api/v1/devices/D-ALICE/suspend", role: "operator"),
            Call(
                method: .post, route: "/api/v1/devices/{id}/transfer", path: "/api/v1/devices/D-ALICE/transfer", role: "alice",
                body: #"{"to":"carol"}"#),
            Call(
                method: .post, route: "/api/v1/devices/{id}/enrollment-tokens", path: "/api/v1/devices/D-FREE/enrollment-tokens",
                role: "admin", body: #"{"ttlSeconds":600}"#),
            Call(
                method: .post, route: "/api/v1/certificates/{serial}/revoke", path: "/api/v1/certificates/4a01/revoke", role: "operator",
                body: #"{"reason":"superseded"}"#),
            Call(method: .get, route: "/api/v1/owners", path: "/api/v1/owners", role: "admin"),
            Call(method: .post, route: "/api/v1/owners", path: "/api/v1/owners", role: "admin", body: #"{"id":"dave","name":"Dave"}"#),
            Call(method: .get, route: "/api/v1/owners/{owner}", path: "/api/v1/owners/alice", role: "admin"),
            Call(method: .get, route: "/api/v1/groups", path: "/api/v1/groups", role: "admin"),
            Call(
                method: .post, route: "/api/v1/groups", path: "/api/v1/groups", role: "admin",
                body: #"{"name":"globex","caCertificate":"\#(pem)","autoApprove":false}"#),
            Call(method: .get, route: "/api/v1/groups/{group}", path: "/api/v1/groups/\(fixture.groupID)", role: "admin"),
            Call(method: .get, route: "/api/v1/tokens", path: "/api/v1/tokens", role: "admin"),
            Call(method: .post, route: "/api/v1/tokens", path: "/api/v1/tokens", role: "admin", body: #"{"role":"owner","owner":"erin"}"#),
            Call(method: .get, route: "/api/v1/audit", path: "/api/v1/audit?limit=5", role: "operator"),
            Call(method: .get, route: "/api/v1/audit", path: "/api/v1/audit", role: "manufacturer"),
        ]
        var answers: [[String: Any]] = []
        for call in calls {
            var headers = fixture.headers(call.role, json: false)
            headers[.contentType] = call.contentType
            let sent = headers
            let (status, body) = try await fixture.test { client in
                try await client.execute(
                    uri: call.path, method: call.method, headers: sent, body: call.body.map { ByteBuffer(string: $0) }
                ) { response in (Int(response.status.code), Data(response.body.readableBytesView)) }
            }
            let json = body.isEmpty ? NSNull() : try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed])
            answers.append(["method": call.method.rawValue, "route": call.route, "status": status, "body": json])
        }
        #expect(Set(answers.compactMap { $0["status"] as? Int }).isSuperset(of: [200, 201, 400, 401, 403, 404, 409]))
        try fixture.directory.write("answers.json", String(decoding: try JSONSerialization.data(withJSONObject: answers), as: UTF8.self))
        let document = try await fixture.test { client in
            try await client.execute(uri: ManagementAPI.openAPIPath, method: .get) { $0.body.text }
        }
        try fixture.directory.write("openapi.json", document)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/check_answers.py").path
        let result = try Tool("python3").run([script, fixture.directory.file("openapi.json"), fixture.directory.file("answers.json")])
        #expect(result.succeeded, "\(result.stdout)\(result.stderr)")
    }
}
