public import FleetwardPKI
import Crypto
public import Foundation
import _CryptoExtras

/// Claim codes: short codes printed on a device's label that a person types to claim it.
///
/// People type them, so they are short (60 bits, Crockford base32 in three groups of four:
/// `7KQ2-M9XD-4RTA`); they are stored as a salted PBKDF2-HMAC-SHA256 hash, and every attempt is
/// rate-limited per device and per address (DESIGN: secrets at rest).
public enum ClaimCodes {
    /// The default work factor. With 60-bit codes an offline search of a stolen database costs
    /// 2^60 × 210,000 hash blocks per device.
    public static let defaultIterations = 210_000
    /// The least the store accepts (tests may go this low).
    public static let minimumIterations = 1_000

    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// A new random code, formatted for a label.
    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        var characters: [Character] = []
        for index in 0..<12 {
            if index > 0, index % 4 == 0 { characters.append("-") }
            characters.append(Character(UnicodeScalar(alphabet[Int.random(in: 0..<32, using: &rng)])))
        }
        return String(characters)
    }

    /// The canonical form of what a person typed: upper case, no spaces or dashes, and the
    /// look-alikes I/L → 1 and O → 0 (Crockford). Nil when it cannot be a code.
    public static func normalize(_ typed: String) -> [UInt8]? {
        var out: [UInt8] = []
        for byte in typed.utf8 {
            var upper = byte
            if (0x61...0x7A).contains(upper) { upper -= 0x20 }
            switch upper {
            case UInt8(ascii: "-"), UInt8(ascii: " "): continue
            case UInt8(ascii: "I"), UInt8(ascii: "L"): out.append(UInt8(ascii: "1"))
            case UInt8(ascii: "O"): out.append(UInt8(ascii: "0"))
            default:
                guard alphabet.contains(upper) else { return nil }
                out.append(upper)
            }
            if out.count > 12 { return nil }
        }
        return out.count == 12 ? out : nil
    }

    /// The stored hash of a normalised code.
    public static func hash(_ normalized: [UInt8], salt: [UInt8], iterations: Int) throws -> [UInt8] {
        let key = try KDF.Insecure.PBKDF2.deriveKey(
            from: normalized, salt: salt, using: .sha256, outputByteCount: 32, unsafeUncheckedRounds: iterations
        )
        return key.withUnsafeBytes { Array($0) }
    }

    /// A new record for `code` with a random 16-byte salt.
    public static func record(for code: String, device: DeviceID, iterations: Int = defaultIterations) throws
        -> ClaimCodeRecord
    {
        guard let normalized = normalize(code) else {
            throw RegistryError(.invalidInput, "a claim code is 12 characters of Crockford base32")
        }
        guard iterations >= minimumIterations else {
            throw RegistryError(.invalidInput, "claim code hashing needs at least \(minimumIterations) iterations")
        }
        var rng = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return ClaimCodeRecord(
            deviceID: device, salt: salt, hash: try hash(normalized, salt: salt, iterations: iterations), iterations: iterations)
    }

    /// A record no typed code matches, with the default work factor: checking against it costs
    /// what checking a real code costs, so a missing or used code cannot be told apart by time.
    public static func dummyRecord(for device: DeviceID) -> ClaimCodeRecord {
        ClaimCodeRecord(
            deviceID: device, salt: Array(repeating: 0, count: 16), hash: Array(repeating: 0, count: 32), iterations: defaultIterations)
    }

    /// Whether `typed` is the code of `record`, compared in constant time.
    public static func matches(_ typed: String, _ record: ClaimCodeRecord) -> Bool {
        guard let normalized = normalize(typed), let computed = try? hash(normalized, salt: record.salt, iterations: record.iterations),
            computed.count == record.hash.count
        else { return false }
        var difference: UInt8 = 0
        for index in computed.indices { difference |= computed[index] ^ record.hash[index] }
        return difference == 0
    }
}
