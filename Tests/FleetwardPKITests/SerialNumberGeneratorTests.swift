import FleetwardPKI
import FleetwardTestSupport
import SwiftASN1
import Testing
import X509

@Suite struct SerialNumberGeneratorTests {
    @Test func serialsArePositiveNineteenOctetsAndDistinct() throws {
        var rng = SystemRandomNumberGenerator()
        var seen = Set<[UInt8]>()
        for _ in 0..<20_000 {
            let serial = SerialNumberGenerator.make(using: &rng)
            let bytes = Array(serial.bytes)
            #expect(bytes.count == 19)
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
            #expect(Int(der[1]) == 19)
            #expect(Int(der[1]) <= 20)
        }
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
