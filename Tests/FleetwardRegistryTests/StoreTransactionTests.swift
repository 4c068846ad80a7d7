import FleetwardPKI
import FleetwardRegistry
import FleetwardTestSupport
import Foundation
import Testing

/// The row operations every store offers inside a transaction, the same on SQLite and PostgreSQL:
/// all or nothing, savepoints that undo alone, inserts that report a taken key instead of failing.
@Suite(.tags(.database)) struct StoreTransactionTests {
    static let now = Date(timeIntervalSince1970: 1_767_225_600)

    struct Abort: Error {}

    func device(_ id: String) throws -> Device {
        Device(id: try DeviceID(id), model: "m", proof: .none, createdAt: Self.now)
    }

    @Test(arguments: StoreKind.underTest)
    func aTransactionThatThrowsLeavesNothing(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        await #expect(throws: Abort.self) {
            try await store.transaction(audited: true) { transaction in
                #expect(try await transaction.insertDevice(try device("X-1")))
                let entry = AuditEntry(following: nil, time: Self.now, actor: "t", action: "x", subject: "device:X-1", before: nil, after: nil)
                try await transaction.insertAuditEntry(entry)
                #expect(try await transaction.device(try DeviceID("X-1")) != nil, "a transaction reads its own writes")
                throw Abort()
            }
        }
        #expect(try await store.device(try DeviceID("X-1")) == nil)
        #expect(try await store.auditHead() == 0)
    }

    @Test(arguments: StoreKind.underTest)
    func aSavepointUndoesOnlyItsOwnWrites(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.transaction(audited: false) { transaction in
            #expect(try await transaction.insertDevice(try device("S-1")))
            await #expect(throws: Abort.self) {
                try await transaction.savepoint {
                    #expect(try await transaction.insertDevice(try device("S-2")))
                    throw Abort()
                }
            }
            try await transaction.savepoint {
                let inserted = try await transaction.insertDevice(try device("S-3"))
                #expect(inserted)
            }
        }
        let ids = try await store.devices(matching: DeviceFilter(), after: nil, limit: 10).map(\.id.rawValue)
        #expect(ids == ["S-1", "S-3"])
    }

    @Test(arguments: StoreKind.underTest)
    func insertsReportATakenKeyAndWriteNothing(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        try await store.transaction(audited: false) { transaction in
            #expect(try await transaction.insertDevice(try device("K-1")))
            var again = try device("K-1")
            again.model = "other"
            #expect(try await !transaction.insertDevice(again))
            #expect(try await transaction.insertDevices([try device("K-1"), try device("K-2")]) == 1)
            #expect(try await transaction.insertOwner(try Owner(id: "o", createdAt: Self.now)))
            #expect(try await !transaction.insertOwner(try Owner(id: "o", name: "Other", createdAt: Self.now)))
            let certificate = CertificateRecord(
                serial: "0a", deviceID: try DeviceID("K-1"), profile: "device", owner: nil, notBefore: Self.now, notAfter: Self.now,
                sha256: String(repeating: "0", count: 64), issuedAt: Self.now)
            #expect(try await transaction.insertCertificate(certificate))
            #expect(try await !transaction.insertCertificate(certificate))
            #expect(try await transaction.insertRevocation(serial: "0a", reason: 1, at: Self.now))
            #expect(try await !transaction.insertRevocation(serial: "0a", reason: 4, at: Self.now))
        }
        #expect(try await store.device(try DeviceID("K-1"))?.model == "m")
        #expect(try await store.certificate(serial: "0a")?.revocation?.reason == 1)
    }

    @Test(arguments: StoreKind.underTest)
    func updateWritesEveryFieldOfADevice(_ kind: StoreKind) async throws {
        let subject = try await StoreUnderTest(kind)
        defer { subject.close() }
        let store = subject.store
        var changed = try device("U-1")
        let first = changed
        try await store.transaction(audited: false) { transaction in
            let inserted = try await transaction.insertDevice(first)
            #expect(inserted)
        }
        changed.state = .stolen
        changed.stateBeforeTheft = .suspended
        changed.owner = "alice"
        changed.model = "m2"
        changed.metadata = ["k": "v"]
        changed.proof = .publicKey(sha256: Array(repeating: 7, count: 32))
        changed.updatedAt = Self.now.addingTimeInterval(5)
        let written = changed
        try await store.transaction(audited: false) { transaction in try await transaction.updateDevice(written) }
        #expect(try await store.device(try DeviceID("U-1")) == written)
    }
}

extension Tag {
    /// Tests that need a database server (PostgreSQL) besides the embedded SQLite.
    @Tag static var database: Self
}
