public import Foundation
import Crypto

/// One entry of the append-only audit log, chained by SHA-256 to the one before.
///
/// `hash = SHA-256(sequence ‖ time ‖ actor ‖ action ‖ subject ‖ before ‖ after ‖ previousHash)`,
/// each field length-prefixed, so no field can be shifted into another.
public struct AuditEntry: Sendable, Equatable, Codable {
    /// 1, 2, 3… with no gaps.
    public var sequence: Int64
    /// Milliseconds since 1970, UTC.
    public var timeMilliseconds: Int64
    /// Who did it (``Actor/description``).
    public var actor: String
    /// What was done, e.g. `device.suspend`, `devices.import`, `token.create`.
    public var action: String
    /// What it was done to, e.g. `device:D-0042`.
    public var subject: String
    /// JSON of the state before, when there was one.
    public var before: String?
    /// JSON of the state after.
    public var after: String?
    /// The hash of the entry before (32 zero bytes for the first).
    public var previousHash: [UInt8]
    /// This entry's hash.
    public var hash: [UInt8]
    /// HMAC of ``hash`` under the sealed registry key (``AuditSealer``); nil for entries written
    /// before entries were sealed (schema 9).
    public var mac: [UInt8]?

    /// The hash of the very first entry's predecessor.
    public static let genesisHash = [UInt8](repeating: 0, count: 32)

    /// Makes the entry that follows `previous` (nil for the first) and computes its hash.
    public init(
        following previous: (sequence: Int64, hash: [UInt8])?, time: Date, actor: String, action: String,
        subject: String, before: String?, after: String?
    ) {
        sequence = (previous?.sequence ?? 0) + 1
        timeMilliseconds = Int64((time.timeIntervalSince1970 * 1000).rounded(.down))
        self.actor = actor
        self.action = action
        self.subject = subject
        self.before = before
        self.after = after
        previousHash = previous?.hash ?? Self.genesisHash
        hash = []
        hash = computedHash()
    }

    /// Rebuilds a stored entry as it was read.
    public init(
        sequence: Int64, timeMilliseconds: Int64, actor: String, action: String, subject: String,
        before: String?, after: String?, previousHash: [UInt8], hash: [UInt8], mac: [UInt8]? = nil
    ) {
        self.mac = mac
        self.sequence = sequence
        self.timeMilliseconds = timeMilliseconds
        self.actor = actor
        self.action = action
        self.subject = subject
        self.before = before
        self.after = after
        self.previousHash = previousHash
        self.hash = hash
    }

    /// The hash these fields should have.
    public func computedHash() -> [UInt8] {
        var hasher = SHA256()
        // Each field as its length and bytes, hashed in place (no copy per field).
        func put(_ bytes: UnsafeRawBufferPointer) {
            var length = UInt64(bytes.count).bigEndian
            withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
            hasher.update(bufferPointer: bytes)
        }
        func put(_ bytes: [UInt8]) {
            bytes.withUnsafeBytes { put($0) }
        }
        func put(_ text: String?) {
            guard var text else { return put([0xFF]) }
            text.withUTF8 { put(UnsafeRawBufferPointer($0)) }
        }
        var sequenceBytes = sequence.bigEndian
        withUnsafeBytes(of: &sequenceBytes) { hasher.update(bufferPointer: $0) }
        var time = timeMilliseconds.bigEndian
        withUnsafeBytes(of: &time) { hasher.update(bufferPointer: $0) }
        put(actor)
        put(action)
        put(subject)
        put(before)
        put(after)
        put(previousHash)
        return Array(hasher.finalize())
    }
}

/// Walks an audit log in sequence order and names the first entry that breaks the chain.
public struct AuditChainVerifier: Sendable {
    /// The outcome of a walk.
    public enum Outcome: Sendable, Equatable {
        /// Whether every entry checked out.
        public var isIntact: Bool {
            if case .intact = self { return true }
            return false
        }

        /// Every entry checked out.
        case intact(entries: Int64)
        /// `sequence` is the first entry that does not; `reason` says how.
        case broken(sequence: Int64, reason: String)
    }

    private var previous: (sequence: Int64, hash: [UInt8])?
    private var count: Int64 = 0
    public private(set) var outcome: Outcome = .intact(entries: 0)
    /// With the sealed key, every entry's MAC is checked too, from the first sealed entry on.
    private let sealer: AuditSealer?
    private var sawSealed = false
    /// The last entry checked (its sequence and hash), to compare with a checkpoint.
    public var last: (sequence: Int64, hash: [UInt8])? { previous }

    /// - Parameter sealer: checks each entry's MAC as well; entries written before entries were
    ///   sealed (none has a MAC before them) pass on their hash alone.
    public init(sealer: AuditSealer? = nil) {
        self.sealer = sealer
    }

    /// Feeds the next entry; returns false once the chain is broken (later entries are not checked).
    @discardableResult
    public mutating func check(_ entry: AuditEntry) -> Bool {
        if case .broken = outcome { return false }
        let expectedSequence = (previous?.sequence ?? 0) + 1
        if entry.sequence != expectedSequence {
            let reason =
                entry.sequence > expectedSequence
                ? "entries \(expectedSequence)…\(entry.sequence - 1) are missing: removed"
                : "entry \(entry.sequence) appears after entry \(expectedSequence - 1): reordered or duplicated"
            outcome = .broken(sequence: min(entry.sequence, expectedSequence), reason: reason)
            return false
        }
        if entry.previousHash != (previous?.hash ?? AuditEntry.genesisHash) {
            outcome = .broken(
                sequence: entry.sequence,
                reason: "entry \(entry.sequence) does not follow entry \(entry.sequence - 1): the entry before it was replaced or removed")
            return false
        }
        if entry.computedHash() != entry.hash {
            outcome = .broken(sequence: entry.sequence, reason: "entry \(entry.sequence) was altered: its contents do not match its hash")
            return false
        }
        if let sealer {
            if entry.mac == nil, !sawSealed {
                // Written before audit entries were sealed.
            } else if !sealer.isSealed(entry) {
                outcome = .broken(
                    sequence: entry.sequence,
                    reason: "entry \(entry.sequence) does not carry the registry key's MAC: the log was rewritten by someone without the key")
                return false
            } else {
                sawSealed = true
            }
        }
        previous = (entry.sequence, entry.hash)
        count += 1
        outcome = .intact(entries: count)
        return true
    }
}
