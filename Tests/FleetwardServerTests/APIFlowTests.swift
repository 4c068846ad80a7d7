import FleetwardPKI
import FleetwardRegistry
import FleetwardRegistrySQLite
import FleetwardServer
import FleetwardTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// The management API's behaviour beyond who may call what.
@Suite struct APIFlowTests {
    @Test func listingPagesWithACursorAndFilters() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let csv =
            "id,secret,key_sha256,model,metadata\n" + (1...7).map { "P-\($0),0123456789abcdef012\($0),,cam,site=x" }.joined(separator: "\n")
        let admin = fixture.headers("admin")
        let ids = try await fixture.test { client in
            try await client.execute(
                uri: "/api/v1/devices/import", method: .post, headers: [.authorization: admin[.authorization]!, .contentType: "text/csv"],
                body: ByteBuffer(string: csv)
            ) { response in
                #expect(response.status == .ok)
                #expect(response.json["inserted"] as? Int == 7)
            }
            var seen: [String] = []
            var cursor: String?
            for _ in 0..<10 {
                let uri = "/api/v1/devices?model=cam&limit=3" + (cursor.map { "&after=\($0)" } ?? "")
                let page = try await client.execute(uri: uri, method: .get, headers: admin) { $0.json }
                seen += ((page["devices"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
                cursor = page["next"] as? String
                if cursor == nil { break }
            }
            return seen
        }
        #expect(ids == (1...7).map { "P-\($0)" })
    }

    @Test func anOwnerListsOnlyTheirOwnDevices() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        try await fixture.test { client in
            try await client.execute(uri: "/api/v1/devices", method: .get, headers: fixture.headers("alice")) { response in
                let ids = (response.json["devices"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
                #expect(ids == ["D-ALICE"])
            }
            try await client.execute(uri: "/api/v1/devices?owner=bob", method: .get, headers: fixture.headers("alice")) { response in
                #expect(response.status == .forbidden)
            }
            try await client.execute(uri: "/api/v1/devices", method: .get, headers: fixture.headers("bob")) { response in
                #expect((response.json["devices"] as? [Any])?.isEmpty == true)
            }
        }
    }

    @Test func aClaimBindsTheDeviceAndTheCodeWorksOnce() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let body = #"{"device":"D-FREE","claimCode":"\#(fixture.freeCode.lowercased().replacingOccurrences(of: "-", with: " "))"}"#
        try await fixture.test { client in
            try await client.execute(
                uri: "/api/v1/claims", method: .post, headers: fixture.headers("alice"), body: ByteBuffer(string: body)
            ) {
                response in
                #expect(response.status == .ok, "\(response.body.text)")
                #expect(response.json["owner"] as? String == "alice")
            }
            try await client.execute(uri: "/api/v1/claims", method: .post, headers: fixture.headers("bob"), body: ByteBuffer(string: body))
            {
                response in
                #expect(response.status == .forbidden)
            }
            try await client.execute(uri: "/api/v1/devices/D-FREE", method: .get, headers: fixture.headers("bob")) { response in
                #expect(response.status == .notFound)
            }
        }
        let audit = try await fixture.store.auditEntries(from: 1, limit: 100)
        #expect(audit.contains { $0.action == "device.claim" && $0.subject == "device:D-FREE" && $0.actor.contains("alice") })
        #expect(!audit.contains { ($0.after ?? "").contains(fixture.freeCode) })
    }

    /// Guessing claim codes is slowed per device: after five misses even the right code waits.
    @Test func claimGuessesAreRateLimited() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let auditBefore = try await fixture.store.auditEntries(from: 1, limit: 1000).count
        let statuses = try await fixture.test { client in
            var statuses: [Int] = []
            for attempt in 0..<7 {
                let code = attempt == 6 ? fixture.freeCode : "0000-0000-000\(attempt)"
                let body = ByteBuffer(string: #"{"device":"D-FREE","claimCode":"\#(code)"}"#)
                statuses.append(
                    try await client.execute(uri: "/api/v1/claims", method: .post, headers: fixture.headers("bob"), body: body) {
                        $0.status.code
                    })
            }
            return statuses
        }
        #expect(statuses == [403, 403, 403, 403, 403, 429, 429])
        #expect(try await fixture.store.device(try DeviceID("D-FREE"))?.owner == nil)
        #expect(try await fixture.store.auditEntries(from: 1, limit: 1000).count == auditBefore)
    }

    @Test func enrollmentTokensAreShownOnceAndStoredHashed() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let token = try await fixture.test { client in
            try await client.execute(
                uri: "/api/v1/devices/D-ALICE/enrollment-tokens", method: .post, headers: fixture.headers("alice"),
                body: ByteBuffer(string: #"{"ttlSeconds":600}"#)
            ) { response in
                #expect(response.status == .created)
                return response.json["token"] as? String ?? ""
            }
        }
        #expect(token.hasPrefix("fwe_") && token.count > 40)
        let database = try fixture.directory.read("data/registry.sqlite") + ((try? fixture.directory.read("data/registry.sqlite-wal")) ?? [])
        #expect(!Data(database).contains(Data(token.utf8)), "the token is stored in the clear")
        #expect(!Data(database).contains(Data(token.dropFirst(4).utf8)))
    }

    @Test func aTransferMovesTheDeviceOutOfTheOldOwnersSight() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        try await fixture.test { client in
            try await client.execute(
                uri: "/api/v1/devices/D-ALICE/transfer", method: .post, headers: fixture.headers("alice"),
                body: ByteBuffer(string: #"{"to":"carol"}"#)
            ) { #expect($0.json["owner"] as? String == "carol") }
            try await client.execute(uri: "/api/v1/devices/D-ALICE", method: .get, headers: fixture.headers("alice")) {
                #expect($0.status == .notFound)
            }
            try await client.execute(uri: "/api/v1/devices/D-ALICE/report-stolen", method: .post, headers: fixture.headers("alice")) {
                #expect($0.status == .notFound)
            }
        }
    }

    @Test func theAuditLogIsReadableAndPaged() async throws {
        let fixture = try await APIFixture.make()
        defer { fixture.close() }
        let (first, second) = try await fixture.test { client in
            let first = try await client.execute(uri: "/api/v1/audit?limit=3", method: .get, headers: fixture.headers("operator")) {
                $0.json
            }
            let next = first["next"] as? Int ?? -1
            let second = try await client.execute(
                uri: "/api/v1/audit?limit=3&after=\(next)", method: .get, headers: fixture.headers("operator")
            ) {
                $0.json
            }
            return (
                (first["entries"] as? [[String: Any]])?.compactMap { $0["sequence"] as? Int } ?? [],
                (second["entries"] as? [[String: Any]])?.compactMap { $0["sequence"] as? Int } ?? []
            )
        }
        #expect(first == [1, 2, 3])
        #expect(second == [4, 5, 6])
    }
}
