import FleetwardTestSupport
import Foundation
import Testing

/// What a security review of the first slice found, each checked from outside with real tools:
/// every test here failed before its fix.
@Suite(.tags(.slow)) struct HardeningTests {
    /// A manufacturer CA made with openssl, and a device certificate under it for `id`.
    static func manufacturer(_ fixture: ESTFixture, name: String) throws -> String {
        let dir = fixture.directory
        try fixture.cli.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file("\(name).key"), "-out",
            dir.file("\(name).pem"), "-subj", "/O=\(name)/CN=\(name) Devices CA", "-days", "30", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try dir.write("ext.cnf", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        return String(decoding: try dir.read("\(name).pem"), as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n")
    }

    static func leaf(_ fixture: ESTFixture, ca: String, id: String) throws -> (String, String) {
        let dir = fixture.directory
        try fixture.csr("leaf-\(id)", subject: "/serialNumber=\(id)")
        try fixture.cli.openssl([
            "x509", "-req", "-inform", "DER", "-in", dir.file("leaf-\(id).der"), "-CA", dir.file("\(ca).pem"), "-CAkey",
            dir.file("\(ca).key"), "-CAcreateserial", "-days", "30", "-extfile", dir.file("ext.cnf"), "-out", dir.file("leaf-\(id).pem"),
        ])
        return (dir.file("leaf-\(id).pem"), dir.file("leaf-\(id).key"))
    }

    /// A group's manufacturer CA vouches only for the group's own devices: a leaf it signs for an
    /// allow-listed device (or any device registered another way) gets nothing, and a group bound
    /// to an ID pattern registers only IDs in it.
    @Test func anEnrollmentGroupEnrollsOnlyItsOwnDevices() throws {
        let fixture = try ESTFixture()
        let pem = try Self.manufacturer(fixture, name: "acme")
        let (created, _) = try fixture.apiCall(
            "POST", "/groups", token: fixture.admin, json: #"{"name":"acme","caCertificate":"\#(pem)","autoApprove":true,"idPattern":"CAM-*"}"#)
        #expect(created == 201)
        // Someone else's device, on the allow-list with its factory secret.
        try fixture.allow(["SN-VICTIM,0123456789abcdef0123,,cam,"])
        let stolen = try fixture.enroll(csr: try fixture.csr("v", subject: "/"), certificate: try Self.leaf(fixture, ca: "acme", id: "SN-VICTIM"))
        #expect(stolen.status == 403, "\(stolen.status) \(stolen.body)")
        #expect(stolen.body.contains("not registered by enrollment group") || stolen.body.contains("outside the ID pattern"), "\(stolen.body)")
        #expect(try fixture.state("SN-VICTIM") == "allowed")
        // Outside the group's pattern: refused; inside: registered and enrolled (auto-approve).
        #expect(try fixture.enroll(csr: try fixture.csr("x"), certificate: try Self.leaf(fixture, ca: "acme", id: "X-1")).status == 403)
        let own = try fixture.enroll(csr: try fixture.csr("c"), certificate: try Self.leaf(fixture, ca: "acme", id: "CAM-1"))
        _ = try fixture.acceptCertificate(own, as: "cam1")
        #expect(try fixture.state("CAM-1") == "active")
        // The allow-listed device still enrolls the way it was registered.
        _ = try fixture.acceptCertificate(
            try fixture.enroll(csr: try fixture.csr("v2"), user: "SN-VICTIM:0123456789abcdef0123"), as: "victim")
    }

    /// A manufacturer's token sets claim codes only on the devices it registered, never replaces
    /// an unused one without saying so, and never gives one to a device that has an owner.
    @Test func aManufacturerCannotTakeOverDevicesThroughClaimCodes() throws {
        let fixture = try ESTFixture()
        let acme = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "manufacturer"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let globex = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "manufacturer"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(
            try fixture.apiCall("POST", "/devices", token: acme, json: #"{"id":"ACME-1","model":"cam","secret":"0123456789abcdef0123"}"#)
                .0 == 201)
        let (first, printed) = try fixture.apiCall("POST", "/devices/ACME-1/claim-code", token: acme, json: "{}")
        #expect(first == 201)
        #expect(try fixture.apiCall("POST", "/devices/ACME-1/claim-code", token: globex, json: #"{"rotate":true}"#).0 == 404)
        #expect(try fixture.apiCall("POST", "/devices/ACME-1/claim-code", token: acme, json: "{}").0 == 409)
        let (rotated, reprinted) = try fixture.apiCall("POST", "/devices/ACME-1/claim-code", token: acme, json: #"{"rotate":true}"#)
        #expect(rotated == 201 && reprinted["claimCode"] as? String != printed["claimCode"] as? String)
        let (_, audit) = try fixture.apiCall("GET", "/audit?limit=1000", token: fixture.admin)
        let actions = (audit["entries"] as? [[String: Any]] ?? []).compactMap { $0["action"] as? String }
        #expect(actions.contains("device.claim-code") && actions.contains("device.claim-code-rotate"), "\(actions)")
        // Claimed: no new code for anyone.
        let alice = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "owner", "--owner", "alice"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let code = reprinted["claimCode"] as? String ?? ""
        #expect(try fixture.apiCall("POST", "/claims", token: alice, json: #"{"device":"ACME-1","claimCode":"\#(code)"}"#).0 == 200)
        #expect(try fixture.apiCall("POST", "/devices/ACME-1/claim-code", token: acme, json: #"{"rotate":true}"#).0 == 409)
    }

    /// When a device changes hands, nothing enrolled before works after: the seller's live
    /// connection is cut and its certificates are revoked (affiliationChanged); the device
    /// re-enrolls with a token from its new owner.
    @Test func aTransferRevokesTheOldCertificatesAndCutsTheLiveConnection() throws {
        let fixture = try ESTFixture()
        let device = try GatewayTests.enroll(fixture, "hand-1")
        for owner in ["alice", "bob"] {
            #expect(try fixture.apiCall("POST", "/owners", token: fixture.admin, json: #"{"id":"\#(owner)"}"#).0 == 201)
        }
        let alice = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "owner", "--owner", "alice"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (_, code) = try fixture.apiCall("POST", "/devices/hand-1/claim-code", token: fixture.admin, json: "{}")
        #expect(
            try fixture.apiCall("POST", "/claims", token: alice, json: #"{"device":"hand-1","claimCode":"\#(code["claimCode"] as? String ?? "")"}"#)
                .0 == 200)
        // The claim revoked what was enrolled before it; alice's token re-enrolls the device.
        let (_, token) = try fixture.apiCall("POST", "/devices/hand-1/enrollment-tokens", token: alice, json: "{}")
        let renewed = try fixture.acceptCertificate(
            try fixture.enroll(csr: try fixture.csr("hand-1b"), user: "hand-1:\(token["token"] as? String ?? "")"), as: "hand-1b")
        let current = GatewayTests.Enrolled(id: "hand-1", certificate: renewed, key: fixture.directory.file("hand-1b.key"))
        #expect(try GatewayTests.whoami(fixture, certificate: device.certificate, key: device.key).exit != 0, "the pre-claim certificate still works")
        let held = try GatewayTests.HeldConnection(fixture, current, name: "hand-1")
        defer { held.stop() }
        #expect(held.proveConnected("hand-1"))
        #expect(try fixture.apiCall("POST", "/devices/hand-1/transfer", token: alice, json: #"{"to":"bob"}"#).0 == 200)
        #expect(held.waitForClose(seconds: 5) != nil, "the seller's connection stayed open")
        let (_, certificates) = try fixture.apiCall("GET", "/devices/hand-1/certificates", token: fixture.admin)
        let list = certificates["certificates"] as? [[String: Any]] ?? []
        #expect(!list.isEmpty && list.allSatisfy { $0["revoked"] as? Bool == true }, "\(list)")
        #expect(list.contains { $0["revocationReason"] as? Int == 3 }, "affiliationChanged: \(list)")
    }

    /// Thousands of connections that never say a word neither keep the enrollment service from a
    /// real device nor keep their sockets past the handshake deadline.
    @Test func silentConnectionsNeitherBlockEnrollmentNorOutliveTheDeadline() throws {
        let fixture = try ESTFixture(serveArguments: ["--handshake-timeout", "2", "--max-connections-per-address", "256"])
        try fixture.allow(["SN-REAL,0123456789abcdef0123,,cam,"])
        let port = Int(fixture.est.split(separator: ":").last?.split(separator: "/").first ?? "") ?? 0
        // 2,000 silent connections from another loopback address, held by one Python process.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = [
            "python3", "-c",
            """
            import socket, sys, time
            held, refused = [], 0
            for _ in range(2000):
                s = socket.socket(); s.bind(("127.0.0.2", 0))
                try:
                    s.connect(("127.0.0.1", \(port))); held.append(s)
                except OSError:
                    refused += 1
            print("opened", len(held), flush=True)
            time.sleep(4)
            closed = 0
            for s in held:
                s.setblocking(False)
                try:
                    if s.recv(1) == b"": closed += 1
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            print("closed", closed, "of", len(held), flush=True)
            """,
        ]
        let output = Pipe()
        holder.standardOutput = output
        try holder.run()
        // While they are held, a real device enrolls.
        Thread.sleep(forTimeInterval: 0.5)
        let answer = try fixture.enroll(csr: try fixture.csr("real"), user: "SN-REAL:0123456789abcdef0123")
        #expect(answer.status == 200, "\(answer.status) \(answer.body)")
        holder.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let counts = text.split(whereSeparator: \.isWhitespace)
        // Every connection the server accepted (its share per address) was closed by the deadline,
        // the rest at once.
        if let at = counts.firstIndex(of: "closed"), counts.count > at + 3, let closed = Int(counts[at + 1]), let of = Int(counts[at + 3]) {
            #expect(closed == of, "\(text)")
        } else {
            Issue.record("the holder printed \(text)")
        }
        #expect(fixture.server.stderr.contains("too many open"), "the per-address cap never refused")
    }

    /// One device's key cannot fill the disk: over its rate, telemetry gets 429 with Retry-After.
    @Test func telemetryOverItsQuotaIs429() throws {
        let fixture = try ESTFixture(serveArguments: ["--telemetry-per-minute", "2"])
        let device = try GatewayTests.enroll(fixture, "chatty-1")
        var statuses: [Int] = []
        for index in 0..<4 {
            let body = #"{"n":\#(index)}"#
            let ts = String(Int(Date().timeIntervalSince1970))
            let nonce = "nonce-\(index)-0123456789abcdef"
            try fixture.directory.write("msg", "fleetward-telemetry-v1\nchatty-1\n\(ts)\n\(nonce)\n\(body)")
            let signature = try fixture.cli.openssl.run(["dgst", "-sha256", "-sign", device.key, fixture.directory.file("msg")])
            let encoded = Data(signature.stdoutBytes).base64EncodedString()
            let result = try fixture.curl.run([
                "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", fixture.data + "/ca/root.pem", "--cert", device.certificate,
                "--key", device.key, "-H", "Content-Type: application/json", "-H", "Fleetward-Timestamp: \(ts)", "-H",
                "Fleetward-Nonce: \(nonce)", "-H", "Fleetward-Signature: \(encoded)", "--data-binary", body, fixture.gateway + "/v1/telemetry",
            ])
            statuses.append(Int(result.stdout) ?? 0)
        }
        #expect(statuses.prefix(1).allSatisfy { $0 == 202 } && statuses.last == 429, "\(statuses)")
    }

    /// Proxied requests never carry an identity header the client forged, in any spelling, nor a
    /// header the client named in Connection.
    @Test func forgedIdentityHeadersInAnySpellingNeverReachTheUpstream() throws {
        let upstreamDirectory = try TemporaryDirectory(prefix: "fleetward-upstream")
        defer { upstreamDirectory.remove() }
        // nginx takes header names with underscores too (as many backends do) and echoes them.
        let backend = try NginxProcess(
            in: upstreamDirectory,
            server: """
                        listen 127.0.0.1:PORT;
                        underscores_in_headers on;
                        location / {
                            return 200 "device=[$http_x_fleetward_device] owner=[$http_x_fleetward_owner] extra=[$http_x_extra]\\n";
                        }
                """)
        defer { backend.stop() }
        let fixture = try ESTFixture(serveArguments: ["--upstream", "http://127.0.0.1:\(backend.port)"])
        let device = try GatewayTests.enroll(fixture, "gw-forger")
        let result = try fixture.curl.run([
            "-s", "--cacert", fixture.data + "/ca/root.pem", "--cert", device.certificate, "--key", device.key,
            "-H", "X_Fleetward_Device: someone-else", "-H", "x-FLEETWARD-owner: mallory", "-H", "Connection: X-Extra",
            "-H", "X-Extra: hop-by-hop", fixture.gateway + "/api/headers",
        ])
        #expect(result.stdout.contains("device=[gw-forger]"), "\(result)")
        #expect(!result.stdout.contains("someone-else") && !result.stdout.contains("mallory"), "\(result.stdout)")
        #expect(!result.stdout.contains("hop-by-hop"), "\(result.stdout)")
    }

    /// A suspended device's certificates are on hold: in the CRL (certificateHold) and OCSP
    /// (revoked, certificateHold) while suspended, gone and good again once resumed, so relying
    /// parties that trust the CRL refuse it too.
    @Test func aSuspendedDevicesCertificatesAreOnHoldUntilResumed() throws {
        let fixture = try ESTFixture()
        let device = try GatewayTests.enroll(fixture, "held-1")
        let serial = try fixture.cli.openssl(["x509", "-in", device.certificate, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        let api = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        func ocsp() throws -> String {
            try fixture.cli.openssl([
                "ocsp", "-issuer", fixture.data + "/ca/issuing.pem", "-cert", device.certificate, "-url", api + "/ocsp", "-CAfile",
                fixture.data + "/ca/root.pem",
            ]).stdout
        }
        func crl() throws -> String {
            try fixture.curl.run(["-s", "-o", fixture.directory.file("i.crl"), api + "/crl/issuing.crl"])
            return try fixture.cli.openssl(["crl", "-inform", "DER", "-in", fixture.directory.file("i.crl"), "-noout", "-text"]).stdout
        }
        #expect(try ocsp().contains(": good"))
        #expect(try fixture.apiCall("POST", "/devices/held-1/suspend", token: fixture.admin).0 == 200)
        #expect(try eventually(timeout: 5) { try crl().contains("Serial Number: \(serial)") }, "not on the CRL while suspended")
        #expect(try crl().contains("Certificate Hold"))
        let held = try ocsp()
        #expect(held.contains(": revoked") && held.contains("certificateHold"), "\(held)")
        #expect(try fixture.apiCall("POST", "/devices/held-1/resume", token: fixture.admin).0 == 200)
        #expect(try eventually(timeout: 5) { try !crl().contains("Serial Number: \(serial)") }, "still on the CRL once resumed")
        #expect(try ocsp().contains(": good"))
    }

    /// Renewal holds the presented certificate to the registry's record, as the gateway does: a
    /// certificate the issuing CA signed but the registry never recorded cannot renew.
    @Test func renewalNeedsTheCertificateOnRecord() throws {
        let fixture = try ESTFixture()
        _ = try GatewayTests.enroll(fixture, "ren-1")
        let forged = try GatewayTests.forge(fixture, "ren-1", name: "ren-1-forged", start: "20260101000000Z", end: "20990101000000Z")
        let answer = try fixture.enroll("simplereenroll", csr: try fixture.csr("ren-new"), certificate: (forged.certificate, forged.key))
        #expect(answer.status == 403 && answer.body.contains("not on record"), "\(answer.status) \(answer.body)")
    }

    /// TLS 1.2 on EST offers only forward-secret AEAD suites: CBC with SHA-1 is refused.
    @Test func estOffersNoCBCSuites() throws {
        let fixture = try ESTFixture()
        let hostPort = fixture.est.replacingOccurrences(of: "https://", with: "").replacingOccurrences(of: "/.well-known/est", with: "")
        func handshake(_ cipher: String) throws -> Tool.Result {
            try fixture.cli.openssl.run(
                ["s_client", "-connect", hostPort, "-tls1_2", "-cipher", cipher, "-CAfile", fixture.data + "/ca/root.pem"], stdin: [],
                timeout: 20)
        }
        #expect(try !handshake("ECDHE-ECDSA-AES128-SHA").succeeded)
        #expect(try !handshake("ECDHE-ECDSA-AES256-SHA").succeeded)
        let gcm = try handshake("ECDHE-ECDSA-AES128-GCM-SHA256")
        #expect(gcm.succeeded && gcm.stdout.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "\(gcm)")
    }

    /// A stolen device that tries to come back is a security event the API lists.
    @Test func aStolenDeviceTryingToConnectIsASecurityEvent() throws {
        let fixture = try ESTFixture()
        let device = try GatewayTests.enroll(fixture, "sec-1")
        #expect(try fixture.apiCall("POST", "/devices/sec-1/revoke", token: fixture.admin).0 == 200)
        var events: [[String: Any]] = []
        #expect(
            try eventually(timeout: 5) {
                _ = try GatewayTests.whoami(fixture, certificate: device.certificate, key: device.key)
                events = (try fixture.apiCall("GET", "/security-events", token: fixture.admin).1["events"] as? [[String: Any]]) ?? []
                return !events.isEmpty
            }, "no security event")
        #expect(events.first?["kind"] as? String == "handshake-refused" && events.first?["device"] as? String == "sec-1", "\(events)")
        // Many more attempts make no more events this minute.
        for _ in 0..<5 { _ = try GatewayTests.whoami(fixture, certificate: device.certificate, key: device.key) }
        Thread.sleep(forTimeInterval: 0.5)
        let later = (try fixture.apiCall("GET", "/security-events", token: fixture.admin).1["events"] as? [[String: Any]]) ?? []
        #expect(later.filter { $0["kind"] as? String == "handshake-refused" }.count == 1, "\(later)")
    }

    /// `serve` runs without the root and release-signing keys on the host: it needs only the
    /// issuing and factory keys, and serves the root CRL signed ahead of time where the root is.
    @Test func serveRunsWithTheRootKeyOffTheHost() throws {
        let cli = try CLI()
        let directory = try TemporaryDirectory(prefix: "fleetward-offline-root")
        defer { directory.remove() }
        let data = directory.file("data")
        #expect(try cli.run(["init", "--data", data, "--kdf-iterations", "10000"]).succeeded)
        #expect(try cli.run(["ca", "root-crl", "--data", data, "--days", "30"]).succeeded)
        try FileManager.default.moveItem(atPath: data + "/ca/root.key", toPath: directory.file("root.key.offline"))
        let server = try RunningServer(
            executable: cli.fleetward.executable,
            arguments: ["serve", "--data", data, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off"],
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: directory.path, expectedListeners: 3)
        defer { server.stop() }
        let api = try #require(server.listeners["management API"])
        let result = try Tool("curl").run(["-s", "-o", directory.file("root.crl"), "-w", "%{http_code}", api + "/crl/root.crl"])
        #expect(result.stdout == "200")
        let text = try cli.openssl(["crl", "-inform", "DER", "-in", directory.file("root.crl"), "-CAfile", data + "/ca/root.pem", "-noout"])
        #expect(text.stderr.contains("verify OK"), "\(text)")
        let issuing = try Tool("curl").run(["-s", "-o", "/dev/null", "-w", "%{http_code}", api + "/crl/issuing.crl"])
        #expect(issuing.stdout == "200")
    }
}
