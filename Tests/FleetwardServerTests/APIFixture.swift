import Crypto
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
import FleetwardRegistrySQLite
import FleetwardServer
import FleetwardTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import HummingbirdTesting
import NIOCore
import Testing

/// A registry on SQLite in a temp directory, the management API over it, a token per role, and
/// a few known rows: device `D-ALICE` (owned by alice), `D-FREE` (unowned, with claim code
/// ``freeCode``), owners alice, bob, carol, an enrollment group and a spare admin token.
struct APIFixture {
    static let roles = ["admin", "manufacturer", "operator", "alice", "bob"]

    let directory: TemporaryDirectory
    let server: FleetServer
    let api: ManagementAPI
    let tokens: [String: String]
    let spareTokenID: String
    let groupID: String
    let freeCode: String
    let caPEM: String

    var store: any RegistryStore { server.store }

    /// A data directory with a CA made with the fewest PBKDF2 iterations, served by the same
    /// composition root as `serve`.
    static func makeServer(in directory: TemporaryDirectory) async throws -> FleetServer {
        let data = DataDirectory(path: directory.file("data"))
        let passphrase = Passphrase("api-fixture-passphrase")
        _ = try CAHierarchy.create(
            in: data, configuration: AuthorityConfiguration(kdfIterations: PBES2.minimumIterations), passphrase: passphrase)
        var configuration = ServerConfiguration(directory: data, passphrase: passphrase, logger: Logger(label: "test"))
        configuration.claimCodeIterations = ClaimCodes.minimumIterations
        return try await FleetServer.make(configuration)
    }

    /// - Parameter aliceState: the state `D-ALICE` starts in.
    static func make(aliceState: DeviceState = .active) async throws -> APIFixture {
        let directory = try TemporaryDirectory()
        let server = try await makeServer(in: directory)
        let registrar = server.registrar
        let hasher = server.hasher
        let now = Date()
        var tokens: [String: String] = [:]
        for (name, role, owner) in [
            ("admin", Role.admin, nil), ("manufacturer", .manufacturer, nil), ("operator", .operator, nil),
            ("alice", .owner, "alice"), ("bob", .owner, "bob"),
        ] as [(String, Role, String?)] {
            let created = try APITokens.make(role: role, owner: owner, hasher: hasher)
            try await registrar.createAPIToken(created.record, by: .console, at: now)
            tokens[name] = created.token
        }
        let spare = try APITokens.make(role: .admin, owner: nil, hasher: hasher)
        try await registrar.createAPIToken(spare.record, by: .console, at: now)
        try await registrar.createOwner(try Owner(id: "carol", createdAt: now), by: .console, at: now)
        try await registrar.register(
            Device(
                id: try DeviceID("D-ALICE"), state: aliceState, owner: "alice", model: "sensor",
                proof: .secret(hmac: hasher.hash(Array("s".utf8))),
                createdAt: now), by: .console, at: now)
        try await registrar.register(
            Device(id: try DeviceID("D-FREE"), model: "sensor", proof: .secret(hmac: [1]), createdAt: now), by: .console, at: now)
        try await registrar.recordCertificates(
            [
                CertificateRecord(
                    serial: "4a01", deviceID: try DeviceID("D-ALICE"), profile: "device", owner: "alice", notBefore: now,
                    notAfter: now.addingTimeInterval(86_400), sha256: String(repeating: "ab", count: 32), issuedAt: now)
            ],
            by: .console, at: now)
        let freeCode = ClaimCodes.generate()
        try await registrar.setClaimCode(
            try ClaimCodes.record(for: freeCode, device: try DeviceID("D-FREE"), iterations: ClaimCodes.minimumIterations), by: .console,
            at: now)
        let pki = try TestPKI()
        let caPEM = PEM.encode(try TestPKI.derBytes(pki.factory), label: "CERTIFICATE")
        let group = try EnrollmentGroups.make(name: "acme", caCertificate: Array(caPEM.utf8), autoApprove: true)
        try await registrar.createGroup(group, by: .console, at: now)
        let otherCA = PEM.encode(try TestPKI.derBytes(pki.issuing), label: "CERTIFICATE")
        return APIFixture(
            directory: directory, server: server, api: server.api, tokens: tokens, spareTokenID: spare.record.id, groupID: group.id,
            freeCode: freeCode, caPEM: otherCA)
    }

    func close() { directory.remove() }

    /// Runs `body` against the router in process.
    func test<Value: Sendable>(
        api: ManagementAPI? = nil, _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Value
    ) async throws -> Value {
        let application = Application(router: (api ?? self.api).router())
        return try await application.test(.router) { client in try await body(client) }
    }

    func headers(_ role: String?, json: Bool = true) -> HTTPFields {
        var fields: HTTPFields = [:]
        if let role { fields[.authorization] = "Bearer \(tokens[role] ?? role)" }
        if json { fields[.contentType] = "application/json" }
        return fields
    }

    /// Rows that every refused request must leave as they were.
    func snapshot() async throws -> String {
        let devices = try await store.devices(matching: DeviceFilter(), after: nil, limit: 1000)
        let audit = try await store.auditEntries(from: 1, limit: 10_000)
        return "\(devices.map { "\($0.id)|\($0.state)|\($0.owner ?? "-")" })|audit:\(audit.count)"
    }
}

extension ByteBuffer {
    var text: String { String(buffer: self) }
}

extension TestResponse {
    /// The JSON body as a dictionary (empty when it is not one).
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    }
}
