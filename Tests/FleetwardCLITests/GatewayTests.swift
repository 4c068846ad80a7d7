import FleetwardTestSupport
import Foundation
import Testing

/// The device gateway, driven with curl and openssl s_client: who gets through the handshake,
/// and how fast a registry change cuts a live connection.
@Suite(.tags(.slow)) struct GatewayTests {
    /// An enrolled device: its certificate and key files.
    struct Enrolled {
        var id: String
        var certificate: String
        var key: String
    }

    static func enroll(_ fixture: ESTFixture, _ id: String) throws -> Enrolled {
        let secret = "secret-\(id)-0123456789"
        try fixture.allow(["\(id),\(secret),,sensor,"])
        let csr = try fixture.csr(id)
        let pem = try fixture.acceptCertificate(try fixture.enroll(csr: csr, user: "\(id):\(secret)"), as: id)
        return Enrolled(id: id, certificate: pem, key: fixture.directory.file(id + ".key"))
    }

    /// `curl --cert … /v1/whoami`: the exit status and body.
    static func whoami(_ fixture: ESTFixture, certificate: String?, key: String?) throws -> (exit: Int32, body: String) {
        var arguments = ["-s", "--max-time", "15", "--cacert", fixture.data + "/ca/root.pem"]
        if let certificate, let key { arguments += ["--cert", certificate, "--key", key] }
        let result = try fixture.curl.run(arguments + [fixture.gateway + "/v1/whoami"], timeout: 30)
        return (result.status, result.stdout)
    }

    /// Signs a certificate for `id` with openssl under the issuing CA (its key decrypted with the
    /// passphrase into the test's directory), with the device profile and the given dates: a
    /// certificate the registry has never seen.
    static func forge(_ fixture: ESTFixture, _ id: String, name: String, start: String, end: String) throws -> Enrolled {
        let dir = fixture.directory
        if !FileManager.default.fileExists(atPath: dir.file("issuing-plain.key")) {
            try fixture.cli.openssl([
                "pkey", "-in", fixture.data + "/ca/issuing.key", "-passin", "pass:" + CLI.passphrase, "-out", dir.file("issuing-plain.key"),
            ])
            try dir.write(
                "ca.cnf",
                """
                [ca]
                default_ca = fleet
                [fleet]
                database = \(dir.file("index.txt"))
                new_certs_dir = \(dir.path)
                serial = \(dir.file("serial"))
                default_md = sha256
                policy = anything
                unique_subject = no
                [anything]
                commonName = optional
                [device]
                basicConstraints = critical, CA:FALSE
                keyUsage = critical, digitalSignature
                extendedKeyUsage = clientAuth
                certificatePolicies = 1.2.840.113556.1.8000.2554.41859.15517.20887.16429.36653.1713437.4589622.1.1
                subjectAltName = @names
                [names]
                URI.1 = urn:fleetward:device:\(id)

                """)
            try dir.write("index.txt", "")
            try dir.write("serial", "1000\n")
        }
        try fixture.cli.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file(name + ".key"),
            "-subj", "/CN=\(id)", "-out", dir.file(name + ".csr"),
        ])
        try fixture.cli.openssl([
            "ca", "-batch", "-config", dir.file("ca.cnf"), "-cert", fixture.data + "/ca/issuing.pem", "-keyfile",
            dir.file("issuing-plain.key"),
            "-in", dir.file(name + ".csr"), "-out", dir.file(name + ".pem"), "-startdate", start, "-enddate", end, "-extensions", "device",
            "-notext",
        ])
        return Enrolled(id: id, certificate: dir.file(name + ".pem"), key: dir.file(name + ".key"))
    }

    @Test func aGoodDeviceConnectsAndEveryBadCertificateIsRefusedInTheHandshake() throws {
        let fixture = try ESTFixture()
        let good = try Self.enroll(fixture, "gw-good")
        let answer = try Self.whoami(fixture, certificate: good.certificate, key: good.key)
        #expect(answer.exit == 0, "\(answer)")
        let identity = try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any], "\(answer.body)")
        #expect(identity["device"] as? String == "gw-good")
        let fingerprint = try fixture.cli.openssl(["x509", "-in", good.certificate, "-noout", "-fingerprint", "-sha256"]).stdout
        #expect(
            fingerprint.lowercased().replacingOccurrences(of: ":", with: "").contains(identity["certificateSHA256"] as? String ?? "-"),
            "\(fingerprint) vs \(identity)")
        // openssl s_client completes a TLS 1.3 handshake with the same certificate.
        let client = try fixture.cli.openssl.run(
            [
                "s_client", "-connect", fixture.gateway.replacingOccurrences(of: "https://", with: ""), "-CAfile",
                fixture.data + "/ca/root.pem",
                "-cert", good.certificate, "-key", good.key, "-verify_return_error", "-brief", "-ign_eof",
            ], stdin: Array("GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8), timeout: 30)
        #expect(client.stdout.contains("gw-good"), "\(client)")
        #expect(client.stderr.contains("TLSv1.3"), "\(client.stderr)")

        // Refused, each for its reason, before any HTTP: curl gets no status line at all.
        var refusals: [(what: String, certificate: String?, key: String?, logged: String)] = []
        try fixture.cli.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", fixture.directory.file("self.key"),
            "-out", fixture.directory.file("self.pem"), "-subj", "/CN=gw-good", "-days", "30",
        ])
        refusals.append(
            (
                "self-signed", fixture.directory.file("self.pem"), fixture.directory.file("self.key"),
                "not issued by the Fleetward issuing CA"
            ))
        refusals.append(("no certificate", nil, nil, ""))
        // A birth certificate from the factory line.
        let birth = try fixture.birthCertificate("gw-birth")
        refusals.append(("birth certificate", birth.certificate, birth.key, "a birth certificate cannot connect"))
        // Signed by the issuing CA with the device profile, but never recorded; expired; not yet valid.
        let unrecorded = try Self.forge(fixture, "gw-good", name: "unrecorded", start: "20260101000000Z", end: "20990101000000Z")
        refusals.append(("not on record", unrecorded.certificate, unrecorded.key, "is not on record for device gw-good"))
        let expired = try Self.forge(fixture, "gw-good", name: "expired", start: "20200101000000Z", end: "20200201000000Z")
        refusals.append(("expired", expired.certificate, expired.key, "has expired"))
        let early = try Self.forge(fixture, "gw-good", name: "early", start: "20980101000000Z", end: "20990101000000Z")
        refusals.append(("not yet valid", early.certificate, early.key, "is not yet valid"))
        // Revoked certificate; suspended device; stolen device.
        let revoked = try Self.enroll(fixture, "gw-revoked")
        let serial = try fixture.cli.openssl(["x509", "-in", revoked.certificate, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", serial]).succeeded)
        refusals.append(("revoked certificate", revoked.certificate, revoked.key, "is revoked"))
        let suspended = try Self.enroll(fixture, "gw-suspended")
        #expect(try fixture.cli.run(["devices", "suspend", "--data", fixture.data, "gw-suspended"]).succeeded)
        refusals.append(("suspended device", suspended.certificate, suspended.key, "device gw-suspended is suspended"))
        let stolen = try Self.enroll(fixture, "gw-stolen")
        #expect(try fixture.apiCall("POST", "/devices/gw-stolen/report-stolen", token: fixture.admin).0 == 200)
        refusals.append(("stolen device", stolen.certificate, stolen.key, "device gw-stolen is stolen"))

        for refusal in refusals {
            let refused = try Self.whoami(fixture, certificate: refusal.certificate, key: refusal.key)
            #expect(refused.exit != 0 && refused.body.isEmpty, "\(refusal.what) got through: \(refused)")
            if !refusal.logged.isEmpty {
                #expect(
                    fixture.server.stderr.contains(refusal.logged),
                    "\(refusal.what): '\(refusal.logged)' not logged in \(fixture.server.stderr)")
            }
        }
        // The good device still gets in, and nothing secret reached the log.
        #expect(try Self.whoami(fixture, certificate: good.certificate, key: good.key).exit == 0)
        #expect(!fixture.server.stderr.contains("secret-gw-good"))
    }

    /// The three signature headers for `body`, signed with openssl (`dgst -sha256 -sign`) over the
    /// bytes README documents: `fleetward-telemetry-v1\n<device>\n<timestamp>\n<nonce>\n<body>`.
    static func signedHeaders(
        _ fixture: ESTFixture, body: String, device: String, key: String, nonce: String = UUID().uuidString,
        timestamp: Int = Int(Date().timeIntervalSince1970)
    ) throws -> [String] {
        let dir = fixture.directory
        try dir.write("signed.bin", "fleetward-telemetry-v1\n\(device)\n\(timestamp)\n\(nonce)\n" + body)
        try fixture.cli.openssl(["dgst", "-sha256", "-sign", key, "-out", dir.file("signature.der"), dir.file("signed.bin")])
        let signature = try Data(contentsOf: URL(fileURLWithPath: dir.file("signature.der"))).base64EncodedString()
        return [
            "-H", "Fleetward-Timestamp: \(timestamp)", "-H", "Fleetward-Nonce: \(nonce)", "-H", "Fleetward-Signature: \(signature)",
        ]
    }

    @Test func telemetryMustBeSignedFreshAndOnceAndBadBodiesAreRefused() throws {
        let fixture = try ESTFixture()
        let device = try Self.enroll(fixture, "gw-telemetry")
        let other = try Self.enroll(fixture, "gw-telemetry-other")
        /// POSTs `body` to /v1/telemetry with the device's certificate and `headers`: the status.
        func send(_ body: String, type: String = "application/json", headers: [String]) throws -> Int {
            try fixture.directory.write("telemetry.json", body)
            let result = try fixture.curl.run(
                [
                    "-s", "--max-time", "15", "--cacert", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key,
                    "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: \(type)", "--data-binary",
                    "@" + fixture.directory.file("telemetry.json"), fixture.gateway + "/v1/telemetry",
                ] + headers, timeout: 30)
            return Int(result.stdout) ?? 0
        }
        func signed(_ body: String, key: String? = nil, device id: String = "gw-telemetry", nonce: String = UUID().uuidString, age: Int = 0)
            throws -> [String]
        {
            try Self.signedHeaders(
                fixture, body: body, device: id, key: key ?? device.key, nonce: nonce, timestamp: Int(Date().timeIntervalSince1970) - age)
        }
        let good = #"{"temperature": 21.5, "door": "closed"}"#
        let goodHeaders = try signed(good)
        #expect(try send(good, headers: goodHeaders) == 202)
        #expect(try send(good, headers: goodHeaders) == 409, "the same signed message again is a replay")
        #expect(try send(good, headers: []) == 401, "unsigned")
        #expect(try send(good, headers: try signed(good, age: 600)) == 401, "ten minutes old")
        #expect(try send(good, headers: try signed(good, age: -600)) == 401, "ten minutes in the future")
        #expect(try send(#"{"temperature": 99}"#, headers: try signed(good)) == 401, "the body was changed after signing")
        #expect(try send(good, headers: try signed(good, key: other.key)) == 401, "signed by another device's key")
        #expect(try send(good, headers: try signed(good, device: "gw-telemetry-other")) == 401, "signed for another device")
        #expect(try send(good, headers: try signed(good, nonce: "short")) == 400, "a nonce too short")
        #expect(try send("not json", headers: try signed("not json")) == 400)
        #expect(try send("[1, 2, 3]", headers: try signed("[1, 2, 3]")) == 400)
        #expect(try send(#"{"a": 1}"#, type: "text/plain", headers: try signed(#"{"a": 1}"#)) == 415)
        let big = "{\"pad\": \"" + String(repeating: "x", count: 70_000) + "\"}"
        #expect(try send(big, headers: try signed(big)) == 413)
        let (status, json) = try fixture.apiCall("GET", "/devices/gw-telemetry/telemetry", token: fixture.admin)
        #expect(status == 200)
        let messages = json["telemetry"] as? [[String: Any]] ?? []
        #expect(messages.count == 1, "only the good message is stored, once: \(json)")
        #expect((messages.first?["body"] as? String)?.contains("\"temperature\": 21.5") == true, "\(json)")
        #expect(messages.first?["device"] as? String == "gw-telemetry")
    }

    @Test func reverseProxyModeForwardsWithTheProvenIdentityAndDropsForgedHeaders() throws {
        let upstreamDirectory = try TemporaryDirectory(prefix: "fleetward-upstream")
        defer { upstreamDirectory.remove() }
        // The backend: nginx echoing what it was told about the caller.
        let backend = try NginxProcess(
            in: upstreamDirectory,
            server: """
                        listen 127.0.0.1:PORT;
                        location / {
                            return 200 "device=[$http_x_fleetward_device] owner=[$http_x_fleetward_owner] sha=[$http_x_fleetward_cert_sha256] $request_method $request_uri extra=[$http_x_extra]\\n";
                        }
                """)
        defer { backend.stop() }
        let fixture = try ESTFixture(serveArguments: ["--upstream", "http://127.0.0.1:\(backend.port)"])
        #expect(fixture.server.stdout.contains("forwarding to http://127.0.0.1:\(backend.port)"))
        let device = try Self.enroll(fixture, "gw-proxied")
        let fingerprint =
            try fixture.cli.openssl(["x509", "-in", device.certificate, "-noout", "-fingerprint", "-sha256"]).stdout
            .split(separator: "=").last.map { $0.replacingOccurrences(of: ":", with: "").lowercased() }?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "-"
        let forwarded = try fixture.curl.run(
            [
                "-s", "--max-time", "15", "--cacert", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key,
                "-H", "X-Fleetward-Device: someone-else", "-H", "x-fleetward-owner: mallory", "-H", "X-Fleetward-Cert-Sha256: 00",
                "-H", "X-Extra: kept", "-w", "\n%{http_code}", fixture.gateway + "/api/readings?since=5",
            ], timeout: 30)
        let lines = forwarded.stdout.split(separator: "\n")
        #expect(lines.last == "200", "\(forwarded)\nserve: \(fixture.server.stderr)\nnginx: \(backend.errorLog)")
        let echo = lines.first.map(String.init) ?? ""
        #expect(echo.contains("device=[gw-proxied]"), "\(echo)")
        #expect(echo.contains("owner=[]"), "a device without an owner sends none, and the forged one is gone: \(echo)")
        #expect(echo.contains("sha=[\(fingerprint)]"), "\(echo) vs \(fingerprint)")
        #expect(echo.contains("GET /api/readings?since=5") && echo.contains("extra=[kept]"), "\(echo)")
        // whoami is still the gateway's own; a refused certificate never reaches the backend.
        #expect(try Self.whoami(fixture, certificate: device.certificate, key: device.key).body.contains("\"device\":\"gw-proxied\""))
        #expect(try fixture.cli.run(["devices", "suspend", "--data", fixture.data, "gw-proxied"]).succeeded)
        // A change reaches the gateway's memory within a second.
        var refused = (exit: Int32(0), body: "")
        #expect(
            try eventually(timeout: 5) {
                refused = try Self.whoami(fixture, certificate: device.certificate, key: device.key)
                return refused.exit != 0 && refused.body.isEmpty
            }, "a suspended device still got in: \(refused)")
    }

    @Test func aConnectionEndsWhenItsCertificateExpires() throws {
        let fixture = try ESTFixture()
        _ = try Self.enroll(fixture, "gw-expiring")
        // A certificate that expires in a few seconds (no Fleetward profile issues one so short):
        // signed with openssl under the issuing CA and written into the registry with sqlite3.
        let end = Date().addingTimeInterval(8)
        let formatter = DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMddHHmmss'Z'"
        let short = try Self.forge(fixture, "gw-expiring", name: "short", start: "20260101000000Z", end: formatter.string(from: end))
        let serial = try fixture.cli.openssl(["x509", "-in", short.certificate, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        let sha =
            try fixture.cli.openssl(["x509", "-in", short.certificate, "-noout", "-fingerprint", "-sha256"]).stdout
            .split(separator: "=").last.map { $0.replacingOccurrences(of: ":", with: "").lowercased() }?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let milliseconds = Int64(end.timeIntervalSince1970) * 1000
        let record = try Tool("sqlite3").run([
            fixture.data + "/registry.sqlite",
            "INSERT INTO certificates (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at) "
                + "VALUES ('\(serial)', 'gw-expiring', 'device', NULL, 0, \(milliseconds), '\(sha)', 0)",
        ])
        try #require(record.succeeded, "\(record)")
        let connection = try HeldConnection(fixture, short, name: "expiring")
        defer { connection.stop() }
        #expect(connection.proveConnected("gw-expiring"))
        let closed = connection.waitForClose(seconds: 15)
        // The certificate's notAfter is `end` cut to whole seconds (as UTCTime and the registry
        // row say); measure from that, not from `end`.
        let notAfter = Date(timeIntervalSince1970: end.timeIntervalSince1970.rounded(.down))
        let after = closed.map { $0.timeIntervalSince(notAfter) }
        #expect(after != nil && after! > -0.5 && after! < 1.5, "closed \(String(describing: after)) s after notAfter")
        #expect(fixture.server.stderr.contains("the certificate expired"))
    }

    /// The server's sockets on `port` that the client has closed and the server has not
    /// (CLOSE_WAIT, state 08 in /proc/net/tcp).
    static func halfClosed(port: Int) throws -> Int {
        let wanted = String(format: ":%04X", port)
        var count = 0
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                if fields.count > 3, fields[1].hasSuffix(wanted), fields[3] == "08" { count += 1 }
            }
        }
        return count
    }

    /// A client that hangs up (after a kept-alive answer, after `Connection: close`, without
    /// close_notify, or in the middle of a request) leaves nothing held on the gateway or the EST
    /// listener: each connection ends when its client's does, not after NIOSSL's 5 s shutdown
    /// timeout or never.
    @Test func clientsThatHangUpLeaveNoHalfClosedConnectionBehind() throws {
        let fixture = try ESTFixture()
        let device = try Self.enroll(fixture, "gw-hangup")
        func port(_ url: String) throws -> Int {
            try #require(URLComponents(string: url)?.port)
        }
        let ports = [try port(fixture.gateway), try port(fixture.est)]
        let tls = ["-s", "--max-time", "15", "--cacert", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key]
        for extra in [[], ["-H", "Connection: close"]] {
            let result = try fixture.curl.run(
                tls + extra + ["-o", "/dev/null", "-w", "%{http_code}", fixture.gateway + "/v1/whoami"], timeout: 30)
            #expect(result.stdout == "200", "\(result)")
            let cacerts = try fixture.curl.run(
                tls + extra + ["-o", "/dev/null", "-w", "%{http_code}", fixture.est + "/cacerts"], timeout: 30)
            #expect(cacerts.stdout == "200", "\(cacerts)")
        }
        // s_client ends on end of input (without -quiet, which implies -ign_eof): once in the middle
        // of a request, once right after a whole one, whether or not the answer has come.
        let host = fixture.gateway.replacingOccurrences(of: "https://", with: "")
        for request in ["GET /v1/whoami HTTP/1.1\r\nHost: local", "GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n"] {
            _ = try fixture.cli.openssl.run(
                ["s_client", "-connect", host, "-CAfile", fixture.data + "/ca/root.pem", "-cert", device.certificate, "-key", device.key],
                stdin: Array(request.utf8), timeout: 30)
        }
        var held = ports.map { (try? Self.halfClosed(port: $0)) ?? -1 }
        for _ in 0..<30 where held != [0, 0] {
            Thread.sleep(forTimeInterval: 0.1)
            held = ports.map { (try? Self.halfClosed(port: $0)) ?? -1 }
        }
        #expect(held == [0, 0], "half-closed connections still held 3 s after their clients left (gateway, EST): \(held)")
    }

    /// HTTP/1.1 pipelining on a device listener: requests sent back to back in one write are
    /// answered in order, one at a time, and nothing after a `Connection: close` request is.
    @Test func pipelinedRequestsAreAnsweredInOrderAndNothingAfterAClose() throws {
        let fixture = try ESTFixture()
        let host = fixture.est.replacingOccurrences(of: "https://", with: "").split(separator: "/").first.map(String.init) ?? ""
        let get = { (path: String, extra: String) in "GET /.well-known/est/\(path) HTTP/1.1\r\nHost: localhost\r\n\(extra)\r\n" }
        let requests =
            get("cacerts", "") + get("csrattrs", "") + get("cacerts", "Connection: close\r\n") + get("csrattrs", "")
        let result = try fixture.cli.openssl.run(
            ["s_client", "-connect", host, "-CAfile", fixture.data + "/ca/root.pem", "-ign_eof", "-quiet"],
            stdin: Array(requests.utf8), timeout: 30)
        let types = result.stdout.split(separator: "\r\n").filter { $0.lowercased().hasPrefix("content-type:") }.map {
            $0.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces)
        }
        #expect(result.stdout.components(separatedBy: "HTTP/1.1 200 OK").count - 1 == 3, "\(result)")
        #expect(
            types == [
                "application/pkcs7-mime; smime-type=certs-only", "application/csrattrs", "application/pkcs7-mime; smime-type=certs-only",
            ],
            "\(result)")
        #expect(result.stdout.lowercased().contains("connection: close"), "the third answer says the connection ends")
        #expect(!result.stdout.contains("HTTP/1.1 400"), "what follows a close is not answered: \(result)")
        // Bytes that are not HTTP after a good request: the good one is answered first, then 400.
        let garbage = try fixture.cli.openssl.run(
            ["s_client", "-connect", host, "-CAfile", fixture.data + "/ca/root.pem", "-ign_eof", "-quiet"],
            stdin: Array((get("csrattrs", "") + "NOT HTTP AT ALL\r\n\r\n").utf8), timeout: 30)
        // (the csrattrs body ends in a bare line feed, so lines are split on either ending)
        let statuses = garbage.stdout.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).filter { $0.hasPrefix("HTTP/1.1 ") }
        #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"], "\(garbage)")
    }

    /// `openssl s_client` with a saved session: writes (`-sess_out`) or resumes (`-sess_in`) it and
    /// asks whoami; stdout and stderr together.
    static func session(_ fixture: ESTFixture, _ device: Enrolled, _ mode: String, _ file: String) throws -> String {
        let result = try fixture.cli.openssl.run(
            [
                "s_client", "-connect", fixture.gateway.replacingOccurrences(of: "https://", with: ""), "-CAfile",
                fixture.data + "/ca/root.pem", "-cert", device.certificate, "-key", device.key, mode, file, "-ign_eof",
            ], stdin: Array("GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8), timeout: 30)
        return result.stdout + result.stderr
    }

    /// BoringSSL resumes TLS 1.3 sessions from tickets, and a resumed handshake sends no
    /// certificate: the gateway checks the one the session carries before any HTTP.
    @Test func aResumedSessionIsHeldToTheSameChecksAsAFullHandshake() throws {
        let fixture = try ESTFixture()
        let suspended = try Self.enroll(fixture, "gw-resume-a")
        let revoked = try Self.enroll(fixture, "gw-resume-b")
        for device in [suspended, revoked] {
            let ticket = fixture.directory.file(device.id + ".session")
            let full = try Self.session(fixture, device, "-sess_out", ticket)
            #expect(full.contains("New, TLSv1.3") && full.contains("\"device\":\"\(device.id)\""), "\(full)")
            let resumed = try Self.session(fixture, device, "-sess_in", ticket)
            #expect(resumed.contains("Reused, TLSv1.3"), "no resumption: \(resumed)")
            #expect(resumed.contains("\"device\":\"\(device.id)\""), "a resumed session keeps its identity: \(resumed)")
        }
        #expect(try fixture.apiCall("POST", "/devices/gw-resume-a/suspend", token: fixture.admin).0 == 200)
        let serial = try fixture.cli.openssl(["x509", "-in", revoked.certificate, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", serial]).succeeded)
        for (device, reason) in [(suspended, "device gw-resume-a is suspended"), (revoked, "is revoked")] {
            // A change reaches the gateway's memory within a second.
            var refused = ""
            _ = try eventually(timeout: 5) {
                refused = try Self.session(fixture, device, "-sess_in", fixture.directory.file(device.id + ".session"))
                return !refused.contains("\"device\"")
            }
            #expect(!refused.contains("\"device\""), "\(device.id) resumed its way in: \(refused)")
            #expect(!refused.contains("HTTP/1.1"), "no HTTP at all: \(refused)")
            #expect(fixture.server.stderr.contains(reason), "'\(reason)' not logged")
        }
    }

    /// An `openssl s_client` holding one mTLS connection open, its stdin kept for requests.
    final class HeldConnection: @unchecked Sendable {
        let process = Process()
        let input = Pipe()
        let output: String
        private let lock = NSLock()
        private var ended: Date?

        convenience init(_ fixture: ESTFixture, _ device: Enrolled, name: String) throws {
            try self.init(fixture, device, name: name, gateway: fixture.gateway)
        }

        init(_ fixture: ESTFixture, _ device: Enrolled, name: String, gateway: String) throws {
            output = fixture.directory.file("held-\(name).out")
            FileManager.default.createFile(atPath: output, contents: nil)
            process.executableURL = URL(fileURLWithPath: fixture.cli.openssl.executable)
            process.arguments = [
                "s_client", "-connect", gateway.replacingOccurrences(of: "https://", with: ""), "-CAfile",
                fixture.data + "/ca/root.pem", "-cert", device.certificate, "-key", device.key, "-quiet",
            ]
            let sink = FileHandle(forWritingAtPath: output)
            process.standardOutput = sink
            process.standardError = sink
            process.standardInput = input
            process.terminationHandler = { [weak self] _ in self?.markEnded() }
            try process.launchSerialized()
            try? sink?.close()
        }

        /// Sends a whoami request on the connection and waits (bounded) for its answer.
        func proveConnected(_ device: String) -> Bool {
            input.fileHandleForWriting.write(Data("GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
            for _ in 0..<200 {
                if (try? String(contentsOfFile: output, encoding: .utf8))?.contains("\"device\":\"\(device)\"") == true { return true }
                Thread.sleep(forTimeInterval: 0.05)
            }
            return false
        }

        private func markEnded() { lock.withLock { ended = Date() } }

        var endedAt: Date? { lock.withLock { ended } }

        /// Waits up to `seconds` for the server to close the connection (s_client then exits).
        func waitForClose(seconds: Double) -> Date? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if let endedAt { return endedAt }
                Thread.sleep(forTimeInterval: 0.01)
            }
            return endedAt
        }

        func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            try? input.fileHandleForWriting.close()
        }
    }

    @Test func liveConnectionsCloseWithinASecondOfAChangeFromTheAPIOrTheConsole() throws {
        let fixture = try ESTFixture()
        let busy = try Self.enroll(fixture, "gw-busy")
        let bystander = try Self.enroll(fixture, "gw-bystander")
        let console = try Self.enroll(fixture, "gw-console")
        var held: [HeldConnection] = []
        defer { for connection in held { connection.stop() } }
        let busyConnections = try (0..<8).map { try HeldConnection(fixture, busy, name: "busy-\($0)") }
        let bystanderConnections = try (0..<2).map { try HeldConnection(fixture, bystander, name: "bystander-\($0)") }
        let consoleConnections = try (0..<2).map { try HeldConnection(fixture, console, name: "console-\($0)") }
        held = busyConnections + bystanderConnections + consoleConnections
        for connection in busyConnections { #expect(connection.proveConnected("gw-busy")) }
        for connection in bystanderConnections { #expect(connection.proveConnected("gw-bystander")) }
        for connection in consoleConnections { #expect(connection.proveConnected("gw-console")) }

        // Suspended through the management API: every one of its connections closes.
        let (status, _) = try fixture.apiCall("POST", "/devices/gw-busy/suspend", token: fixture.admin)
        #expect(status == 200)
        let changed = Date()
        for connection in busyConnections {
            let closed = connection.waitForClose(seconds: 5)
            let delay = closed.map { $0.timeIntervalSince(changed) }
            // The gateway polls the change feed every 200 ms; 1 s is the promise, the extra half
            // second absorbs process-exit detection on a loaded machine.
            #expect(delay != nil && delay! < 1.5, "API suspend: connection closed after \(String(describing: delay)) s")
        }
        // Suspended at the console by another process on the same data directory.
        #expect(try fixture.cli.run(["devices", "suspend", "--data", fixture.data, "gw-console"]).succeeded)
        let consoleChanged = Date()
        for connection in consoleConnections {
            let delay = connection.waitForClose(seconds: 5).map { $0.timeIntervalSince(consoleChanged) }
            #expect(delay != nil && delay! < 1.5, "console suspend: connection closed after \(String(describing: delay)) s")
        }
        // The bystander's connections were left alone and still answer.
        for connection in bystanderConnections {
            #expect(connection.endedAt == nil)
            #expect(connection.process.isRunning)
        }
        // Revoking one certificate closes the connections made with it.
        let serial = try fixture.cli.openssl(["x509", "-in", bystander.certificate, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", serial, "--reason", "superseded"]).succeeded)
        let revokedAt = Date()
        for connection in bystanderConnections {
            let delay = connection.waitForClose(seconds: 5).map { $0.timeIntervalSince(revokedAt) }
            #expect(delay != nil && delay! < 1.5, "certificate revoke: connection closed after \(String(describing: delay)) s")
        }
        #expect(fixture.server.stderr.contains("gateway closed a device connection"))
    }

    /// Two `fleetward serve` nodes on one PostgreSQL registry: a device revoked through one node
    /// loses its connections on the other within a second.
    @Test func aRevocationOnOneNodeCutsTheDevicesConnectionsOnAnother() throws {
        let database = try TestPostgres.makeDatabase()
        defer { database.drop() }
        let fixture = try ESTFixture(database: database.url)
        // The second node: the same CA (a copy of the data directory's keys and certificates).
        let second = fixture.directory.file("node-b")
        try FileManager.default.createDirectory(atPath: second, withIntermediateDirectories: true)
        for item in ["ca", "tls", "fleetward.json"] {
            try FileManager.default.copyItem(atPath: fixture.data + "/" + item, toPath: second + "/" + item)
        }
        let nodeB = try RunningServer(
            executable: fixture.cli.fleetward.executable,
            arguments: [
                "serve", "--data", second, "--database", database.url, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0",
                "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off",
            ],
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: fixture.directory.path, expectedListeners: 3)
        defer { nodeB.stop() }
        let gatewayB = try #require(nodeB.listeners["gateway"])

        let device = try Self.enroll(fixture, "gw-two-nodes")
        var held: [HeldConnection] = []
        defer { for connection in held { connection.stop() } }
        held = try (0..<4).map { try HeldConnection(fixture, device, name: "node-b-\($0)", gateway: gatewayB) }
        for connection in held { #expect(connection.proveConnected("gw-two-nodes")) }

        // Revoked through node A's API.
        #expect(try fixture.apiCall("POST", "/devices/gw-two-nodes/revoke", token: fixture.admin).0 == 200)
        let changed = Date()
        for connection in held {
            let delay = connection.waitForClose(seconds: 5).map { $0.timeIntervalSince(changed) }
            #expect(delay != nil && delay! < 1.5, "node B closed the connection after \(String(describing: delay)) s")
        }
        #expect(nodeB.stderr.contains("device gw-two-nodes is revoked"), "\(nodeB.stderr)")
        #expect(nodeB.stderr.contains("gateway follows registry changes through PostgreSQL notifications"), "\(nodeB.stderr)")
    }
}
