import Foundation

/// DER written into one growing buffer: a constructed value's length is patched in once its
/// contents are written, so nested values cost no array of their own (the issuance hot path
/// built each TLV as a separate array, about 90 allocations per certificate).
struct DERWriter {
    private(set) var bytes: [UInt8]

    init(capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    var count: Int { bytes.count }

    /// Bytes that are already DER.
    mutating func append(_ encoded: some Collection<UInt8>) { bytes.append(contentsOf: encoded) }

    mutating func append(byte: UInt8) { bytes.append(byte) }

    /// A primitive value: tag, definite length, `content`.
    mutating func element(_ tag: UInt8, _ content: some Collection<UInt8>) {
        bytes.append(tag)
        appendLength(content.count)
        bytes.append(contentsOf: content)
    }

    /// A value whose contents `body` writes; its length is filled in afterwards.
    mutating func constructed(_ tag: UInt8, _ body: (inout DERWriter) throws -> Void) rethrows {
        bytes.append(tag)
        bytes.append(0)
        let start = bytes.count
        try body(&self)
        let length = bytes.count - start
        if length < 0x80 {
            bytes[start - 1] = UInt8(length)
            return
        }
        // The long form: its extra octets go in place, the contents moving up to make room.
        let octets = Self.longFormOctets(length)
        bytes[start - 1] = 0x80 | UInt8(octets)
        bytes.insert(contentsOf: (0..<octets).reversed().lazy.map { UInt8(truncatingIfNeeded: length >> (8 * $0)) }, at: start)
    }

    /// A definite length (X.690 §8.1.3), up to 2^24 - 1 (no value here comes near it).
    mutating func appendLength(_ length: Int) {
        guard length >= 0x80 else {
            bytes.append(UInt8(length))
            return
        }
        let octets = Self.longFormOctets(length)
        bytes.append(0x80 | UInt8(octets))
        for index in (0..<octets).reversed() { bytes.append(UInt8(truncatingIfNeeded: length >> (8 * index))) }
    }

    /// How many length octets follow `0x8n` in the long form of `length` (at least 0x80).
    private static func longFormOctets(_ length: Int) -> Int {
        precondition(length < 1 << 24, "DER value too long")
        return length <= 0xFF ? 1 : length <= 0xFFFF ? 2 : 3
    }

    /// A Time (RFC 5280 §4.1.2.5): UTCTime for 1950–2049, GeneralizedTime otherwise or when forced.
    mutating func time(_ date: Date, forceGeneralized: Bool = false) {
        ASN1Time.write(date, forceGeneralized: forceGeneralized, into: &bytes)
    }
}
