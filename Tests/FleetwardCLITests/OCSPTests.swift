import FleetwardTestSupport
import Foundation
import Testing

/// The OCSP responder, asked by `openssl ocsp` and by curl with hand-broken requests.
@Suite(.tags(.slow)) struct OCSPTests {
    static func base(_ fixture: ESTFixture) -> String { fixture.api.replacingOccurrences(of: "/api/v1", with: "") }

    /// `openssl ocsp` for `certificates` under `issuer`: its stdout and stderr together.
    static func ask(_ fixture: ESTFixture, issuer: String, _ certificates: [String], extra: [String] = []) throws -> String {
        var arguments = ["ocsp", "-issuer", issuer, "-url", base(fixture) + "/ocsp", "-CAfile", fixture.data + "/ca/root.pem"]
        for certificate in certificates { arguments += ["-cert", certificate] }
        let result = try fixture.cli.openssl.run(arguments + extra, timeout: 30)
        return result.stdout + result.stderr
    }

    @Test func opensslSeesGoodThenRevokedWithAVerifiedSignatureAndItsNonce() throws {
        let fixture = try ESTFixture()
        let device = try GatewayTests.enroll(fixture, "ocsp-dev")
        let issuing = fixture.data + "/ca/issuing.pem"
        let first = try Self.ask(fixture, issuer: issuing, [device.certificate], extra: ["-resp_text"])
        #expect(first.contains("Response verify OK"), "\(first)")
        #expect(first.contains("\(device.certificate): good"), "\(first)")
        #expect(first.contains("OCSP Nonce") && !first.contains("WARNING: no nonce"), "\(first)")
        #expect(first.contains("Fleetward OCSP Responder"), "the delegated responder certificate travels with the answer: \(first)")
        #expect(first.contains("This Update") && first.contains("Next Update"))

        let serial = try RevocationTests.serial(fixture, device.certificate)
        let (status, _) = try fixture.apiCall(
            "POST", "/certificates/\(serial)/revoke", token: fixture.admin, json: #"{"reason":"superseded"}"#)
        #expect(status == 200)
        let second = try Self.ask(fixture, issuer: issuing, [device.certificate])
        #expect(second.contains("Response verify OK"), "\(second)")
        #expect(second.contains("\(device.certificate): revoked"), "\(second)")
        #expect(second.contains("Reason: superseded"), "\(second)")

        // A serial the registry never recorded is unknown; a birth certificate is answered by the factory CA.
        let forged = try GatewayTests.forge(fixture, "ocsp-dev", name: "forged", start: "20260101000000Z", end: "20990101000000Z")
        #expect(try Self.ask(fixture, issuer: issuing, [forged.certificate]).contains("\(forged.certificate): unknown"))
        let birth = try fixture.birthCertificate("ocsp-birth").certificate
        let factoryAnswer = try Self.ask(fixture, issuer: fixture.data + "/ca/factory.pem", [birth])
        #expect(factoryAnswer.contains("Response verify OK") && factoryAnswer.contains("\(birth): good"), "\(factoryAnswer)")
    }

    @Test func theGETFormAnswersTheSameAndBadRequestsGetOCSPErrorStatuses() throws {
        let fixture = try ESTFixture()
        let device = try GatewayTests.enroll(fixture, "ocsp-get")
        let request = fixture.directory.file("request.der")
        try fixture.cli.openssl([
            "ocsp", "-issuer", fixture.data + "/ca/issuing.pem", "-cert", device.certificate, "-no_nonce", "-reqout", request,
        ])
        let der = try fixture.directory.read("request.der")
        let encoded = Data(der).base64EncodedString().addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let answer = fixture.directory.file("get.der")
        let get = try fixture.curl.run(
            ["-s", "-S", "-o", answer, "-w", "%{http_code} %{content_type}", Self.base(fixture) + "/ocsp/" + encoded], timeout: 20)
        #expect(get.stdout == "200 application/ocsp-response", "\(get)")
        let read = try fixture.cli.openssl.run([
            "ocsp", "-respin", answer, "-issuer", fixture.data + "/ca/issuing.pem", "-cert", device.certificate, "-CAfile",
            fixture.data + "/ca/root.pem",
        ])
        #expect((read.stdout + read.stderr).contains("Response verify OK") && read.stdout.contains(": good"), "\(read)")

        /// POSTs `body` and returns the answer's bytes.
        func post(_ body: [UInt8], type: String = "application/ocsp-request") throws -> [UInt8] {
            try fixture.directory.write("body.bin", body)
            let out = fixture.directory.file("answer.bin")
            let result = try fixture.curl.run(
                [
                    "-s", "-S", "-o", out, "-w", "%{http_code}", "-H", "Content-Type: \(type)", "--data-binary",
                    "@" + fixture.directory.file("body.bin"), Self.base(fixture) + "/ocsp",
                ], timeout: 20)
            #expect(result.stdout == "200", "\(result)")
            return try fixture.directory.read("answer.bin")
        }
        let malformed: [UInt8] = [0x30, 0x03, 0x0A, 0x01, 0x01]
        #expect(try post(Array("not an OCSP request".utf8)) == malformed)
        #expect(try post(Array(der.prefix(der.count / 2))) == malformed, "truncated")
        #expect(try post((0..<20_000).map { _ in UInt8.random(in: 0...255) }) == malformed, "oversized")
        #expect(try post(der, type: "text/plain") == malformed, "wrong content type")
        #expect(try post([]) == malformed, "empty")
        // A certificate from a CA that is not ours: unauthorized (6).
        try fixture.cli.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            fixture.directory.file("other.key"),
            "-out", fixture.directory.file("other.pem"), "-subj", "/CN=Other CA", "-days", "30",
        ])
        try fixture.cli.openssl([
            "ocsp", "-issuer", fixture.directory.file("other.pem"), "-cert", device.certificate, "-reqout",
            fixture.directory.file("other.der"),
        ])
        #expect(try post(try fixture.directory.read("other.der")) == [0x30, 0x03, 0x0A, 0x01, 0x06])
        // The server is still answering.
        #expect(try post(der).count > 100)
    }
}
