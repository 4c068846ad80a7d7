import FleetwardTestSupport
import Foundation
import Testing

/// EST enrollment driven as RFC 7030's own examples do: `openssl req` makes the CSR, curl sends
/// it (`-u id:secret` or `--cert/--key`), `openssl pkcs7 -print_certs` reads the answer and
/// `openssl verify` checks it against the root.
final class ESTFixture {
    let cli: CLI
    let curl: Tool
    let directory: TemporaryDirectory
    let data: String
    let server: RunningServer
    let est: String
    let api: String
    /// The device gateway's `https://HOST:PORT`.
    let gateway: String
    let admin: String

    /// `--data DIR`, and `--database URL` when the registry is on PostgreSQL.
    let registry: [String]

    /// - Parameters:
    ///   - serveArguments: more `fleetward serve` options (e.g. `--upstream`).
    ///   - database: a PostgreSQL URL for the registry instead of the embedded SQLite.
    /// The MQTT front door (`mqtts://127.0.0.1:PORT`) when made with `mqtt: true`.
    var mqtt: String?

    init(serveArguments: [String] = [], database: String? = nil, mqtt: Bool = false) throws {
        cli = try CLI()
        curl = try Tool("curl")
        directory = try TemporaryDirectory(prefix: "fleetward-est")
        data = directory.file("data")
        registry = ["--data", data] + (database.map { ["--database", $0] } ?? [])
        let initResult = try cli.run(["init", "--data", data, "--kdf-iterations", "10000"])
        guard initResult.succeeded else { throw Tool.Missing(description: "init failed: \(initResult)") }
        admin = try cli.run(["token", "create"] + registry + ["--role", "admin"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        server = try RunningServer(
            executable: cli.fleetward.executable,
            arguments: [
                "serve", "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--mqtt-listen",
                mqtt ? "127.0.0.1:0" : "off",
            ] + registry + serveArguments,
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: directory.path, expectedListeners: mqtt ? 4 : 3)
        self.mqtt = mqtt ? try #require(server.listeners["MQTT"]) : nil
        est = try #require(server.listeners["EST"]) + "/.well-known/est"
        api = try #require(server.listeners["management API"]) + "/api/v1"
        gateway = try #require(server.listeners["gateway"])
    }

    deinit {
        server.stop()
        directory.remove()
    }

    /// Imports allow-list rows (`id,secret,key_sha256,model,metadata` without the header).
    func allow(_ rows: [String]) throws {
        try directory.write("allow.csv", "id,secret,key_sha256,model,metadata\n" + rows.joined(separator: "\n") + "\n")
        let result = try cli.run(["devices", "import"] + registry + [directory.file("allow.csv"), "--json"])
        #expect(result.succeeded, "\(result)")
    }

    /// A new P-256 key `name.key` and a base64 DER CSR `name.b64` with `subject`.
    @discardableResult
    func csr(_ name: String, subject: String = "/", key existing: String? = nil) throws -> String {
        let keyArguments =
            existing.map { ["-key", $0] } ?? [
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file(name + ".key"),
            ]
        try cli.openssl(["req", "-new"] + keyArguments + ["-subj", subject, "-outform", "DER", "-out", directory.file(name + ".der")])
        let der = try directory.read(name + ".der")
        try directory.write(name + ".b64", Data(der).base64EncodedString(options: .lineLength64Characters) + "\n")
        return directory.file(name + ".b64")
    }

    /// A birth certificate for `id` from the factory line (`fleetward factory issue` on one CSR):
    /// its PEM path, with the key in `birth-<id>.key`.
    func birthCertificate(_ id: String) throws -> (certificate: String, key: String) {
        try csr("birth-" + id, subject: "/serialNumber=" + id)
        let input = directory.file("factory-in-" + id)
        try FileManager.default.createDirectory(atPath: input, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: directory.file("birth-\(id).der"), toPath: input + "/\(id).der")
        let result = try cli.run(["factory", "issue", "--data", data, "--csr-dir", input, "--out", directory.file("factory-out")])
        #expect(result.succeeded, "\(result)")
        return (directory.file("factory-out/\(id).pem"), directory.file("birth-\(id).key"))
    }

    struct Answer {
        var status: Int
        var body: String
        var headers: String
    }

    /// POSTs a base64 CSR file to `operation` with optional Basic credentials or client certificate.
    func enroll(
        _ operation: String = "simpleenroll", csr: String, user: String? = nil, certificate: (String, String)? = nil,
        contentType: String = "application/pkcs10", from source: String? = nil
    ) throws -> Answer {
        var arguments = ["-s", "-S", "--max-time", "30", "--cacert", data + "/ca/root.pem", "-D", directory.file("headers.txt")]
        // Another loopback address as the source (127.0.0.0/8 all reach this host): another client.
        if let source { arguments += ["--interface", source] }
        arguments += [
            "-H", "Content-Type: \(contentType)", "--data-binary", "@" + csr, "-o", directory.file("answer.bin"), "-w", "%{http_code}",
        ]
        if let user { arguments += ["-u", user] }
        if let (cert, key) = certificate { arguments += ["--cert", cert, "--key", key] }
        let result = try curl.run(arguments + ["\(est)/\(operation)"], timeout: 40)
        #expect(result.succeeded, "curl: \(result)")
        let body = (try? directory.read("answer.bin")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let headers = (try? directory.read("headers.txt")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return Answer(status: Int(result.stdout) ?? 0, body: body, headers: headers)
    }

    /// Decodes a certs-only PKCS#7 answer with openssl into `name.pem` and verifies it against the root.
    func acceptCertificate(_ answer: Answer, as name: String) throws -> String {
        #expect(answer.status == 200, "\(answer.status): \(answer.body)")
        #expect(answer.headers.lowercased().contains("content-type: application/pkcs7-mime"))
        try directory.write(name + ".p7.b64", answer.body)
        let der = try #require(Data(base64Encoded: answer.body.filter { !$0.isWhitespace }))
        try directory.write(name + ".p7", der)
        let pem = try cli.openssl(["pkcs7", "-inform", "DER", "-in", directory.file(name + ".p7"), "-print_certs"]).stdout
        try directory.write(name + ".pem", pem)
        let verify = try cli.openssl([
            "verify", "-CAfile", data + "/ca/root.pem", "-untrusted", data + "/ca/issuing.pem", "-purpose", "sslclient",
            directory.file(name + ".pem"),
        ])
        #expect(verify.stdout.contains(": OK"))
        return directory.file(name + ".pem")
    }

    func subject(_ pem: String) throws -> String {
        try cli.openssl(["x509", "-in", pem, "-noout", "-subject", "-nameopt", "RFC2253"]).stdout
    }

    func state(_ id: String) throws -> String {
        let shown = try cli.run(["devices", "show"] + registry + [id, "--json"])
        let object = (try? JSONSerialization.jsonObject(with: Data(shown.stdout.utf8))) as? [String: Any]
        return object?["state"] as? String ?? "(\(shown.stderr))"
    }

    /// A management API call with curl.
    func apiCall(_ method: String, _ path: String, token: String, json: String? = nil) throws -> (Int, [String: Any]) {
        var arguments = ["-s", "-S", "--max-time", "20", "-X", method, "-H", "Authorization: Bearer \(token)", "-w", "\n%{http_code}"]
        if let json { arguments += ["-H", "Content-Type: application/json", "--data-binary", json] }
        let result = try curl.run(arguments + [api + path], timeout: 30)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let body = lines.dropLast().joined(separator: "\n")
        let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        return (Int(lines.last ?? "") ?? 0, object)
    }
}

@Suite(.tags(.slow)) struct ESTTests {
    @Test func cacertsAndCsrattrsAnswerAsRFC7030Says() throws {
        let fixture = try ESTFixture()
        let cacerts = try fixture.curl.run(["-s", "-S", "--cacert", fixture.data + "/ca/root.pem", "-i", fixture.est + "/cacerts"])
        #expect(cacerts.stdout.lowercased().contains("content-type: application/pkcs7-mime"))
        #expect(cacerts.stdout.lowercased().contains("content-transfer-encoding: base64"))
        let body = String(cacerts.stdout.split(separator: "\r\n\r\n", maxSplits: 1).last ?? "")
        try fixture.directory.write("cacerts.p7", try #require(Data(base64Encoded: body.filter { !$0.isWhitespace })))
        let certificates = try fixture.cli.openssl(["pkcs7", "-inform", "DER", "-in", fixture.directory.file("cacerts.p7"), "-print_certs"])
            .stdout
        #expect(certificates.contains("Fleetward Root CA") && certificates.contains("Fleetward Issuing CA"))
        let attributes = try fixture.curl.run(["-s", "--cacert", fixture.data + "/ca/root.pem", fixture.est + "/csrattrs"]).stdout
        try fixture.directory.write("csrattrs.der", try #require(Data(base64Encoded: attributes.filter { !$0.isWhitespace })))
        let parsed = try fixture.cli.openssl(["asn1parse", "-inform", "DER", "-in", fixture.directory.file("csrattrs.der")]).stdout
        #expect(parsed.contains("ecdsa-with-SHA256") && parsed.contains("serialNumber"))
    }

    @Test func unknownOperationsAndWrongMethodsGetTheirStatus() throws {
        let fixture = try ESTFixture()
        func head(_ arguments: [String]) throws -> String {
            try fixture.curl.run(["-s", "-S", "--cacert", fixture.data + "/ca/root.pem", "-i"] + arguments).stdout.lowercased()
        }
        // An operation RFC 7030 defines that Fleetward does not offer, and a path outside EST.
        #expect(try head([fixture.est + "/serverkeygen", "-X", "POST"]).hasPrefix("http/1.1 404"))
        let outside = fixture.est.replacingOccurrences(of: "/.well-known/est", with: "/.well-known/other")
        #expect(try head([outside + "/cacerts"]).hasPrefix("http/1.1 404"))
        // 405 names the method that works (RFC 9110 §15.5.6).
        let post = try head([fixture.est + "/cacerts", "-X", "POST", "--data-binary", "x"])
        #expect(post.hasPrefix("http/1.1 405") && post.contains("allow: get, head"), "\(post)")
        let get = try head([fixture.est + "/simpleenroll"])
        #expect(get.hasPrefix("http/1.1 405") && get.contains("allow: post"), "\(get)")
        // HEAD: the head of the GET answer, its length, no body; a query does not change the operation.
        let headOnly = try head(["-I", fixture.est + "/cacerts?x=1"])
        #expect(headOnly.hasPrefix("http/1.1 200") && headOnly.contains("content-type: application/pkcs7-mime"), "\(headOnly)")
        let length = try #require(headOnly.split(separator: "\r\n").first { $0.hasPrefix("content-length:") })
        let full = try head([fixture.est + "/cacerts"])
        #expect(full.contains(String(length)))
        // The same operation with a trailing slash, a doubled slash, or an absolute-form target
        // (RFC 9112 §3.2.2); a deeper path is not an operation.
        #expect(try head([fixture.est + "/cacerts/"]).hasPrefix("http/1.1 200"))
        #expect(try head([fixture.est.replacingOccurrences(of: "/est", with: "//est") + "/cacerts"]).hasPrefix("http/1.1 200"))
        let absolute = try head(["--request-target", fixture.est + "/cacerts", fixture.est + "/cacerts"])
        #expect(absolute.hasPrefix("http/1.1 200"), "\(absolute)")
        #expect(try head([fixture.est + "/cacerts/more"]).hasPrefix("http/1.1 404"))
    }

    @Test func aFactorySecretEnrollsOnceAndAGuessDoesNot() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-1,0123456789abcdef0123,,cam,"])
        let csr = try fixture.csr("sn1", subject: "/serialNumber=SN-1")
        for user in ["SN-1:0123456789abcdef0124", "SN-1:", "SN-2:0123456789abcdef0123"] {
            let refused = try fixture.enroll(csr: csr, user: user)
            #expect(refused.status == 401, "\(user): \(refused.body)")
            #expect(refused.headers.lowercased().contains("www-authenticate: basic"))
        }
        let noAuth = try fixture.enroll(csr: csr)
        #expect(noAuth.status == 401)
        #expect(try fixture.state("SN-1") == "allowed")

        // The CSR may not name another device.
        let other = try fixture.csr("other", subject: "/serialNumber=SN-9")
        #expect(try fixture.enroll(csr: other, user: "SN-1:0123456789abcdef0123").status == 400)
        #expect(try fixture.state("SN-1") == "allowed")

        let pem = try fixture.acceptCertificate(try fixture.enroll(csr: csr, user: "SN-1:0123456789abcdef0123"), as: "sn1")
        #expect(try fixture.subject(pem).contains("serialNumber=SN-1"))
        #expect(try fixture.state("SN-1") == "active")
        // The certificate's key is the device's own.
        let certificateKey = try fixture.cli.openssl(["x509", "-in", pem, "-noout", "-pubkey"]).stdout
        let deviceKey = try fixture.cli.openssl(["pkey", "-in", fixture.directory.file("sn1.key"), "-pubout"]).stdout
        #expect(certificateKey == deviceKey)
        // The secret does not enroll twice: renewal goes through simplereenroll.
        #expect(try fixture.enroll(csr: csr, user: "SN-1:0123456789abcdef0123").status == 403)
        #expect(try fixture.cli.run(["audit", "verify", "--data", fixture.data]).succeeded)
    }

    @Test func aRegisteredKeyFingerprintEnrollsOnlyThatKey() throws {
        let fixture = try ESTFixture()
        try fixture.cli.openssl([
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", fixture.directory.file("k.key"),
        ])
        let spki = try fixture.cli.openssl([
            "pkey", "-in", fixture.directory.file("k.key"), "-pubout", "-outform", "DER", "-out", fixture.directory.file("k.spki"),
        ])
        #expect(spki.succeeded)
        let digest = try fixture.cli.openssl(["dgst", "-sha256", "-r", fixture.directory.file("k.spki")]).stdout.prefix(64)
        try fixture.allow(["SN-K,,\(digest),cam,"])
        let wrongKey = try fixture.csr("wrong", subject: "/serialNumber=SN-K")
        #expect(try fixture.enroll(csr: wrongKey, user: "SN-K:").status == 401)
        let right = try fixture.csr("right", subject: "/serialNumber=SN-K", key: fixture.directory.file("k.key"))
        _ = try fixture.acceptCertificate(try fixture.enroll(csr: right, user: "SN-K:"), as: "sn-k")
        #expect(try fixture.state("SN-K") == "active")
    }

    @Test func anOwnersOneTimeTokenEnrollsAndBindsTheDevice() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-T,0123456789abcdef0123,,cam,"])
        let alice = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "owner", "--owner", "alice"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (codeStatus, code) = try fixture.apiCall("POST", "/devices/SN-T/claim-code", token: fixture.admin)
        #expect(codeStatus == 201)
        let claimCode = try #require(code["claimCode"] as? String)
        #expect(try fixture.apiCall("POST", "/claims", token: alice, json: #"{"device":"SN-T","claimCode":"\#(claimCode)"}"#).0 == 200)
        let (tokenStatus, tokenBody) = try fixture.apiCall("POST", "/devices/SN-T/enrollment-tokens", token: alice, json: "{}")
        #expect(tokenStatus == 201)
        let token = try #require(tokenBody["token"] as? String)

        let csr = try fixture.csr("t", subject: "/CN=SN-T")
        _ = try fixture.acceptCertificate(try fixture.enroll(csr: csr, user: "SN-T:\(token)"), as: "t")
        #expect(try fixture.enroll(csr: csr, user: "SN-T:\(token)").status == 401, "a one-time token works once")
        let (_, certificates) = try fixture.apiCall("GET", "/devices/SN-T/certificates", token: alice)
        let first = (certificates["certificates"] as? [[String: Any]])?.first
        #expect(first?["owner"] as? String == "alice", "\(certificates)")
        let audit = try fixture.apiCall("GET", "/audit?limit=1000", token: fixture.admin).1["entries"] as? [[String: Any]] ?? []
        #expect(
            audit.contains { $0["action"] as? String == "device.enroll" && ($0["after"] as? String ?? "").contains("\"method\":\"token\"") }
        )
        #expect(!audit.contains { ($0["after"] as? String ?? "").contains(token) })
    }

    @Test func aBirthCertificateEnrollsUntilTheDeviceIsReportedStolen() throws {
        let fixture = try ESTFixture()
        try fixture.csr("birth", subject: "/serialNumber=SN-B")
        let issued = try fixture.cli.run([
            "cert", "issue", "--data", fixture.data, "--profile", "birth", "--id", "SN-B", "--csr", fixture.directory.file("birth.der"),
            "--out", fixture.directory.file("birth.pem"),
        ])
        #expect(issued.succeeded, "\(issued)")
        let birth = (fixture.directory.file("birth.pem"), fixture.directory.file("birth.key"))
        let csr = try fixture.csr("op", subject: "/serialNumber=SN-B")
        // A birth certificate cannot renew, and cannot enroll another ID.
        #expect(try fixture.enroll("simplereenroll", csr: csr, certificate: birth).status == 403)
        let otherID = try fixture.csr("other", subject: "/serialNumber=SN-X")
        #expect(try fixture.enroll(csr: otherID, certificate: birth).status == 400)
        let operational = try fixture.acceptCertificate(try fixture.enroll(csr: csr, certificate: birth), as: "op")
        #expect(try fixture.subject(operational).contains("serialNumber=SN-B"))
        #expect(try fixture.state("SN-B") == "active")
        // An operational certificate does not enroll (only renews), and renews while active.
        let next = try fixture.csr("next", subject: "/serialNumber=SN-B")
        let current = (operational, fixture.directory.file("op.key"))
        #expect(try fixture.enroll(csr: next, certificate: current).status == 403)
        _ = try fixture.acceptCertificate(try fixture.enroll("simplereenroll", csr: next, certificate: current), as: "next")

        // A revoked birth certificate no longer enrolls; the device keeps its state.
        let birthSerial = try fixture.cli.openssl(["x509", "-in", birth.0, "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        let revoked = try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", birthSerial, "--reason", "superseded"])
        #expect(revoked.succeeded, "\(revoked)")
        #expect(try fixture.enroll(csr: csr, certificate: birth).status == 403)
        #expect(try fixture.state("SN-B") == "active")
        fixture.cli.expectOneLineError(
            try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", birthSerial]), containing: "already revoked")

        // Stolen: every credential stops working.
        #expect(try fixture.apiCall("POST", "/devices/SN-B/report-stolen", token: fixture.admin).0 == 200)
        #expect(try fixture.enroll(csr: csr, certificate: birth).status == 403)
        #expect(try fixture.enroll("simplereenroll", csr: next, certificate: current).status == 403)
    }

    @Test func suspendedDevicesCannotRenew() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-S,0123456789abcdef0123,,cam,"])
        let csr = try fixture.csr("s", subject: "/serialNumber=SN-S")
        let pem = try fixture.acceptCertificate(try fixture.enroll(csr: csr, user: "SN-S:0123456789abcdef0123"), as: "s")
        #expect(try fixture.cli.run(["devices", "suspend", "--data", fixture.data, "SN-S"]).succeeded)
        let renewal = try fixture.enroll("simplereenroll", csr: csr, certificate: (pem, fixture.directory.file("s.key")))
        #expect(renewal.status == 403, "\(renewal.body)")
        #expect(try fixture.state("SN-S") == "suspended")
        #expect(try fixture.enroll("simplereenroll", csr: csr).status == 401)
    }

    @Test func anEnrollmentGroupRegistersItsDevicesPendingUntilApproved() throws {
        let fixture = try ESTFixture()
        let dir = fixture.directory
        // A manufacturer's own CA and a device certificate under it, made with openssl alone.
        try fixture.cli.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file("mca.key"), "-out",
            dir.file("mca.pem"), "-subj", "/O=Acme/CN=Acme Devices CA", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try fixture.csr("g", subject: "/serialNumber=SN-G")
        try dir.write("ext.cnf", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        try fixture.cli.openssl([
            "x509", "-req", "-inform", "DER", "-in", dir.file("g.der"), "-CA", dir.file("mca.pem"), "-CAkey", dir.file("mca.key"),
            "-CAcreateserial", "-days", "30", "-extfile", dir.file("ext.cnf"), "-out", dir.file("g.pem"),
        ])
        let manufacturerCert = (dir.file("g.pem"), dir.file("g.key"))
        let csr = try fixture.csr("gop", subject: "/serialNumber=SN-G")
        // Not yet a group: refused.
        #expect(try fixture.enroll(csr: csr, certificate: manufacturerCert).status == 403)

        let pem = String(decoding: try dir.read("mca.pem"), as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n")
        let (created, group) = try fixture.apiCall(
            "POST", "/groups", token: fixture.admin, json: #"{"name":"acme","caCertificate":"\#(pem)","autoApprove":false}"#)
        #expect(created == 201, "\(group)")
        let pending = try fixture.enroll(csr: csr, certificate: manufacturerCert)
        #expect(pending.status == 202)
        #expect(pending.headers.lowercased().contains("retry-after:"))
        #expect(try fixture.state("SN-G") == "pending")
        #expect(try fixture.enroll(csr: csr, certificate: manufacturerCert).status == 202)
        #expect(try fixture.apiCall("POST", "/devices/SN-G/approve", token: fixture.admin).0 == 200)
        _ = try fixture.acceptCertificate(try fixture.enroll(csr: csr, certificate: manufacturerCert), as: "gop")
        #expect(try fixture.state("SN-G") == "active")
    }

    /// A manufacturer registers its root; devices carry certificates from an intermediate under it
    /// and send that intermediate in the handshake (curl sends every certificate in --cert's file).
    @Test func aGroupDeviceEnrollsThroughTheManufacturersIntermediate() throws {
        let fixture = try ESTFixture()
        let dir = fixture.directory
        let cli = fixture.cli
        try cli.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file("mroot.key"), "-out",
            dir.file("mroot.pem"), "-subj", "/O=Acme/CN=Acme Root", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try dir.write("ca.cnf", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
        try dir.write("leaf.cnf", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        func sign(_ csr: String, by ca: String, extensions: String, out: String) throws {
            try cli.openssl([
                "x509", "-req", "-in", dir.file(csr), "-CA", dir.file(ca + ".pem"), "-CAkey", dir.file(ca + ".key"), "-CAcreateserial",
                "-days", "30", "-extfile", dir.file(extensions), "-out", dir.file(out),
            ])
        }
        for (name, subject) in [("mint", "/O=Acme/CN=Acme Line 3"), ("fake", "/O=Acme/CN=Not A CA")] {
            try cli.openssl([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file(name + ".key"),
                "-subj", subject, "-out", dir.file(name + ".csr"),
            ])
        }
        try sign("mint.csr", by: "mroot", extensions: "ca.cnf", out: "mint.pem")
        // Signed by the root but without CA:TRUE: it must not work as an intermediate.
        try sign("fake.csr", by: "mroot", extensions: "leaf.cnf", out: "fake.pem")
        for (name, ca) in [("dev", "mint"), ("devfake", "fake")] {
            try cli.openssl([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file(name + ".key"),
                "-subj", "/serialNumber=SN-\(name.uppercased())", "-out", dir.file(name + ".csr"),
            ])
            try sign(name + ".csr", by: ca, extensions: "leaf.cnf", out: name + ".pem")
            let chain = try dir.read(name + ".pem") + (try dir.read(ca + ".pem"))
            try dir.write(name + "-chain.pem", chain)
        }
        let pem = String(decoding: try dir.read("mroot.pem"), as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n")
        let (created, group) = try fixture.apiCall(
            "POST", "/groups", token: fixture.admin, json: #"{"name":"acme","caCertificate":"\#(pem)","autoApprove":true}"#)
        #expect(created == 201, "\(group)")

        // Without its intermediate the leaf does not chain to the registered root.
        let csr = try fixture.csr("devop", subject: "/serialNumber=SN-DEV")
        let alone = try fixture.enroll(csr: csr, certificate: (dir.file("dev.pem"), dir.file("dev.key")))
        #expect(alone.status == 403, "\(alone.status): \(alone.body)")
        #expect(try fixture.state("SN-DEV").contains("no device"))
        // A path through a certificate that is not a CA is no path.
        let fakeCSR = try fixture.csr("devfakeop", subject: "/serialNumber=SN-DEVFAKE")
        let fake = try fixture.enroll(csr: fakeCSR, certificate: (dir.file("devfake-chain.pem"), dir.file("devfake.key")))
        #expect(fake.status == 403, "\(fake.status): \(fake.body)")
        // With it, the device is registered and enrolled (the group approves at once).
        let answer = try fixture.enroll(csr: csr, certificate: (dir.file("dev-chain.pem"), dir.file("dev.key")))
        _ = try fixture.acceptCertificate(answer, as: "devop")
        #expect(try fixture.state("SN-DEV") == "active")
        #expect(try fixture.subject(dir.file("devop.pem")).contains("serialNumber=SN-DEV"))
    }

    @Test func badBodiesAreRefusedAndChangeNothing() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-1,0123456789abcdef0123,,cam,"])
        let dir = fixture.directory
        let user = "SN-1:0123456789abcdef0123"
        try dir.write("notbase64.b64", "this is not base64 !!!\n")
        #expect(try fixture.enroll(csr: dir.file("notbase64.b64"), user: user).status == 400)
        try dir.write("garbage.b64", Data((0..<300).map { UInt8($0 & 0xFF) }).base64EncodedString() + "\n")
        #expect(try fixture.enroll(csr: dir.file("garbage.b64"), user: user).status == 400)
        // A CSR whose signature does not verify: flip the last byte of the signature.
        try fixture.csr("good", subject: "/serialNumber=SN-1")
        var der = try dir.read("good.der")
        der[der.count - 1] ^= 0x01
        try dir.write("forged.b64", Data(der).base64EncodedString() + "\n")
        #expect(try fixture.enroll(csr: dir.file("forged.b64"), user: user).status == 400)
        // 10 MB.
        try dir.write("huge.b64", String(repeating: "QUFB", count: 2_500_000))
        #expect(try fixture.enroll(csr: dir.file("huge.b64"), user: user).status == 413)
        #expect(try fixture.enroll(csr: dir.file("good.b64"), user: user, contentType: "application/json").status == 415)
        #expect(try fixture.state("SN-1") == "allowed")
        // Only enroll and audit-free reads happened.
        let audit = try fixture.apiCall("GET", "/audit?limit=1000", token: fixture.admin).1["entries"] as? [[String: Any]] ?? []
        #expect(!audit.contains { ($0["action"] as? String) == "device.enroll" })
    }

    /// The factory line: a directory of CSRs in, birth certificates out, devices registered by key.
    @Test func aFactoryBatchIssuesBirthCertificatesThatEnroll() throws {
        let fixture = try ESTFixture()
        let dir = fixture.directory
        try FileManager.default.createDirectory(atPath: dir.file("line"), withIntermediateDirectories: true)
        for index in 1...5 {
            try fixture.cli.openssl([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file("fb\(index).key"),
                "-subj", "/serialNumber=FB-\(index)", "-out", dir.file("line/fb\(index).csr"),
            ])
        }
        // One bad file stops the whole batch before anything is signed.
        try dir.write("line/zz.csr", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
        let refused = try fixture.cli.run([
            "factory", "issue", "--data", fixture.data, "--csr-dir", dir.file("line"), "--out", dir.file("out"),
        ])
        fixture.cli.expectOneLineError(refused, containing: "zz.csr")
        #expect(!dir.exists("out/FB-1.pem"))
        #expect(try fixture.state("FB-1").hasPrefix("("), "nothing was registered")
        try FileManager.default.removeItem(atPath: dir.file("line/zz.csr"))

        let result = try fixture.cli.run([
            "factory", "issue", "--data", fixture.data, "--csr-dir", dir.file("line"), "--out", dir.file("out"), "--model", "sensor-v2",
            "--json",
        ])
        #expect(result.succeeded, "\(result)")
        #expect(result.stdout.contains("\"issued\" : 5"))
        for index in 1...5 {
            let verify = try fixture.cli.openssl([
                "verify", "-CAfile", fixture.data + "/ca/root.pem", "-untrusted", fixture.data + "/ca/factory.pem",
                dir.file("out/FB-\(index).pem"),
            ])
            #expect(verify.stdout.contains("OK"))
        }
        #expect(try fixture.state("FB-3") == "allowed")
        let csr = try fixture.csr("fb3op", subject: "/serialNumber=FB-3")
        _ = try fixture.acceptCertificate(
            try fixture.enroll(csr: csr, certificate: (dir.file("out/FB-3.pem"), dir.file("fb3.key"))), as: "fb3op")
        #expect(try fixture.state("FB-3") == "active")
        let (_, certificates) = try fixture.apiCall("GET", "/devices/FB-3/certificates", token: fixture.admin)
        let profiles = (certificates["certificates"] as? [[String: Any]])?.compactMap { $0["profile"] as? String }.sorted()
        #expect(profiles == ["birth", "device"])
    }

    /// Guessing across many device IDs from one address is slowed down too.
    @Test func repeatedFailuresFromOneAddressAreRateLimited() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-A,0123456789abcdef0123,,cam,"])
        let csr = try fixture.csr("a", subject: "/")
        var statuses: [Int] = []
        for attempt in 0..<11 { statuses.append(try fixture.enroll(csr: csr, user: "GUESS-\(attempt):0123456789abcdef0123").status) }
        #expect(statuses.prefix(10).allSatisfy { $0 == 401 } && statuses.last == 429, "\(statuses)")
        #expect(try fixture.enroll(csr: csr, user: "SN-A:0123456789abcdef0123").status == 429)
        #expect(try fixture.state("SN-A") == "allowed")
    }

    /// Guessing secrets for one device is slowed down, whatever the guess: after five failures the
    /// guessing address waits out a growing backoff, even with the right secret.
    @Test func repeatedFailuresForOneDeviceAreRateLimited() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-R,0123456789abcdef0123,,cam,"])
        let csr = try fixture.csr("r", subject: "/serialNumber=SN-R")
        var statuses: [Int] = []
        for attempt in 0..<8 { statuses.append(try fixture.enroll(csr: csr, user: "SN-R:guess-\(attempt)-0000000000").status) }
        #expect(statuses.prefix(5).allSatisfy { $0 == 401 } && statuses.dropFirst(5).allSatisfy { $0 == 429 }, "\(statuses)")
        let right = try fixture.enroll(csr: csr, user: "SN-R:0123456789abcdef0123")
        #expect(right.status == 429 && right.headers.lowercased().contains("retry-after:"))
        #expect(try fixture.state("SN-R") == "allowed")
    }

    /// A stranger hammering a device's enrollment cannot lock the device out: the right secret
    /// from an address that never failed for it still gets through.
    @Test func aStrangerCannotLockADeviceOut() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["SN-L,0123456789abcdef0123,,cam,"])
        let csr = try fixture.csr("l", subject: "/serialNumber=SN-L")
        var statuses: [Int] = []
        for attempt in 0..<30 {
            statuses.append(try fixture.enroll(csr: csr, user: "SN-L:guess-\(attempt)-0000000000", from: "127.0.0.2").status)
        }
        #expect(!statuses.contains(200) && statuses.contains(429), "\(statuses)")
        let right = try fixture.enroll(csr: csr, user: "SN-L:0123456789abcdef0123", from: "127.0.0.1")
        #expect(right.status == 200, "\(right.status) \(right.body)")
        #expect(try fixture.state("SN-L") == "active")
    }
}
