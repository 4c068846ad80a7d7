public import X509

/// Makes certificate serial numbers: random, positive, 19 octets in DER.
///
/// RFC 5280 §4.1.2.2 allows at most 20 octets; swift-certificates' own random serial draws 20
/// random bytes and so about half of them encode as a 21-octet INTEGER. Here the first byte is
/// in 0x40...0x7F: positive with no sign byte and never shorter, leaving 150 random bits, well
/// above the CA/Browser Forum's 64 and this project's 128.
public enum SerialNumberGenerator {
    /// The DER content length of every serial this generator makes.
    public static let octetCount = 19

    /// Draws a new serial number from `rng`.
    public static func make(using rng: inout some RandomNumberGenerator) -> Certificate.SerialNumber {
        var bytes = [UInt8](repeating: 0, count: octetCount)
        var index = 0
        while index < octetCount {
            var word = rng.next()
            for _ in 0..<8 where index < octetCount {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        bytes[0] = (bytes[0] & 0x3F) | 0x40
        return Certificate.SerialNumber(bytes: bytes)
    }
}

extension Certificate.SerialNumber {
    /// Lower-case hexadecimal without separators or sign byte, as `openssl x509 -serial` prints it (in upper case).
    public var hexString: String {
        var bytes = self.bytes[...]
        while bytes.count > 1, bytes.first == 0 { bytes = bytes.dropFirst() }
        return bytes.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 0x10 ? "0" + hex : hex
        }.joined()
    }
}
