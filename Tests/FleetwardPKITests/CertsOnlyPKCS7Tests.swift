import FleetwardPKI
import FleetwardTestSupport
import Foundation
import SwiftASN1
import Testing
import X509

@Suite struct CertsOnlyPKCS7Tests {
    let pki: TestPKI
    init() throws { pki = try TestPKI() }

    func der(_ certificate: Certificate) throws -> [UInt8] { try TestPKI.derBytes(certificate) }

    @Test(arguments: [1, 2, 3])
    func opensslReadsEveryCertificateBack(count: Int) throws {
        let all = [try der(pki.root), try der(pki.issuing), try der(pki.factory)]
        let chosen = Array(all.prefix(count))
        let encoded = CertsOnlyPKCS7.encode(chosen)
        let printed = try Tool.openssl().run(["pkcs7", "-inform", "DER", "-print_certs", "-outform", "PEM"], stdin: encoded)
        #expect(printed.succeeded, "\(printed)")
        let pems = try PEMDocument.parseMultiple(pemString: printed.stdout).map { Array($0.derBytes) }
        #expect(Set(pems) == Set(chosen))
        #expect(pems.count == count)
    }

    @Test func structureIsADegenerateSignedDataInDER() throws {
        // A certificate over 127 bytes forces long-form lengths at every level.
        let certificates = [try der(pki.issuing), try der(pki.root)]
        let encoded = CertsOnlyPKCS7.encode(certificates)
        let root = try DER.parse(encoded)
        guard case .constructed(let outer) = root.content else { Issue.record("ContentInfo is not constructed"); return }
        let children = Array(outer)
        try #require(children.count == 2)
        let contentType = try ASN1ObjectIdentifier(derEncoded: children[0])
        #expect(contentType == [1, 2, 840, 113_549, 1, 7, 2])
        #expect(children[1].identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific))
        // DER: re-serializing the parsed tree gives the same bytes (definite, minimal lengths).
        #expect(root.encodedBytes.count == encoded.count)
        // SET OF in DER order: the lexicographically smaller encoding first.
        let sorted = certificates.sorted { $0.lexicographicallyPrecedes($1) }
        let firstAt = try #require(encoded.firstRange(of: sorted[0])).lowerBound
        let secondAt = try #require(encoded.firstRange(of: sorted[1])).lowerBound
        #expect(firstAt < secondAt)
    }

    @Test func base64BodyIsWrappedAt64Columns() throws {
        let body = CertsOnlyPKCS7.base64([try der(pki.issuing)])
        let lines = body.split(separator: "\n")
        #expect(lines.dropLast().allSatisfy { $0.count == 64 })
        #expect(body.hasSuffix("\n"))
        let decoded = try #require(Data(base64Encoded: lines.joined()))
        #expect(Array(decoded) == (CertsOnlyPKCS7.encode([try der(pki.issuing)])))
    }

    /// Lengths in every form DER has (short, 0x81, 0x82, 0x83) come out minimal and definite:
    /// swift-asn1's strict DER parser reads each one back, with the contents where they belong.
    @Test(arguments: [1, 100, 200, 300, 70_000])
    func everyLengthFormIsMinimalDER(contentLength: Int) throws {
        // An OCTET STRING of `contentLength` bytes stands in for a certificate.
        var length: [UInt8] = []
        var rest = contentLength
        while rest > 0 {
            length.insert(UInt8(rest & 0xFF), at: 0)
            rest >>= 8
        }
        let header: [UInt8] = contentLength < 0x80 ? [0x04, UInt8(contentLength)] : [0x04, 0x80 | UInt8(length.count)] + length
        let blob = header + (0..<contentLength).map { UInt8(truncatingIfNeeded: $0) }
        let encoded = CertsOnlyPKCS7.encode([blob])
        let root = try DER.parse(encoded)
        #expect(root.encodedBytes.count == encoded.count)
        #expect(try CertsOnlyPKCS7.decode(encoded) == [blob])
    }

    @Test func base64LinesAreWhatFoundationWrites() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<300 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let foundation = Data(bytes).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed]) + "\n"
            #expect(String(decoding: Base64.encodeLines(bytes), as: UTF8.self) == foundation, "length \(length)")
        }
    }
}
