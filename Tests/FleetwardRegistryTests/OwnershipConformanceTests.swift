import FleetwardPKI
import FleetwardRegistry
import FleetwardTestSupport
import Foundation
import FleetwardRegistryPostgres
import FleetwardRegistrySQLite
import Testing

/// Owners, transfers, claim codes, enrollment tokens, groups and token management: the same
/// behaviour on every store.
@Suite(.tags(.database)) struct OwnershipConformanceTests {
    static let now = Date(timeIntervalSince1970: 1_767_225_600)
    let admin = Actor.console
    let alice = Actor(role: .owner, name: "t-alice", owner: "alice")
    let bob = Actor(role: .owner, name: "t-bob", owner: "bob")

    func device(_ id: String, owner: String? = nil) throws -> Device {
        Device(id: try DeviceID(id), owner: owner, model: "sensor", proof: .secret(hmac: [1]), createdAt: Self.now)
    }

    @Test(arguments: StoreKind.underTest)
    func ownersAreCreatedListedAndUnique(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.insert(try Owner(id: "bob", name: "Bob B", createdAt: Self.now), by: admin, at: Self.now)
        try await store.insert(try Owner(id: "alice", createdAt: Self.now), by: admin, at: Self.now)
        await #expect(throws: RegistryError(.duplicate, "")) {
            try await store.insert(try Owner(id: "bob", createdAt: Self.now), by: admin, at: Self.now)
        }
        #expect(try await store.owner("bob")?.name == "Bob B")
        #expect(try await store.owner("nobody") == nil)
        #expect(try await store.owners(after: nil, limit: 10).map(\.id) == ["alice", "bob"])
        #expect(try await store.owners(after: "alice", limit: 10).map(\.id) == ["bob"])
        #expect(throws: RegistryError(.invalidInput, "")) { try Owner(id: "bob'; DROP TABLE owners; --", createdAt: Self.now) }
        #expect(try await store.verifyAudit().isIntact)
    }

    @Test(arguments: StoreKind.underTest)
    func ownerTokensRegisterTheirOwner(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let token = APITokenRecord(id: "0011", secretHMAC: [9], role: .owner, owner: "carol", createdAt: Self.now, expiresAt: nil)
        try await subject.store.insert(token, by: admin, at: Self.now)
        #expect(try await subject.store.owner("carol") != nil)
        #expect(try await subject.store.apiTokens().map(\.id) == ["0011"])
        try await subject.store.revokeAPIToken("0011", by: admin, at: Self.now)
        #expect(try await subject.store.apiToken(id: "0011") == nil)
        #expect(try await subject.store.apiTokens().isEmpty)
        await #expect(throws: RegistryError(.notFound, "")) { try await subject.store.revokeAPIToken("0011", by: admin, at: Self.now) }
        let actions = try await subject.store.auditEntries(from: 1, limit: 10).map(\.action)
        #expect(actions == ["owner.create", "token.create", "token.revoke"])
    }

    @Test(arguments: StoreKind.underTest)
    func claimBindsOnceWithTheRightCode(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        // A manufacturer sets codes only on the devices it registered.
        try await store.insert(try device("C-1"), by: Actor(role: .manufacturer, name: "m"), at: Self.now)
        let code = ClaimCodes.generate()
        let record = try ClaimCodes.record(for: code, device: try DeviceID("C-1"), iterations: ClaimCodes.minimumIterations)
        try await store.setClaimCode(record, by: Actor(role: .manufacturer, name: "m"), at: Self.now)
        let stored = try #require(try await store.claimCode(for: try DeviceID("C-1")))
        #expect(stored.hash == record.hash && stored.claimedBy == nil)
        #expect(ClaimCodes.matches(code.lowercased(), stored))
        #expect(!ClaimCodes.matches("0000-0000-0000", stored))

        // Only an owner claims, and only with the hash that was checked.
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.claim(try DeviceID("C-1"), verifiedHash: stored.hash, by: admin, at: Self.now)
        }
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.claim(try DeviceID("C-1"), verifiedHash: [0, 1], by: alice, at: Self.now)
        }
        let claimed = try await store.claim(try DeviceID("C-1"), verifiedHash: stored.hash, by: alice, at: Self.now)
        #expect(claimed.owner == "alice")
        #expect(try await store.owner("alice") != nil)
        #expect(try await store.claimCode(for: try DeviceID("C-1"))?.claimedBy == "alice")
        // A second claim, by anyone, fails; the code cannot be reset on an owned device.
        await #expect(throws: RegistryError(.duplicate, "")) {
            _ = try await store.claim(try DeviceID("C-1"), verifiedHash: stored.hash, by: bob, at: Self.now)
        }
        await #expect(throws: RegistryError(.duplicate, "")) { try await store.setClaimCode(record, by: admin, at: Self.now) }
        #expect(try await store.device(try DeviceID("C-1"))?.owner == "alice")
        #expect(try await store.verifyAudit().isIntact)
    }

    @Test(arguments: StoreKind.underTest)
    func transferNeedsTheCurrentOwner(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.insert(try device("T-1", owner: "alice"), by: admin, at: Self.now)
        try await store.insert(try Owner(id: "alice", createdAt: Self.now), by: admin, at: Self.now)
        try await store.insert(try Owner(id: "bob", createdAt: Self.now), by: admin, at: Self.now)
        let id = try DeviceID("T-1")
        // Another owner is told the device does not exist, so IDs cannot be probed.
        await #expect(throws: RegistryError(.notFound, "")) { _ = try await store.transfer(id, to: "bob", by: bob, at: Self.now) }
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.transfer(id, to: "bob", by: Actor(role: .operator, name: "op"), at: Self.now)
        }
        // An owner that does not exist is bad input (400), not a missing device.
        await #expect(throws: RegistryError(.invalidInput, "")) { _ = try await store.transfer(id, to: "zed", by: alice, at: Self.now) }
        #expect(try await store.transfer(id, to: "bob", by: alice, at: Self.now).owner == "bob")
        // Alice no longer owns it: to her it does not exist.
        await #expect(throws: RegistryError(.notFound, "")) { _ = try await store.transfer(id, to: "alice", by: alice, at: Self.now) }
        _ = try await store.apply(.reportStolen, to: id, by: bob, at: Self.now)
        await #expect(throws: RegistryError(.illegalTransition, "")) {
            _ = try await store.transfer(id, to: "alice", by: admin, at: Self.now)
        }
        let last = try #require(try await store.auditEntries(from: 1, limit: 100).last(where: { $0.action == "device.transfer" }))
        #expect(last.before?.contains("\"alice\"") == true && last.after?.contains("\"bob\"") == true)
    }

    @Test(arguments: StoreKind.underTest)
    func enrollmentTokensAreSingleUseAndExpire(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.insert(try device("E-1", owner: "alice"), by: admin, at: Self.now)
        try await store.insert(try device("E-2"), by: admin, at: Self.now)
        let id = try DeviceID("E-1")
        let token = EnrollmentTokenRecord(secretHMAC: [7, 7], deviceID: id, owner: "alice", expiresAt: Self.now.addingTimeInterval(600))
        try await store.insert(token, by: alice, at: Self.now)
        await #expect(throws: RegistryError(.notFound, "")) {
            try await store.insert(
                EnrollmentTokenRecord(secretHMAC: [8], deviceID: try DeviceID("NOPE"), owner: nil, expiresAt: Self.now), by: admin,
                at: Self.now)
        }
        // Wrong device, wrong secret, then after expiry: refused.
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.redeemEnrollmentToken(secretHMAC: [7, 7], for: try DeviceID("E-2"), at: Self.now)
        }
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.redeemEnrollmentToken(secretHMAC: [7, 8], for: id, at: Self.now)
        }
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.redeemEnrollmentToken(secretHMAC: [7, 7], for: id, at: Self.now.addingTimeInterval(601))
        }
        let redeemed = try await store.redeemEnrollmentToken(secretHMAC: [7, 7], for: id, at: Self.now.addingTimeInterval(5))
        #expect(redeemed.owner == "alice")
        await #expect(throws: RegistryError(.forbidden, "")) {
            _ = try await store.redeemEnrollmentToken(secretHMAC: [7, 7], for: id, at: Self.now.addingTimeInterval(6))
        }
        #expect(try await store.verifyAudit().isIntact)
    }

    @Test(arguments: StoreKind.underTest)
    func enrollmentGroupsAreUniqueByNameAndCA(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        let group = EnrollmentGroup(
            id: "g1", name: "acme", caCertificateDER: [0x30, 0x00], caSHA256: "aa", autoApprove: false, createdAt: Self.now)
        try await store.insert(group, by: admin, at: Self.now)
        var sameName = group
        sameName.id = "g2"
        sameName.caSHA256 = "bb"
        await #expect(throws: RegistryError(.duplicate, "")) { try await store.insert(sameName, by: admin, at: Self.now) }
        var sameCA = group
        sameCA.id = "g3"
        sameCA.name = "other"
        await #expect(throws: RegistryError(.duplicate, "")) { try await store.insert(sameCA, by: admin, at: Self.now) }
        #expect(try await store.enrollmentGroup("g1") == group)
        #expect(try await store.enrollmentGroups() == [group])
        try await store.deleteEnrollmentGroup("g1", by: admin, at: Self.now)
        #expect(try await store.enrollmentGroups().isEmpty)
        await #expect(throws: RegistryError(.notFound, "")) { try await store.deleteEnrollmentGroup("g1", by: admin, at: Self.now) }
        let actions = try await store.auditEntries(from: 1, limit: 10).map(\.action)
        #expect(actions == ["group.create", "group.delete"])
        #expect(try await store.verifyAudit().isIntact)
    }

    @Test(arguments: StoreKind.underTest)
    func mqttPoliciesAreSetReplacedResolvedAndRemovedWithAudit(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        let registrar = Registrar(store: store)
        let model = MQTTPolicyRecord(scope: .model("sensor"), document: #"{"statements":[1]}"#, updatedAt: Self.now)
        try await registrar.setMQTTPolicy(model, by: admin, at: Self.now)
        var replaced = model
        replaced.document = #"{"statements":[2]}"#
        try await registrar.setMQTTPolicy(replaced, by: admin, at: Self.now)
        #expect(try await store.mqttPolicy(.model("sensor")) == replaced)
        // A group's policy needs the group, and wins over the model's for the group's devices.
        let forGroup = MQTTPolicyRecord(scope: .group("g1"), document: #"{"statements":[3]}"#, updatedAt: Self.now)
        await #expect(throws: RegistryError(.notFound, "")) { try await registrar.setMQTTPolicy(forGroup, by: admin, at: Self.now) }
        try await store.insert(
            EnrollmentGroup(id: "g1", name: "acme", caCertificateDER: [0x30, 0x00], caSHA256: "aa", autoApprove: false, createdAt: Self.now),
            by: admin, at: Self.now)
        try await registrar.setMQTTPolicy(forGroup, by: admin, at: Self.now)
        #expect(try await store.mqttPolicies().map(\.scope) == [.group("g1"), .model("sensor")])
        var member = try device("GRP-1")
        member.group = "g1"
        #expect(try await store.mqttPolicy(for: member) == forGroup)
        #expect(try await store.mqttPolicy(for: try device("LONE-1")) == replaced)
        var other = try device("CAM-1")
        other.model = "camera"
        #expect(try await store.mqttPolicy(for: other) == nil)
        try await registrar.deleteMQTTPolicy(.group("g1"), by: admin, at: Self.now)
        #expect(try await store.mqttPolicy(for: member) == replaced)
        await #expect(throws: RegistryError(.notFound, "")) { try await registrar.deleteMQTTPolicy(.group("g1"), by: admin, at: Self.now) }
        let entries = try await store.auditEntries(from: 1, limit: 20).filter { $0.action.hasPrefix("mqtt-policy.") }
        #expect(entries.map(\.action) == ["mqtt-policy.set", "mqtt-policy.set", "mqtt-policy.set", "mqtt-policy.delete"])
        #expect(entries.map(\.subject) == ["mqtt-policy:model:sensor", "mqtt-policy:model:sensor", "mqtt-policy:group:g1", "mqtt-policy:group:g1"])
        #expect(entries[1].before == model.document && entries[1].after == replaced.document)
        #expect(try await store.verifyAudit().isIntact)
    }

    /// Two processes on one database (the console while `serve` runs): each sees the other's
    /// writes at once and can write after reading.
    @Test(arguments: StoreKind.underTest)
    func aSecondStoreOnTheSameDatabaseSeesWritesAtOnce(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let other: any RegistryStore
        switch kind {
        case .sqlite: other = try SQLiteRegistryStore(path: subject.directory.file("registry.sqlite"))
        case .postgres: other = try PostgresRegistryStore(url: subject.database!.url)
        }
        defer { (other as? PostgresRegistryStore)?.shutdown() }
        try await subject.store.insert(try device("S-1"), by: admin, at: Self.now)
        try await subject.store.insert(try device("S-2"), by: admin, at: Self.now)
        let token = APITokenRecord(id: "00aa", secretHMAC: [1], role: .admin, owner: nil, createdAt: Self.now, expiresAt: nil)
        try await subject.store.insert(token, by: admin, at: Self.now)
        // Reads that return after one row (as every API request's token lookup does) …
        #expect(try await subject.store.device(try DeviceID("S-1"))?.state == .allowed)
        #expect(try await subject.store.apiToken(id: "00aa") != nil)
        // … must not pin the connection to the snapshot they read.
        _ = try await other.apply(.revoke, to: try DeviceID("S-1"), by: admin, at: Self.now)
        #expect(try await subject.store.device(try DeviceID("S-1"))?.state == .revoked)
        _ = try await subject.store.apply(.revoke, to: try DeviceID("S-2"), by: admin, at: Self.now)
        #expect(try await other.device(try DeviceID("S-2"))?.state == .revoked)
        #expect(try await other.verifyAudit().isIntact)
    }

    @Test(arguments: StoreKind.underTest)
    func certificatesAreRecordedAndRevokedWithTheirDevice(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.insert(try device("K-1", owner: "alice"), by: admin, at: Self.now)
        let id = try DeviceID("K-1")
        func record(_ serial: String, _ device: DeviceID?, issued: TimeInterval) -> CertificateRecord {
            CertificateRecord(
                serial: serial, deviceID: device, profile: "device", owner: "alice", notBefore: Self.now,
                notAfter: Self.now.addingTimeInterval(86_400), sha256: String(repeating: String(serial.prefix(2)), count: 32),
                issuedAt: Self.now.addingTimeInterval(issued))
        }
        try await store.insert(record("4a01", id, issued: 1), by: admin, at: Self.now)
        try await store.insert(record("4b02", id, issued: 2), by: admin, at: Self.now)
        try await store.insert(record("4c03", nil, issued: 3), by: admin, at: Self.now)
        await #expect(throws: RegistryError(.duplicate, "")) {
            try await store.insert(record("4a01", id, issued: 4), by: admin, at: Self.now)
        }
        await #expect(throws: RegistryError(.notFound, "")) {
            try await store.insert(record("4d04", try DeviceID("NOPE"), issued: 5), by: admin, at: Self.now)
        }
        #expect(try await store.certificates(for: id).map(\.serial) == ["4b02", "4a01"])
        // One certificate revoked on its own; unknown and repeated revocations refused.
        let single = try await store.revokeCertificate(serial: "4c03", reason: .superseded, by: admin, at: Self.now)
        #expect(single.revocation?.reason == 4)
        await #expect(throws: RegistryError(.duplicate, "")) {
            _ = try await store.revokeCertificate(serial: "4c03", reason: .keyCompromise, by: admin, at: Self.now)
        }
        await #expect(throws: RegistryError(.notFound, "")) {
            _ = try await store.revokeCertificate(serial: "ffff", reason: .keyCompromise, by: admin, at: Self.now)
        }
        #expect(try await store.certificates(for: id).allSatisfy { $0.revocation == nil })
        _ = try await store.apply(.reportStolen, to: id, by: Actor(role: .owner, name: "t", owner: "alice"), at: Self.now)
        let revoked = try await store.certificates(for: id)
        #expect(revoked.count == 2 && revoked.allSatisfy { $0.revocation?.reason == 1 }, "keyCompromise for a stolen device")
        // What a CRL lists: every revoked certificate of the CA's profiles, by serial.
        #expect(try await store.revocationCount() == 3)
        #expect(try await store.revokedCertificates(profiles: ["device"]).map(\.serialHex) == ["4a01", "4b02", "4c03"])
        #expect(try await store.revokedCertificates(profiles: ["device"]).map(\.reasonCode) == [1, 1, 4])
        #expect(try await store.revokedCertificates(profiles: ["birth"]) == [])
        #expect(try await store.revokedCertificates(profiles: []) == [])
        let actions = try await store.auditEntries(from: 1, limit: 10).map(\.action)
        #expect(
            actions == [
                "device.create", "certificate.issue", "certificate.issue", "certificate.issue", "certificate.revoke",
                "device.report-stolen",
            ])
        #expect(try await store.verifyAudit().isIntact)
    }

    /// A theft report cannot be used to lift a suspension or skip an approval: recovery returns
    /// the device to the state it was stolen from.
    @Test(arguments: StoreKind.underTest)
    func recoveryReturnsToTheStateBeforeTheTheft(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        let operatorActor = Actor(role: .operator, name: "op")
        try await store.insert(try device("R-1", owner: "alice"), by: admin, at: Self.now)
        let id = try DeviceID("R-1")
        _ = try await store.apply(.activate, to: id, by: operatorActor, at: Self.now)
        _ = try await store.apply(.suspend, to: id, by: operatorActor, at: Self.now)
        #expect(try await store.apply(.reportStolen, to: id, by: alice, at: Self.now).state == .stolen)
        #expect(try await store.apply(.recover, to: id, by: alice, at: Self.now).state == .suspended)
        // A second theft and recovery from active goes back to active.
        _ = try await store.apply(.resume, to: id, by: operatorActor, at: Self.now)
        _ = try await store.apply(.reportStolen, to: id, by: alice, at: Self.now)
        #expect(try await store.apply(.recover, to: id, by: alice, at: Self.now).state == .active)
        #expect(try await store.verifyAudit().isIntact)
    }

    /// A refused enrollment leaves its one-time token unspent.
    @Test(arguments: StoreKind.underTest)
    func aRefusedEnrollmentDoesNotSpendItsToken(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.insert(try device("N-1", owner: "alice"), by: admin, at: Self.now)
        let id = try DeviceID("N-1")
        let token = EnrollmentTokenRecord(secretHMAC: [5, 5], deviceID: id, owner: "alice", expiresAt: Self.now.addingTimeInterval(600))
        try await store.insert(token, by: alice, at: Self.now)
        _ = try await store.apply(.reportStolen, to: id, by: alice, at: Self.now)
        func record(_ serial: String) throws -> EnrollmentRecord {
            EnrollmentRecord(
                device: try device("N-1"), acceptedStates: [.allowed, .active], bindOwner: "alice",
                certificate: CertificateRecord(
                    serial: serial, deviceID: id, profile: "device", owner: nil, notBefore: Self.now, notAfter: Self.now,
                    sha256: serial + String(repeating: "0", count: 60), issuedAt: Self.now),
                method: "token", tokenHMAC: [5, 5])
        }
        await #expect(throws: RegistryError(.forbidden, "")) { _ = try await store.enroll(try record("5a01"), by: admin, at: Self.now) }
        #expect(
            try await store.enrollmentToken(secretHMAC: [5, 5], for: id, at: Self.now) != nil, "the refused enrollment spent the token")
        _ = try await store.apply(.recover, to: id, by: alice, at: Self.now)
        let enrolled = try await store.enroll(try record("5a02"), by: admin, at: Self.now)
        #expect(enrolled.state == .active && enrolled.owner == "alice")
        #expect(try await store.enrollmentToken(secretHMAC: [5, 5], for: id, at: Self.now) == nil, "spent by the enrollment")
        await #expect(throws: RegistryError(.forbidden, "")) { _ = try await store.enroll(try record("5a03"), by: admin, at: Self.now) }
        #expect(try await store.verifyAudit().isIntact)
    }

    /// Group commit: one transaction, a refused enrollment rolled back alone.
    @Test(arguments: StoreKind.underTest)
    func aBatchOfEnrollmentsCommitsTogetherAndRefusesOneAlone(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        for id in ["B-1", "B-2", "B-3"] { try await store.insert(try device(id), by: admin, at: Self.now) }
        _ = try await store.apply(.revoke, to: try DeviceID("B-2"), by: admin, at: Self.now)
        let before = try await store.auditEntries(from: 1, limit: 100).count
        let batch = try ["B-1", "B-2", "B-3", "B-1"].enumerated().map { index, id in
            (
                record: EnrollmentRecord(
                    device: try device(id), acceptedStates: [.allowed],
                    certificate: CertificateRecord(
                        serial: "6b0\(index)", deviceID: try DeviceID(id), profile: "device", owner: nil, notBefore: Self.now,
                        notAfter: Self.now, sha256: "6b0\(index)" + String(repeating: "0", count: 60), issuedAt: Self.now),
                    method: "secret"),
                actor: Actor(role: .operator, name: "est")
            )
        }
        let results = try await store.enroll(batch: batch, at: Self.now)
        #expect(results.count == 4)
        #expect((try? results[0].get())?.state == .active)
        #expect(results[1].isFailure, "B-2 is revoked")
        #expect((try? results[2].get())?.state == .active)
        #expect(results[3].isFailure, "B-1 is already active: the second enrollment in the batch is refused")
        #expect(try await store.certificates(for: try DeviceID("B-1")).map(\.serial) == ["6b00"])
        #expect(try await store.certificates(for: try DeviceID("B-2")).isEmpty)
        #expect(try await store.auditEntries(from: 1, limit: 100).count == before + 2)
        #expect(try await store.verifyAudit().isIntact)
    }

    /// The SQLite write-ahead log is checkpointed and restarted under a stream of batched
    /// enrollments (each reading the device first), instead of growing with every commit.
    @Test func theSQLiteLogStaysBoundedUnderAStreamOfEnrollments() async throws {
        let subject = try await StoreUnderTest(.sqlite)
        defer { subject.close() }
        let store = subject.store
        let ids = (1...3000).map { "W-\($0)" }
        _ = try await store.importBatch(try ids.map { try device($0) }, source: "test", lines: 1...3000, by: admin, at: Self.now)
        var enrolled = 0
        for start in stride(from: 0, to: ids.count, by: 10) {
            let batch = try ids[start..<start + 10].map { id in
                let serial = "7c" + String(id.dropFirst(2))
                return (
                    record: EnrollmentRecord(
                        device: try device(id), acceptedStates: [.allowed],
                        certificate: CertificateRecord(
                            serial: serial, deviceID: try DeviceID(id), profile: "device", owner: nil, notBefore: Self.now,
                            notAfter: Self.now, sha256: serial + String(repeating: "0", count: 64 - serial.count), issuedAt: Self.now),
                        method: "secret"),
                    actor: Actor(role: .operator, name: "est")
                )
            }
            for result in try await store.enroll(batch: batch, at: Self.now) where (try? result.get()) != nil { enrolled += 1 }
            _ = try await store.device(try DeviceID(ids[start]))
        }
        #expect(enrolled == 3000)
        let log = try FileManager.default.attributesOfItem(atPath: subject.directory.file("registry.sqlite-wal"))[.size] as? Int ?? -1
        // A checkpoint every 1,000 pages of 4 KiB: the log stays near 4 MiB (18 MB without them).
        #expect(log > 0 && log < 8 << 20, "the write-ahead log is \(log) bytes")
    }
}

extension Result {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}
