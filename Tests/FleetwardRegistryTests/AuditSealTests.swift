import Crypto
import FleetwardPKI
import FleetwardRegistry
import Foundation
import Testing

/// Audit entries sealed with a MAC under the registry key: someone who can rewrite the log and
/// recompute its SHA-256 chain, but cannot open the key, is caught.
@Suite struct AuditSealTests {
    static let now = Date(timeIntervalSince1970: 1_767_225_600)

    func chain(_ count: Int, sealer: AuditSealer?) -> [AuditEntry] {
        var entries: [AuditEntry] = []
        for index in 1...count {
            var entry = AuditEntry(
                following: entries.last.map { ($0.sequence, $0.hash) }, time: Self.now, actor: "admin:console", action: "device.create",
                subject: "device:D-\(index)", before: nil, after: "{\"state\":\"allowed\"}")
            entry.mac = sealer?.mac(entry)
            entries.append(entry)
        }
        return entries
    }

    /// What an attacker with write access to the database but not the key does: changes an entry
    /// and recomputes every hash after it; the MACs cannot be recomputed.
    func rewritten(_ entries: [AuditEntry], at index: Int) -> [AuditEntry] {
        var entries = entries
        entries[index].after = "{\"state\":\"active\"}"
        for position in index..<entries.count {
            if position > 0 { entries[position].previousHash = entries[position - 1].hash }
            entries[position].hash = entries[position].computedHash()
        }
        return entries
    }

    func verify(_ entries: [AuditEntry], sealer: AuditSealer?) -> AuditChainVerifier.Outcome {
        var verifier = AuditChainVerifier(sealer: sealer)
        for entry in entries where !verifier.check(entry) { break }
        return verifier.outcome
    }

    @Test func aRecomputedChainPassesTheHashesButNotTheMACs() {
        let sealer = AuditSealer(key: SymmetricKey(size: .bits256))
        let entries = chain(5, sealer: sealer)
        #expect(verify(entries, sealer: sealer) == .intact(entries: 5))
        let forged = rewritten(entries, at: 2)
        #expect(verify(forged, sealer: nil) == .intact(entries: 5), "the SHA-256 chain alone cannot tell")
        guard case .broken(let sequence, let reason) = verify(forged, sealer: sealer) else {
            Issue.record("the rewritten entry passed")
            return
        }
        #expect(sequence == 3 && reason.contains("MAC"), "\(reason)")
    }

    @Test func anotherKeyDoesNotVerifyAndUnsealedEntriesOnlyPassBeforeTheFirstSealedOne() {
        let sealer = AuditSealer(key: SymmetricKey(size: .bits256))
        #expect(!verify(chain(3, sealer: sealer), sealer: AuditSealer(key: SymmetricKey(size: .bits256))).isIntact)
        // Entries written before sealing began (schema 9) pass; an unsealed one after a sealed one does not.
        var legacy = chain(4, sealer: nil)
        legacy[2].mac = sealer.mac(legacy[2])
        #expect(!verify(legacy, sealer: sealer).isIntact)
        legacy[3].mac = sealer.mac(legacy[3])
        #expect(verify(legacy, sealer: sealer) == .intact(entries: 4))
    }
}
