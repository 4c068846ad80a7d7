import FleetwardTestSupport
import Foundation
import Testing

/// `fleetward demo`: the whole provisioning story in one command, checked from outside.
@Suite(.tags(.slow)) struct DemoCommandTests {
    @Test func theDemoWalksEveryFlowAndItsCertificatesVerifyWithOpenSSL() throws {
        let cli = try CLI()
        let directory = try TemporaryDirectory(prefix: "fleetward-demo-test")
        defer { directory.remove() }
        let fleet = directory.file("fleet")
        let result = try cli.run(["demo", "--keep", fleet])
        #expect(result.succeeded, "\(result)")
        let out = result.stdout
        // With mosquitto installed (scripts/test.sh installs it) the demo walks MQTT too.
        let mqtt = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].contains { FileManager.default.isExecutableFile(atPath: $0) }
        for expected in [
            "simpleenroll → 401",  // a guessed factory secret
            "enroll with its factory secret: simpleenroll → 200",
            "enroll with its birth certificate (TLS client certificate): simpleenroll → 200",
            "renew with the birth certificate: simplereenroll → 403",
            "renew with its operational certificate and a new key: simplereenroll → 200",
            "claim demo-lock-1 with a wrong code: POST /api/v1/claims → 403",
            "enroll with the one-time token: simpleenroll → 200",
            "replay the same token: simpleenroll → 401",
            "demo-lock-1 is active, owned by alice",
            "simplereenroll → 403 certificate",  // the stolen device's certificate is revoked
            "simpleenroll → 202 pending approval, Retry-After",
            "ask again after Retry-After: simpleenroll → 200",
            "a camera from an unregistered manufacturer: simpleenroll → 403",
            "admitted as demo-sensor-1",
            "send telemetry signed by its key (timestamp, nonce): POST /v1/telemetry → 202",
            "replay the same signed message: POST /v1/telemetry → 409",
            "change the reading, keep the signature: POST /v1/telemetry → 401",
            "connect with its birth certificate: refused in the TLS handshake",
            "closed demo-sensor-1's live connection",
            "50 simulated devices enrolled over EST, held 50 mTLS connections",
            "; 0 failed",
            "GET /crl/issuing.crl (no token): demo-lock-1's certificate",
            "POST /ocsp (no token): revoked, reason keyCompromise",
            "audit log intact",
        ] + (mqtt ? [
            "MQTT on mqtts://127.0.0.1:",
            "open an MQTT 5 session over mTLS with its operational certificate: CONNACK success",
            "received devices/demo-tracker-1/telemetry: {\"lat\":52.52,\"lon\":13.40} with the device's signature",
            "publish to another device's topic: refused (PUBACK 0x87, not authorized)",
            "MQTT session",
            "after the revocation: the server ended the session: 0x98 (administrative action)",
            "56 certificates issued, 9 requests refused",
        ] : ["55 certificates issued, 9 requests refused"]) {
            #expect(out.contains(expected), "missing '\(expected)' in:\n\(out)")
        }
        // What the devices got verifies under the fleet's root with openssl.
        for device in ["demo-sensor-1", "demo-meter-1", "demo-lock-1", "demo-camera-1"] {
            let verify = try cli.openssl([
                "verify", "-CAfile", fleet + "/ca/root.pem", "-untrusted", fleet + "/ca/issuing.pem", fleet + "/demo/\(device).pem",
            ])
            #expect(verify.stdout.contains(": OK"), "\(verify)")
            let subject = try cli.openssl(["x509", "-in", fleet + "/demo/\(device).pem", "-noout", "-subject"]).stdout
            #expect(subject.contains("CN = \(device)"), "\(subject)")
        }
        // The demo's servers answer relying parties like `serve`: its CRL and OCSP answer, as the
        // demo fetched them, check out with openssl.
        let crl = try cli.openssl([
            "crl", "-inform", "DER", "-in", fleet + "/demo/issuing.crl", "-CAfile", fleet + "/ca/issuing.pem", "-noout", "-text",
        ])
        #expect(crl.stderr.contains("verify OK"), "\(crl)")
        let lockSerial = try cli.openssl(["x509", "-in", fleet + "/demo/demo-lock-1.pem", "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(crl.stdout.contains("Serial Number: \(lockSerial)"), "\(crl.stdout)")
        let ocsp = try cli.openssl([
            "ocsp", "-respin", fleet + "/demo/demo-lock-1.ocsp", "-issuer", fleet + "/ca/issuing.pem", "-cert",
            fleet + "/demo/demo-lock-1.pem", "-CAfile", fleet + "/ca/root.pem",
        ])
        #expect(ocsp.stdout.contains("demo-lock-1.pem: revoked"), "\(ocsp)")
        #expect(ocsp.stderr.contains("Response verify OK"), "\(ocsp)")
        // The registry on disk agrees, read by another command.
        let lock = try cli.run(["devices", "show", "--data", fleet, "demo-lock-1", "--json"])
        #expect(lock.succeeded, "\(lock)")
        #expect(lock.stdout.contains("\"owner\" : \"alice\"") || lock.stdout.contains("\"owner\":\"alice\""), "\(lock.stdout)")
        // Device keys never reached the disk; the only private keys there are the CA's, encrypted.
        let enumerator = FileManager.default.enumerator(atPath: fleet)
        while let relative = enumerator?.nextObject() as? String {
            guard let text = try? String(contentsOfFile: fleet + "/" + relative, encoding: .utf8) else { continue }
            #expect(!text.contains("BEGIN PRIVATE KEY") && !text.contains("BEGIN EC PRIVATE KEY"), "\(relative) holds a plain key")
        }
    }

    @Test func aKeptDirectoryMustBeNew() throws {
        let cli = try CLI()
        let directory = try TemporaryDirectory(prefix: "fleetward-demo-test")
        defer { directory.remove() }
        try "x".write(toFile: directory.file("something"), atomically: true, encoding: .utf8)
        let result = try cli.run(["demo", "--keep", directory.path])
        cli.expectOneLineError(result, containing: "is not empty")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["something"])
    }
}
