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
        var header = DERWriter(capacity: 4)
        header.appendLength(length)
        bytes[start - 1] = header.bytes[0]
        bytes.insert(contentsOf: header.bytes.dropFirst(), at: start)
    }

    /// A definite length (X.690 §8.1.3), up to 2^24 - 1 (no value here comes near it).
    mutating func appendLength(_ length: Int) {
        precondition(length < 1 << 24, "DER value too long")
        if length < 0x80 {
            bytes.append(UInt8(length))
        } else if length <= 0xFF {
            bytes.append(0x81)
            bytes.append(UInt8(length))
        } else if length <= 0xFFFF {
            bytes.append(0x82)
            bytes.append(UInt8(length >> 8))
            bytes.append(UInt8(length & 0xFF))
        } else {
            bytes.append(0x83)
            bytes.append(UInt8(length >> 16))
            bytes.append(UInt8((length >> 8) & 0xFF))
            bytes.append(UInt8(length & 0xFF))
        }
    }

    /// A Time (RFC 5280 §4.1.2.5): UTCTime for 1950–2049, GeneralizedTime otherwise or when forced.
    mutating func time(_ date: Date, forceGeneralized: Bool = false) {
        ASN1Time.write(date, forceGeneralized: forceGeneralized, into: &bytes)
    }
}
