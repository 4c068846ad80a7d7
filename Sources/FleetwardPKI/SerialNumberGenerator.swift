public import Foundation
#if canImport(Glibc)
    import Glibc
#endif
public import X509

/// Makes certificate serial numbers: positive, 20 octets in DER, time-ordered, 112 random bits.
///
/// RFC 5280 §4.1.2.2 allows at most 20 octets; swift-certificates' own random serial draws 20
/// random bytes and so about half of them encode as a 21-octet INTEGER. Here the first six octets
/// carry the issuance time in milliseconds since 1970 (46 bits, under a 0b01 prefix that keeps the
/// INTEGER positive and never shorter) and the other fourteen come from `rng`: 112 unpredictable
/// bits, well above the CA/Browser Forum's 64. The time prefix makes serials increase, so the
/// registry's serial index grows at its end instead of touching a random page per enrollment.
/// Nodes still issue without coordinating: the random part keeps serials unique.
public enum SerialNumberGenerator {
    /// The DER content length of every serial this generator makes.
    public static let octetCount = 20
    /// Unpredictable octets in every serial.
    public static let randomOctetCount = 14

    /// Draws a new serial number from `rng` for a certificate issued at `time`.
    public static func make(at time: Date = Date(), using rng: inout some RandomNumberGenerator) -> Certificate.SerialNumber {
        var bytes = [UInt8](repeating: 0, count: octetCount)
        let milliseconds = UInt64(max(0, (time.timeIntervalSince1970 * 1000).rounded())) & ((1 << 46) - 1)
        for index in 0..<6 {
            bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - index)))
        }
        bytes[0] = (bytes[0] & 0x3F) | 0x40
        var index = octetCount - randomOctetCount
        while index < octetCount {
            var word = rng.next()
            for _ in 0..<8 where index < octetCount {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return Certificate.SerialNumber(bytes: bytes)
    }
}

extension Certificate.SerialNumber {
    /// Lower-case hexadecimal without separators or sign byte, as `openssl x509 -serial` prints it (in upper case).
    public var hexString: String {
        var bytes = self.bytes[...]
        while bytes.count > 1, bytes.first == 0 { bytes = bytes.dropFirst() }
        return bytes.hexString
    }
}

/// The system's random bytes for one serial number in one call (glibc's `arc4random_buf`, one
/// `getrandom` for the lot): `SystemRandomNumberGenerator` makes a system call per 8 bytes, and a
/// serial takes two.
public struct SerialRandomSource: RandomNumberGenerator {
    private var words: (UInt64, UInt64) = (0, 0)
    private var used = 0

    public init() {
        withUnsafeMutableBytes(of: &words) { arc4random_buf($0.baseAddress!, $0.count) }
    }

    public mutating func next() -> UInt64 {
        defer { used += 1 }
        switch used {
        case 0: return words.0
        case 1: return words.1
        default:
            var system = SystemRandomNumberGenerator()
            return system.next()
        }
    }
}
