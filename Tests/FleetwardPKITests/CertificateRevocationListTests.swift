import Crypto
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Testing
import X509

/// CRLs checked by openssl: it parses them, verifies their signature against the CA, and
/// `openssl verify -crl_check` refuses a listed certificate while accepting an unlisted one.
@Suite struct CertificateRevocationListTests {
    let pki: TestPKI
    let directory: TemporaryDirectory
    let openssl: Tool

    init() throws {
        pki = try TestPKI()
        directory = try TemporaryDirectory(prefix: "fleetward-crl")
        openssl = try Tool.openssl()
    }

    func device(_ id: String) throws -> IssuedCertificate {
        var rng = SystemRandomNumberGenerator()
        let csr = try CertificateRequest(der: try TestPKI.csr(key: Certificate.PrivateKey(P256.Signing.PrivateKey())))
        return try pki.issuer().issue(csr, profile: .device, identity: .device(try DeviceID(id)), now: Date(), using: &rng)
    }

    func writeCAs() throws -> String {
        let pem =
            PEM.encode(try TestPKI.derBytes(pki.root), label: "CERTIFICATE")
            + PEM.encode(try TestPKI.derBytes(pki.issuing), label: "CERTIFICATE")
        try directory.write("cas.pem", pem)
        return directory.file("cas.pem")
    }

    @Test func opensslVerifiesTheListAndRefusesARevokedCertificate() throws {
        defer { directory.remove() }
        let revoked = try device("D-REVOKED")
        let good = try device("D-GOOD")
        let superseded = try device("D-OLD")
        let now = Date()
        let crl = try pki.issuer().revocationList(
            entries: [
                RevokedEntry(serialHex: revoked.serialNumber.hexString, revocationDate: now.addingTimeInterval(-60), reasonCode: 1),
                RevokedEntry(serialHex: superseded.serialNumber.hexString.uppercased(), revocationDate: now, reasonCode: 4),
            ],
            number: 300, thisUpdate: now.addingTimeInterval(-120), nextUpdate: now.addingTimeInterval(86_400))
        try directory.write("issuing.crl", crl)
        let cas = try writeCAs()

        let text = try openssl.run(["crl", "-inform", "DER", "-in", directory.file("issuing.crl"), "-CAfile", cas, "-noout", "-text"])
        #expect(text.succeeded, "\(text)")
        #expect(text.stderr.contains("verify OK"), "\(text)")
        #expect(text.stdout.contains("Version 2"))
        let lines = text.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let numberAt = try #require(lines.firstIndex(of: "X509v3 CRL Number:"), "\(text.stdout)")
        #expect(lines[numberAt + 1] == "300")
        #expect(text.stdout.contains("X509v3 Authority Key Identifier"))
        #expect(text.stdout.contains("Key Compromise"))
        #expect(text.stdout.contains("Superseded"))
        #expect(text.stdout.contains(revoked.serialNumber.hexString.uppercased()))
        #expect(!text.stdout.contains(good.serialNumber.hexString.uppercased()))

        try directory.write("issuing.crl.pem", PEM.encode(crl, label: "X509 CRL"))
        for (name, issued) in [("revoked", revoked), ("good", good)] {
            try directory.write(name + ".pem", issued.pem)
        }
        let refused = try openssl.run([
            "verify", "-crl_check", "-CAfile", cas, "-CRLfile", directory.file("issuing.crl.pem"), directory.file("revoked.pem"),
        ])
        #expect(!refused.succeeded)
        #expect((refused.stdout + refused.stderr).contains("certificate revoked"), "\(refused)")
        let accepted = try openssl.run([
            "verify", "-crl_check", "-CAfile", cas, "-CRLfile", directory.file("issuing.crl.pem"), directory.file("good.pem"),
        ])
        #expect(accepted.succeeded, "\(accepted)")
    }

    @Test func anEmptyListStillVerifiesAndCarriesItsNumber() throws {
        defer { directory.remove() }
        let now = Date()
        let crl = try pki.issuer().revocationList(entries: [], number: 0, thisUpdate: now, nextUpdate: now.addingTimeInterval(3600))
        try directory.write("empty.crl", crl)
        let text = try openssl.run([
            "crl", "-inform", "DER", "-in", directory.file("empty.crl"), "-CAfile", try writeCAs(), "-noout", "-text",
        ])
        #expect(text.stderr.contains("verify OK"), "\(text)")
        #expect(text.stdout.contains("No Revoked Certificates"))
    }

    @Test func badInputIsRefused() throws {
        defer { directory.remove() }
        let issuer = try pki.issuer()
        let now = Date()
        for entry in [
            RevokedEntry(serialHex: "xyz", revocationDate: now, reasonCode: 1),
            RevokedEntry(serialHex: "", revocationDate: now, reasonCode: 1),
            RevokedEntry(serialHex: String(repeating: "ab", count: 30), revocationDate: now, reasonCode: 1),
            RevokedEntry(serialHex: "0a", revocationDate: now, reasonCode: 7),
            RevokedEntry(serialHex: "0a", revocationDate: now, reasonCode: 11),
        ] {
            #expect(throws: PKIError.self) {
                try issuer.revocationList(entries: [entry], number: 1, thisUpdate: now, nextUpdate: now.addingTimeInterval(60))
            }
        }
        #expect(throws: PKIError.self) {
            try issuer.revocationList(entries: [], number: 1, thisUpdate: now, nextUpdate: now)
        }
    }
}

/// OCSP request parsing: never a crash, whatever the bytes.
@Suite struct OCSPRequestTests {
    /// An OCSP request for serial 0x1234 by SHA-1 CertID, with a nonce extension (as openssl sends).
    static func request() -> [UInt8] {
        func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] { [tag, UInt8(content.count)] + content }
        let sha1 = tlv(0x30, [0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00])
        let certID = tlv(
            0x30,
            sha1 + tlv(0x04, [UInt8](repeating: 1, count: 20)) + tlv(0x04, [UInt8](repeating: 2, count: 20)) + tlv(0x02, [0x12, 0x34]))
        let list = tlv(0x30, tlv(0x30, certID))
        let nonceOID: [UInt8] = [0x06, 0x09, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02]
        let nonce = tlv(0x30, nonceOID + tlv(0x04, tlv(0x04, [UInt8](repeating: 7, count: 16))))
        return tlv(0x30, tlv(0x30, list + tlv(0xA2, tlv(0x30, nonce))))
    }

    @Test func aRequestIsReadWithItsSerialAndNonce() throws {
        let parsed = try OCSP.parseRequest(Self.request())
        #expect(parsed.certIDs.map(\.serialHex) == ["1234"])
        #expect(parsed.certIDs.first?.hashAlgorithm == .sha1)
        #expect(parsed.nonceExtension?.count == 33, "SEQUENCE { id-pkix-ocsp-nonce, OCTET STRING { OCTET STRING (16) } }")
    }

    @Test func everyTruncationAndByteFlipIsAnErrorOrAParseNeverACrash() {
        let good = Self.request()
        for length in 0..<good.count {
            #expect(throws: PKIError.self) { try OCSP.parseRequest(Array(good.prefix(length))) }
        }
        for index in good.indices {
            for flip: UInt8 in [0x01, 0x80, 0xFF] {
                var bytes = good
                bytes[index] ^= flip
                _ = try? OCSP.parseRequest(bytes)
            }
        }
    }
}
