import FleetwardRegistry
import Foundation
import Testing

@Suite struct AuditChainTests {
    static func chain(_ count: Int) -> [AuditEntry] {
        var entries: [AuditEntry] = []
        for index in 0..<count {
            let previous = entries.last.map { ($0.sequence, $0.hash) }
            entries.append(
                AuditEntry(
                    following: previous, time: Date(timeIntervalSince1970: 1_767_225_600 + Double(index)),
                    actor: "admin:console", action: "device.suspend", subject: "device:D-\(index)",
                    before: "{\"state\":\"active\"}", after: "{\"state\":\"suspended\"}"
                )
            )
        }
        return entries
    }

    func verify(_ entries: [AuditEntry]) -> AuditChainVerifier.Outcome {
        var verifier = AuditChainVerifier()
        for entry in entries where !verifier.check(entry) { break }
        return verifier.outcome
    }

    @Test func anIntactChainVerifies() {
        #expect(verify(Self.chain(50)) == .intact(entries: 50))
        #expect(verify([]) == .intact(entries: 0))
    }

    @Test func anAlteredEntryIsNamed() {
        var entries = Self.chain(20)
        entries[7].after = "{\"state\":\"active\"}"
        guard case .broken(let sequence, let reason) = verify(entries) else {
            Issue.record("alteration not caught")
            return
        }
        #expect(sequence == 8)
        #expect(reason.contains("was altered"))
    }

    @Test func aRemovedEntryIsNamed() {
        var entries = Self.chain(20)
        entries.remove(at: 10)
        guard case .broken(let sequence, let reason) = verify(entries) else {
            Issue.record("removal not caught")
            return
        }
        #expect(sequence == 11)
        #expect(reason.contains("missing"))
    }

    @Test func aRemovedEntryWithRenumberedSuccessorsIsStillCaught() {
        var entries = Self.chain(20)
        entries.remove(at: 10)
        for index in 10..<entries.count { entries[index].sequence -= 1 }
        guard case .broken(let sequence, _) = verify(entries) else {
            Issue.record("renumbered removal not caught")
            return
        }
        #expect(sequence == 11)
    }

    @Test func reorderedEntriesAreCaught() {
        var entries = Self.chain(20)
        entries.swapAt(4, 5)
        guard case .broken(let sequence, _) = verify(entries) else {
            Issue.record("reordering not caught")
            return
        }
        #expect(sequence == 5)
    }

    @Test func fieldsCannotBeShiftedIntoEachOther() {
        let a = AuditEntry(
            following: nil, time: Date(timeIntervalSince1970: 0), actor: "ab", action: "c", subject: "d", before: nil, after: nil)
        let b = AuditEntry(
            following: nil, time: Date(timeIntervalSince1970: 0), actor: "a", action: "bc", subject: "d", before: nil, after: nil)
        let c = AuditEntry(
            following: nil, time: Date(timeIntervalSince1970: 0), actor: "a", action: "bc", subject: "d", before: "", after: nil)
        #expect(a.hash != b.hash)
        #expect(b.hash != c.hash)
    }
}
