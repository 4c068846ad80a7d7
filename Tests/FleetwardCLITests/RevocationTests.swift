import FleetwardTestSupport
import Foundation
import Testing

/// The CRLs `fleetward serve` publishes, read by openssl and enforced by Debian's nginx.
@Suite(.tags(.slow)) struct RevocationTests {
    /// Fetches `/crl/NAME.crl` from the management API into `NAME.crl` (DER) and `NAME.crl.pem`.
    static func fetchCRL(_ fixture: ESTFixture, _ name: String) throws -> String {
        let base = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        let out = fixture.directory.file(name + ".crl")
        let result = try fixture.curl.run(
            ["-s", "-S", "--max-time", "20", "-o", out, "-w", "%{http_code} %{content_type}", base + "/crl/\(name).crl"], timeout: 30)
        #expect(result.stdout == "200 application/pkix-crl", "\(result)")
        try fixture.cli.openssl(["crl", "-inform", "DER", "-in", out, "-out", out + ".pem"])
        return out + ".pem"
    }

    static func serial(_ fixture: ESTFixture, _ pem: String) throws -> String {
        try fixture.cli.openssl(["x509", "-in", pem, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func eachCAPublishesASignedCRLThatListsWhatWasRevoked() throws {
        let fixture = try ESTFixture()
        let good = try GatewayTests.enroll(fixture, "crl-good")
        let bad = try GatewayTests.enroll(fixture, "crl-bad")
        // Before any revocation: every CRL parses and verifies under its CA, and lists nothing.
        for name in ["issuing", "factory", "root"] {
            let pem = try Self.fetchCRL(fixture, name)
            let text = try fixture.cli.openssl(["crl", "-in", pem, "-CAfile", fixture.data + "/ca/\(name).pem", "-noout", "-text"])
            #expect(text.stderr.contains("verify OK"), "\(name): \(text.stderr)")
            #expect(text.stdout.contains("No Revoked Certificates"), "\(name): \(text.stdout)")
            #expect(text.stdout.contains("X509v3 CRL Number") && text.stdout.contains("X509v3 Authority Key Identifier"))
            #expect(text.stdout.contains("Next Update"))
        }
        let before = try Self.fetchCRL(fixture, "issuing")
        let numberBefore = try fixture.cli.openssl(["crl", "-in", before, "-noout", "-crlnumber"]).stdout

        // Revoke one certificate at the console, as keyCompromise by default.
        let badSerial = try Self.serial(fixture, bad.certificate)
        #expect(try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", badSerial]).succeeded)
        // The CRL is rebuilt within a second of a revocation made anywhere.
        var issuing = ""
        var text = ""
        #expect(
            try eventually(timeout: 5) {
                issuing = try Self.fetchCRL(fixture, "issuing")
                text = try fixture.cli.openssl(["crl", "-in", issuing, "-noout", "-text"]).stdout
                return text.contains("Serial Number: \(badSerial.uppercased())")
            }, "the revocation is not on the CRL: \(text)")
        #expect(text.contains("Serial Number: \(badSerial.uppercased())"), "\(text)")
        #expect(text.contains("Key Compromise"), "\(text)")
        #expect(!text.contains(try Self.serial(fixture, good.certificate).uppercased()))
        let numberAfter = try fixture.cli.openssl(["crl", "-in", issuing, "-noout", "-crlnumber"]).stdout
        #expect(numberAfter != numberBefore, "the CRL number did not change: \(numberAfter)")

        // openssl verify with the whole chain's CRLs: the revoked certificate fails, the good one passes.
        let root = try Self.fetchCRL(fixture, "root")
        try fixture.directory.write(
            "crls.pem", try String(contentsOfFile: root, encoding: .utf8) + String(contentsOfFile: issuing, encoding: .utf8))
        func verify(_ pem: String) throws -> Tool.Result {
            try fixture.cli.openssl.run([
                "verify", "-crl_check_all", "-CAfile", fixture.data + "/ca/root.pem", "-untrusted", fixture.data + "/ca/issuing.pem",
                "-CRLfile", fixture.directory.file("crls.pem"), pem,
            ])
        }
        #expect(try verify(good.certificate).succeeded)
        let refused = try verify(bad.certificate)
        #expect(
            !refused.succeeded && refused.stdout.contains("certificate revoked") || refused.stderr.contains("certificate revoked"),
            "\(refused)")
    }

    @Test func nginxWithOurCRLsRefusesARevokedDeviceAndAcceptsAGoodOne() throws {
        let fixture = try ESTFixture()
        let good = try GatewayTests.enroll(fixture, "nginx-good")
        let bad = try GatewayTests.enroll(fixture, "nginx-bad")
        #expect(
            try fixture.apiCall(
                "POST", "/certificates/\(try Self.serial(fixture, bad.certificate))/revoke", token: fixture.admin, json: "{}"
            ).0
                == 200)
        let badSerial = try Self.serial(fixture, bad.certificate).uppercased()
        #expect(
            try eventually(timeout: 5) {
                let crl = try Self.fetchCRL(fixture, "issuing")
                return try fixture.cli.openssl(["crl", "-in", crl, "-noout", "-text"]).stdout.contains("Serial Number: \(badSerial)")
            }, "the revocation did not reach the CRL")
        let dir = fixture.directory
        // nginx reads a CRL for every level of the chain it checks.
        let crls =
            try String(contentsOfFile: try Self.fetchCRL(fixture, "root"), encoding: .utf8)
            + String(contentsOfFile: try Self.fetchCRL(fixture, "issuing"), encoding: .utf8)
        try dir.write("nginx-crl.pem", crls)
        try dir.write(
            "nginx-clients.pem",
            try String(contentsOfFile: fixture.data + "/ca/root.pem", encoding: .utf8)
                + String(contentsOfFile: fixture.data + "/ca/issuing.pem", encoding: .utf8))
        // nginx needs its server key in the clear: a copy in the test's own directory.
        try fixture.cli.openssl([
            "pkey", "-in", fixture.data + "/tls/gateway.key", "-passin", "pass:" + CLI.passphrase, "-out", dir.file("nginx-server.key"),
        ])
        let server = try NginxProcess(
            in: dir,
            server: """
                        listen 127.0.0.1:PORT ssl;
                        ssl_protocols TLSv1.3;
                        ssl_certificate \(fixture.data + "/tls/gateway.pem");
                        ssl_certificate_key \(dir.file("nginx-server.key"));
                        ssl_client_certificate \(dir.file("nginx-clients.pem"));
                        ssl_verify_client on;
                        ssl_verify_depth 2;
                        ssl_crl \(dir.file("nginx-crl.pem"));
                        location / { return 200 "hello $ssl_client_s_dn\\n"; }
                """)
        defer { server.stop() }
        let port = server.port
        func get(_ device: GatewayTests.Enrolled) throws -> (status: String, body: String) {
            let result = try fixture.curl.run(
                [
                    "-s", "--max-time", "10", "--cacert", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key,
                    "-w", "\n%{http_code}", "https://localhost:\(port)/",
                ], timeout: 20)
            let lines = result.stdout.split(separator: "\n")
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        let accepted = try get(good)
        #expect(accepted.status == "200" && accepted.body.contains("CN=nginx-good"), "\(accepted)")
        let refused = try get(bad)
        #expect(refused.status == "400", "\(refused)")
        #expect(server.errorLog.contains("certificate revoked"), "\(server.errorLog)")
    }

    /// Issued certificates say where their CRL and OCSP responder are (init's revocation URL).
    @Test func certificatesPointToTheirCRLAndOCSPResponder() throws {
        let fixture = try ESTFixture()
        let device = try GatewayTests.enroll(fixture, "crl-pointers")
        let text = try fixture.cli.openssl(["x509", "-in", device.certificate, "-noout", "-text"]).stdout
        #expect(text.contains("X509v3 CRL Distribution Points"), "\(text)")
        #expect(text.contains("URI:http://127.0.0.1:8080/crl/issuing.crl"), "\(text)")
        #expect(text.contains("OCSP - URI:http://127.0.0.1:8080/ocsp"), "\(text)")
        let ocspURI = try fixture.cli.openssl(["x509", "-in", device.certificate, "-noout", "-ocsp_uri"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(ocspURI == "http://127.0.0.1:8080/ocsp")
        // The paths are the ones served (this test's server listens on another port than the default).
        let base = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        let answer = try fixture.cli.openssl.run([
            "ocsp", "-issuer", fixture.data + "/ca/issuing.pem", "-cert", device.certificate, "-url",
            ocspURI.replacingOccurrences(of: "http://127.0.0.1:8080", with: base), "-CAfile", fixture.data + "/ca/root.pem",
        ])
        #expect((answer.stdout + answer.stderr).contains(": good"), "\(answer)")
        // Birth certificates point to the factory CA's CRL.
        let birth = try fixture.cli.openssl(["x509", "-in", try fixture.birthCertificate("crl-birth").certificate, "-noout", "-text"])
            .stdout
        #expect(birth.contains("URI:http://127.0.0.1:8080/crl/factory.crl"), "\(birth)")
    }
}
