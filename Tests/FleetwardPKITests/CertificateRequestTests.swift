import Crypto
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import SwiftASN1
import Testing
import X509
import _CryptoExtras

@Suite struct CertificateRequestTests {
    static func keys() throws -> [(String, Certificate.PrivateKey)] {
        [
            ("P-256", Certificate.PrivateKey(P256.Signing.PrivateKey())),
            ("P-384", Certificate.PrivateKey(P384.Signing.PrivateKey())),
            ("Ed25519", Certificate.PrivateKey(Curve25519.Signing.PrivateKey())),
            ("RSA-2048", Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048))),
        ]
    }

    @Test func acceptsAllowedKeyTypes() throws {
        for (name, key) in try Self.keys() {
            let request = try CertificateRequest(der: try TestPKI.csr(key: key))
            #expect(request.keyDescription == name)
            #expect(request.publicKey == key.publicKey)
        }
    }

    @Test func acceptsPEM() throws {
        let der = try TestPKI.csr(key: Certificate.PrivateKey(P256.Signing.PrivateKey()))
        let pem = PEM.encode(der, label: "CERTIFICATE REQUEST")
        #expect(try CertificateRequest(bytes: Array(pem.utf8)).der == der)
    }

    @Test func rejectsP521() throws {
        let der = try TestPKI.csr(key: Certificate.PrivateKey(P521.Signing.PrivateKey()))
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: der) }
        #expect(error?.code == .unsupportedKey)
        #expect(error?.message.contains("P-521") == true)
    }

    @Test func rejectsRSA1024WithItsSize() throws {
        let openssl = try Tool.openssl()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let made = try openssl.run([
            "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", dir.file("k.pem"), "-subj", "/CN=x",
            "-outform", "DER", "-out", dir.file("csr.der"),
        ])
        #expect(made.succeeded, "\(made)")
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: try dir.read("csr.der")) }
        #expect(error?.code == .unsupportedKey)
        #expect(error?.message.contains("RSA-1024") == true)
    }

    /// P-256 requests signed with ecdsa-with-SHA256 skip swift-certificates' parser; they must
    /// read the same as through it, and bad attributes are refused just the same.
    @Test func theP256PathReadsWhatSwiftCertificatesReads() throws {
        let openssl = try Tool.openssl()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let made = try openssl.run([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file("k.pem"),
            "-subj", "/CN=D-0001/serialNumber=D-0001/O=Maker", "-addext", "subjectAltName=DNS:d-0001.example", "-outform", "DER",
            "-out", dir.file("csr.der"),
        ])
        #expect(made.succeeded, "\(made)")
        let der = try dir.read("csr.der")
        let request = try CertificateRequest(der: der)
        let reference = try CertificateSigningRequest(derEncoded: der)
        #expect(request.keyDescription == "P-256")
        #expect(request.publicKey == reference.publicKey)
        #expect(request.requestedSubject == reference.subject)
        try request.requireSubject(matching: .device(try DeviceID("D-0001")))
        #expect(throws: PKIError.self) { try request.requireSubject(matching: .device(try DeviceID("D-0002"))) }

        // An attribute whose values are not a SET: the DER stays well formed (same lengths).
        var broken = der
        let extensionRequest: [UInt8] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x0E]
        let index = try #require(broken.firstIndex(ofSubsequence: extensionRequest))
        #expect(broken[index + extensionRequest.count] == 0x31)
        broken[index + extensionRequest.count] = 0x30
        #expect(throws: (any Error).self) { try CertificateSigningRequest(derEncoded: broken) }
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: broken) }
        #expect(error?.code == .malformedInput)
    }

    @Test func rejectsABrokenSignature() throws {
        var der = try TestPKI.csr(key: Certificate.PrivateKey(P256.Signing.PrivateKey()))
        // The last bytes are the signature's s value; flipping one keeps the DER valid.
        der[der.count - 3] ^= 0x40
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: der) }
        #expect(error?.code == .badSignature)
    }

    @Test func rejectsASubjectAlteredAfterSigning() throws {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        var der = try TestPKI.csr(key: key, subject: try DistinguishedName { CommonName("D-0001") })
        let index = try #require(der.firstIndex(ofSubsequence: Array("D-0001".utf8)))
        der[index + 5] = UInt8(ascii: "2")  // D-0001 → D-0002, signature now covers other bytes
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: der) }
        #expect(error?.code == .badSignature)
    }

    @Test func rejectsASignatureBitStringWithUnusedBits() throws {
        // A BIT STRING of 8n-1 bits is valid DER when its padding bit is zero, but a signature is
        // an octet string: such a request must not verify as if the padding were not there.
        var der: [UInt8] = []
        repeat {
            der = try TestPKI.csr(key: Certificate.PrivateKey(P256.Signing.PrivateKey()))
        } while der.last! & 0x01 != 0
        let index = try #require(Self.unusedBitsIndex(der))
        #expect(der[index] == 0)
        der[index] = 1
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: der) }
        #expect(error?.code == .malformedInput)
    }

    /// The offset of the unused-bits byte of a CSR's final BIT STRING (the signature).
    static func unusedBitsIndex(_ der: [UInt8]) -> Int? {
        // Walk: outer SEQUENCE header, then three children; return the third child's content start.
        func header(_ at: Int) -> (content: Int, length: Int) {
            let first = der[at + 1]
            if first < 0x80 { return (at + 2, Int(first)) }
            let n = Int(first & 0x7F)
            var length = 0
            for i in 0..<n { length = length << 8 | Int(der[at + 2 + i]) }
            return (at + 2 + n, length)
        }
        var position = header(0).content
        for _ in 0..<2 {
            let h = header(position)
            position = h.content + h.length
        }
        guard der[position] == 0x03 else { return nil }
        return header(position).content
    }

    @Test func rejectsSHA1Signatures() throws {
        let key = Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        let der = try TestPKI.csr(key: key, signatureAlgorithm: .sha1WithRSAEncryption)
        let error = #expect(throws: PKIError.self) { try CertificateRequest(der: der) }
        #expect(error?.code == .unsupportedAlgorithm)
    }

    @Test func rejectsOversizedInputBeforeParsing() {
        let blob = [UInt8](repeating: 0x30, count: 1 << 20)
        let error = #expect(throws: PKIError.self) { try CertificateRequest(bytes: blob) }
        #expect(error?.code == .inputTooLarge)
        #expect(error?.message.contains("1048576") == true)
    }

    @Test(arguments: [
        [UInt8](),
        [0x30],
        [0x30, 0x03, 0x02, 0x01, 0x00],
        Array("garbage that is not a CSR".utf8),
        Array("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".utf8),
        [0xFF, 0xFE, 0x00, 0x01],
    ])
    func rejectsGarbage(_ bytes: [UInt8]) {
        let error = #expect(throws: PKIError.self) { try CertificateRequest(bytes: bytes) }
        #expect(error?.code == .malformedInput)
    }

    @Test func everyTruncationAndByteFlipThrowsATypedErrorNeverCrashes() throws {
        let der = try TestPKI.csr(
            key: Certificate.PrivateKey(P256.Signing.PrivateKey()), subject: try DistinguishedName { CommonName("D-1") }
        )
        for length in 0..<der.count {
            #expect(throws: PKIError.self) { try CertificateRequest(der: Array(der.prefix(length))) }
        }
        var accepted = 0
        for index in 0..<der.count {
            for bit in [0x01, 0x80] as [UInt8] {
                var flipped = der
                flipped[index] ^= bit
                do {
                    _ = try CertificateRequest(der: flipped)
                    accepted += 1
                } catch let error as PKIError {
                    #expect([.malformedInput, .badSignature, .unsupportedKey, .unsupportedAlgorithm].contains(error.code))
                }
            }
        }
        // No flip may produce a request that still verifies (ECDSA malleability aside, which
        // cannot arise from a single bit flip of a DER-encoded signature).
        #expect(accepted == 0)
    }

    @Test func subjectMustNameTheProvenDevice() throws {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let matching = try CertificateRequest(der: try TestPKI.csr(key: key, subject: try DistinguishedName { CommonName("D-7") }))
        try matching.requireSubject(matching: .device(try DeviceID("D-7")))

        let other = try CertificateRequest(der: try TestPKI.csr(key: key, subject: try DistinguishedName { CommonName("D-8") }))
        let error = #expect(throws: PKIError.self) { try other.requireSubject(matching: .device(try DeviceID("D-7"))) }
        #expect(error?.code == .identityMismatch)

        let empty = try CertificateRequest(der: try TestPKI.csr(key: key))
        try empty.requireSubject(matching: .device(try DeviceID("D-7")))

        let server = try CertificateRequest(der: try TestPKI.csr(key: key, subject: try DistinguishedName { CommonName("evil.example") }))
        let serverError = #expect(throws: PKIError.self) {
            try server.requireSubject(matching: .server([try ServerName("gw.example.com")]))
        }
        #expect(serverError?.code == .identityMismatch)
    }
}
