import FleetwardPKI
import Foundation
import FleetwardTestSupport
import SwiftASN1
import Testing
import X509

@Suite struct SerialNumberGeneratorTests {
    @Test func serialsArePositiveTwentyOctetsAndDistinct() throws {
        var rng = SystemRandomNumberGenerator()
        var seen = Set<[UInt8]>()
        let time = Date()
        for _ in 0..<20_000 {
            // One instant for all: only the random part tells them apart.
            let serial = SerialNumberGenerator.make(at: time, using: &rng)
            let bytes = Array(serial.bytes)
            #expect(bytes.count == 20)
            #expect(bytes[0] & 0x80 == 0, "top bit set: the INTEGER would be negative")
            #expect(bytes[0] >= 0x40, "leading byte too small: the serial would encode shorter")
            seen.insert(bytes)
        }
        #expect(seen.count == 20_000)
    }

    @Test func serialEncodesAsAtMostTwentyOctetINTEGER() throws {
        var rng = SeededRandom(seed: 42)
        for _ in 0..<1000 {
            let serial = SerialNumberGenerator.make(using: &rng)
            var serializer = DER.Serializer()
            try serializer.serialize(ArraySliceBigint(serial.bytes))
            let der = serializer.serializedBytes
            #expect(der[0] == 0x02)
            #expect(Int(der[1]) == 20)
            #expect(Int(der[1]) <= 20)
        }
    }

    @Test func laterSerialsSortAfterEarlierOnes() {
        var rng = SystemRandomNumberGenerator()
        let start = Date(timeIntervalSince1970: 1_795_000_000)
        var previous = SerialNumberGenerator.make(at: start, using: &rng).hexString
        for step in 1...1000 {
            let next = SerialNumberGenerator.make(at: start.addingTimeInterval(Double(step) / 1000), using: &rng).hexString
            #expect(next.count == 40)
            #expect(next > previous, "serial \(next) made later sorts before \(previous)")
            previous = next
        }
    }

    @Test func serialsKeepTheirRandomPartFromTheGenerator() {
        var first = SeededRandom(seed: 1)
        var second = SeededRandom(seed: 2)
        let time = Date()
        let a = Array(SerialNumberGenerator.make(at: time, using: &first).bytes)
        let b = Array(SerialNumberGenerator.make(at: time, using: &second).bytes)
        #expect(a.prefix(6) == b.prefix(6))
        #expect(a.suffix(SerialNumberGenerator.randomOctetCount) != b.suffix(SerialNumberGenerator.randomOctetCount))
    }

    /// The one-call source the CA issues with: fresh bytes per source, different words within one,
    /// and serials with all 112 random bits varying.
    @Test func theOneCallSourceGivesFreshBitsEveryTime() {
        var seen: Set<UInt64> = []
        var ored = [UInt8](repeating: 0, count: SerialNumberGenerator.randomOctetCount)
        var anded = [UInt8](repeating: 0xFF, count: SerialNumberGenerator.randomOctetCount)
        for _ in 0..<200 {
            var source = SerialRandomSource()
            let first = source.next()
            let second = source.next()
            let third = source.next()  // beyond the prefetched two: still random
            seen.formUnion([first, second, third])
            var again = SerialRandomSource()
            let random = Array(SerialNumberGenerator.make(at: Date(), using: &again).bytes.suffix(SerialNumberGenerator.randomOctetCount))
            for index in random.indices {
                ored[index] |= random[index]
                anded[index] &= random[index]
            }
        }
        #expect(seen.count == 600, "no word repeats")
        #expect(ored.allSatisfy { $0 == 0xFF } && anded.allSatisfy { $0 == 0 }, "every random bit takes both values")
    }

    @Test func hexStringMatchesOpenSSLStyle() {
        let serial = Certificate.SerialNumber(bytes: [0x00, 0x0A, 0xFF])
        #expect(serial.hexString == "0aff")
    }
}

/// Serializes raw INTEGER content bytes.
struct ArraySliceBigint: DERSerializable {
    var bytes: ArraySlice<UInt8>
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    func serialize(into coder: inout DER.Serializer) throws {
        coder.appendPrimitiveNode(identifier: .integer) { $0.append(contentsOf: bytes) }
    }
}
