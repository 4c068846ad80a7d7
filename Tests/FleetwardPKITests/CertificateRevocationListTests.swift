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
