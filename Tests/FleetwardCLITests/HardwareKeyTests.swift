import FleetwardTestSupport
import Foundation
import Testing

/// `fleetward init --key-store pkcs11:…`: the issuing, factory and release-signing keys made inside
/// a SoftHSM2 token, never extractable, and everything those keys sign checked by openssl.
@Suite(.tags(.slow)) struct HardwareKeyTests {
    static let module = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .first { FileManager.default.fileExists(atPath: $0) }

    @Test func theCAKeysLiveInTheTokenAndWhatTheySignVerifies() throws {
        guard let module = Self.module else { throw Tool.Missing(description: "SoftHSM2 is not installed (scripts/test.sh installs softhsm2)") }
        let directory = try TemporaryDirectory(prefix: "fleetward-hsm")
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.file("tokens"), withIntermediateDirectories: true)
        try directory.write("softhsm2.conf", "directories.tokendir = \(directory.file("tokens"))\nobjectstore.backend = file\nlog.level = ERROR\n")
        let pin = "fleet-pin-\(UInt32.random(in: 0...UInt32.max))"
        let hsm = ["SOFTHSM2_CONF": directory.file("softhsm2.conf")]
        let made = try Tool("softhsm2-util").run(
            ["--init-token", "--free", "--label", "fleet-ca", "--pin", pin, "--so-pin", "fleet-so-8642"], environment: hsm)
        try #require(made.succeeded, "\(made)")
        let fleetward = try FleetwardBinary.tool()
        let openssl = try Tool.openssl()
        let data = directory.file("data")
        let environment = hsm.merging(["FLEETWARD_PASSPHRASE": CLI.passphrase, "FLEETWARD_PKCS11_PIN": pin]) { $1 }

        let initialized = try fleetward.run(
            ["init", "--data", data, "--kdf-iterations", "10000", "--key-store", "pkcs11:token=fleet-ca", "--pkcs11-module", module],
            environment: environment, timeout: 120)
        try #require(initialized.succeeded, "\(initialized)")
        #expect(initialized.stdout.contains("in pkcs11:token=fleet-ca"), "\(initialized.stdout)")
        // No key file for what the token holds; the root and the servers' key stay files.
        #expect(!FileManager.default.fileExists(atPath: data + "/ca/issuing.key"))
        #expect(!FileManager.default.fileExists(atPath: data + "/ca/factory.key"))
        #expect(FileManager.default.fileExists(atPath: data + "/ca/root.key"))
        let shown = try fleetward.run(["ca", "show", "--data", data], environment: environment)
        #expect(shown.succeeded && shown.stdout.contains("keys: issuing, factory and release signing in pkcs11:token=fleet-ca"), "\(shown)")

        // OpenSC sees both keys, sensitive and never extractable.
        let listed = try Tool("pkcs11-tool").run(
            ["--module", module, "--token-label", "fleet-ca", "--login", "--pin", pin, "--list-objects"], environment: hsm)
        #expect(listed.succeeded, "\(listed)")
        // One block per object, each starting with its kind ("Private Key Object; EC", …).
        let blocks = listed.stdout.components(separatedBy: "\n").reduce(into: [String]()) { blocks, line in
            if line.contains(" Object;") || blocks.isEmpty { blocks.append(line) } else { blocks[blocks.count - 1] += "\n" + line }
        }
        for label in ["fleetward/ca/issuing", "fleetward/ca/factory"] {
            let block = blocks.first { $0.hasPrefix("Private Key Object") && $0.contains("label:      \(label)\n") } ?? ""
            #expect(block.contains("never extractable") && block.contains("sensitive"), "\(label): \(listed.stdout)")
        }

        // openssl's own pkcs11 engine (libp11) signs with the token's issuing key, and the
        // signature verifies under the issuing CA certificate Fleetward made: the same key.
        if let engine = ["/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so", "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so"]
            .first(where: { FileManager.default.fileExists(atPath: $0) })
        {
            try directory.write(
                "openssl.cnf",
                "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = pkcs11\n[pkcs11]\nengine_id = pkcs11\n"
                    + "dynamic_path = \(engine)\nMODULE_PATH = \(module)\ninit = 0\n")
            try directory.write("message", "a TBSCertificate, say")
            let engineEnvironment = hsm.merging(["OPENSSL_CONF": directory.file("openssl.cnf")]) { $1 }
            let signed = try openssl.run(
                [
                    "dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine", "-sign",
                    "pkcs11:token=fleet-ca;object=fleetward/ca/issuing;type=private;pin-value=\(pin)", "-out", directory.file("engine.sig"),
                    directory.file("message"),
                ], environment: engineEnvironment)
            #expect(signed.succeeded, "\(signed)")
            _ = try openssl.run(["x509", "-in", data + "/ca/issuing.pem", "-pubkey", "-noout", "-out", directory.file("issuing.pub")])
            let checked = try openssl.run([
                "dgst", "-sha256", "-verify", directory.file("issuing.pub"), "-signature", directory.file("engine.sig"), directory.file("message"),
            ])
            #expect(checked.succeeded && checked.stdout.contains("Verified OK"), "\(checked)")
        } else {
            Issue.record("openssl's pkcs11 engine is not installed (scripts/test.sh installs libengine-pkcs11-openssl)")
        }

        // The servers' certificate was signed in the token at init; a device certificate is now.
        let chain = ["-CAfile", data + "/ca/root.pem", "-untrusted", data + "/ca/issuing.pem"]
        let gateway = try openssl.run(["verify"] + chain + [data + "/tls/gateway.pem"])
        #expect(gateway.succeeded && gateway.stdout.contains("OK"), "\(gateway)")
        let csr = try openssl.run([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file("dev.key"), "-subj", "/",
            "-out", directory.file("dev.csr"),
        ])
        try #require(csr.succeeded, "\(csr)")
        let issued = try fleetward.run(
            ["cert", "issue", "--data", data, "--profile", "device", "--id", "SN-HSM-1", "--csr", directory.file("dev.csr"), "--out", directory.file("dev.pem")],
            environment: environment, timeout: 120)
        #expect(issued.succeeded, "\(issued)")
        let device = try openssl.run(["verify"] + chain + [directory.file("dev.pem")])
        #expect(device.succeeded && device.stdout.contains("OK"), "\(device)")

        // A wrong PIN, or none: one clear line, never the PIN, nothing issued.
        var wrong = environment
        wrong["FLEETWARD_PKCS11_PIN"] = "not-the-pin-9753"
        let refused = try fleetward.run(
            ["cert", "issue", "--data", data, "--profile", "device", "--id", "SN-HSM-2", "--csr", directory.file("dev.csr"), "--out", directory.file("dev2.pem")],
            environment: wrong, timeout: 120)
        #expect(!refused.succeeded && refused.stderr.contains("PIN for token 'fleet-ca' is wrong"), "\(refused)")
        #expect(!refused.stderr.contains("not-the-pin-9753") && refused.stderrLines.count == 1, "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: directory.file("dev2.pem")))
        // No PIN and no terminal (setsid drops the controlling tty).
        let noPIN = try Tool("setsid").run(
            ["--wait", fleetward.executable, "cert", "issue", "--data", data, "--profile", "device", "--id", "SN-HSM-3", "--csr", directory.file("dev.csr")],
            environment: hsm.merging(["FLEETWARD_PASSPHRASE": CLI.passphrase]) { $1 }, removingEnvironment: ["FLEETWARD_PKCS11_PIN"], timeout: 120)
        #expect(!noPIN.succeeded && noPIN.stderr.contains("FLEETWARD_PKCS11_PIN"), "\(noPIN)")

        // On a terminal the PIN is asked for, echo off (a pseudo-terminal from Python's pty).
        let prompted = try PseudoTerminal.run(
            fleetward.executable,
            ["cert", "issue", "--data", data, "--profile", "device", "--id", "SN-HSM-4", "--csr", directory.file("dev.csr"), "--out", directory.file("dev4.pem")],
            answers: [("PIN for token 'fleet-ca': ", pin)], environment: hsm.merging(["FLEETWARD_PASSPHRASE": CLI.passphrase]) { $1 },
            removingEnvironment: ["FLEETWARD_PKCS11_PIN"], timeout: 120)
        #expect(prompted.succeeded && prompted.stdout.contains("PIN for token 'fleet-ca': "), "\(prompted)")
        #expect(!prompted.stdout.contains(pin), "the PIN was echoed")
        #expect(try openssl.run(["verify"] + chain + [directory.file("dev4.pem")]).succeeded)
    }

    /// The device side: `fleetward-agent --key-store pkcs11:…` makes its keys in a token (SoftHSM2
    /// standing in for the secure element); the CSR, every TLS handshake, signed telemetry and the
    /// unwrap of an encrypted image's key run there, and no key is ever in a file the agent writes.
    @Test func aDeviceWhoseKeyIsInATokenEnrollsSendsRenewsAndDecryptsAnEncryptedImage() throws {
        guard let module = Self.module else { throw Tool.Missing(description: "SoftHSM2 is not installed (scripts/test.sh installs softhsm2)") }
        let fixture = try ESTFixture(mqtt: true)
        let directory = fixture.directory
        try FileManager.default.createDirectory(atPath: directory.file("se-tokens"), withIntermediateDirectories: true)
        try directory.write("se.conf", "directories.tokendir = \(directory.file("se-tokens"))\nobjectstore.backend = file\nlog.level = ERROR\n")
        let pin = "se-pin-\(UInt32.random(in: 0...UInt32.max))"
        let hsm = ["SOFTHSM2_CONF": directory.file("se.conf")]
        let made = try Tool("softhsm2-util").run(
            ["--init-token", "--free", "--label", "device-se", "--pin", pin, "--so-pin", "se-so-97531"], environment: hsm)
        try #require(made.succeeded, "\(made)")
        let environment = hsm.merging(["FLEETWARD_PKCS11_PIN": pin]) { $1 }
        try fixture.allow(["se-1,\(UpdateTests.secret),,sensor,"])
        let device = try AgentTests.device(fixture, "se-1")
        let store = ["--key-store", "pkcs11:token=device-se", "--pkcs11-module", module]
        func agent(_ command: [String], _ arguments: [String] = [], timeout: Double = 120) throws -> Tool.Result {
            try device.agent.run(command + device.options + store + arguments, environment: environment, timeout: timeout)
        }
        func tokenKeys() throws -> [String] {
            let listed = try Tool("pkcs11-tool").run(
                ["--module", module, "--token-label", "device-se", "--login", "--pin", pin, "--list-objects", "--type", "privkey"],
                environment: hsm)
            #expect(listed.succeeded, "\(listed)")
            return listed.stdout.components(separatedBy: "Private Key Object").dropFirst().map { $0 }
        }

        let enrolled = try agent(["enroll"], ["--id", "se-1", "--secret", UpdateTests.secret])
        try #require(enrolled.succeeded, "\(enrolled)")
        let keys = try tokenKeys()
        #expect(keys.count == 1 && keys[0].contains("never extractable") && keys[0].contains("fleetward/device/"), "\(keys)")
        let sent = try agent(["send"], [#"{"temperature": 21.5}"#])
        #expect(sent.succeeded, "\(sent)")
        let before = try #require(AgentTests.json(try agent(["status"], ["--json"]))["serial"] as? String)
        let renewed = try agent(["renew"])
        #expect(renewed.succeeded, "\(renewed)")
        let after = try #require(AgentTests.json(try agent(["status"], ["--json"]))["serial"] as? String)
        #expect(after != before)
        // The renewal's new key replaced the old one in the token.
        let renewedKeys = try tokenKeys()
        #expect(renewedKeys.count == 1 && renewedKeys != keys, "\(renewedKeys)")
        #expect(try agent(["send"], [#"{"temperature": 21.7}"#]).succeeded)
        // The MQTT front door's mTLS handshake, signed in the token too.
        let published = try agent(["mqtt", "publish"], ["--message", #"{"t":22}"#])
        #expect(published.succeeded && published.stdout.contains("devices/se-1/telemetry"), "\(published)")

        // Without the token's PIN the device cannot act, and says so in one line without a PIN.
        let noPIN = try device.agent.run(["send"] + device.options + store + [#"{"a": 1}"#], environment: hsm, removingEnvironment: ["FLEETWARD_PKCS11_PIN"])
        #expect(noPIN.status == 6 && noPIN.stderr.contains("FLEETWARD_PKCS11_PIN") && noPIN.stderrLines.count == 1, "\(noPIN)")

        // An encrypted image: the key is unwrapped by ECDH inside the token.
        let image = try UpdateTests.firmware(fixture, "se-fw.img", bytes: 1 << 20 + 5)
        _ = try UpdateTests.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor", "--encrypt"])
        let slots = directory.file("se-slots")
        let applied = try agent(["update", "apply"], ["--slots", slots, "--model", "sensor"])
        #expect(applied.succeeded && applied.stdout.contains("installed 1.0.0 on slot-b"), "\(applied)")
        #expect(FileManager.default.contentsEqual(atPath: slots + "/slot-b", andPath: image))

        // No key file anywhere the agent writes: the credential directory holds the sealed
        // credential (certificate, update state) and nothing under keys/.
        let written = AgentTests.files(device.credentials).keys.map { String($0) }
        #expect(written.allSatisfy { !$0.hasPrefix("keys/") && !$0.hasSuffix(".key") }, "\(written)")
        #expect(written.contains { $0.hasSuffix("credential.sealed") }, "\(written)")
    }

    /// A token that goes away while `serve` runs (its files removed, as a pulled HSM): enrollment
    /// is refused with 503 and Retry-After, the log names the token's failure, and the registry is
    /// untouched (the device still allowed, no certificate, no audit entry).
    @Test func aTokenGoneMidRunRefusesEnrollmentAndChangesNothing() throws {
        guard let module = Self.module else { throw Tool.Missing(description: "SoftHSM2 is not installed (scripts/test.sh installs softhsm2)") }
        let directory = try TemporaryDirectory(prefix: "fleetward-hsm-gone")
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.file("tokens"), withIntermediateDirectories: true)
        try directory.write("softhsm2.conf", "directories.tokendir = \(directory.file("tokens"))\nobjectstore.backend = file\nlog.level = ERROR\n")
        let pin = "gone-pin-\(UInt32.random(in: 0...UInt32.max))"
        let hsm = ["SOFTHSM2_CONF": directory.file("softhsm2.conf")]
        try #require(
            try Tool("softhsm2-util").run(["--init-token", "--free", "--label", "ca-gone", "--pin", pin, "--so-pin", "so-86420"], environment: hsm)
                .succeeded)
        let fleetward = try FleetwardBinary.tool()
        let environment = hsm.merging(["FLEETWARD_PASSPHRASE": CLI.passphrase, "FLEETWARD_PKCS11_PIN": pin]) { $1 }
        let data = directory.file("data")
        try #require(
            try fleetward.run(
                ["init", "--data", data, "--kdf-iterations", "10000", "--key-store", "pkcs11:token=ca-gone", "--pkcs11-module", module],
                environment: environment, timeout: 120
            ).succeeded)
        try directory.write("allow.csv", "id,secret,key_sha256,model,metadata\ngone-1,secret-gone-0000000001,,m,\ngone-2,secret-gone-0000000002,,m,\n")
        try #require(try fleetward.run(["devices", "import", "--data", data, directory.file("allow.csv")], environment: environment).succeeded)
        let server = try RunningServer(
            executable: fleetward.executable,
            arguments: [
                "serve", "--data", data, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
                "--mqtt-listen", "off",
            ], environment: environment, logDirectory: directory.path, expectedListeners: 3)
        defer { server.stop() }
        let est = try #require(server.listeners["EST"]) + "/.well-known/est/simpleenroll"
        let curl = try Tool("curl")
        let openssl = try Tool.openssl()
        func enroll(_ id: String, _ secret: String) throws -> (status: String, body: String, headers: String) {
            let csr = try openssl.run([
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file("\(id).key"),
                "-subj", "/", "-outform", "DER", "-out", directory.file("\(id).der"),
            ])
            try #require(csr.succeeded)
            try directory.write("\(id).b64", Data(try directory.read("\(id).der")).base64EncodedString(options: .lineLength64Characters))
            let sent = try curl.run([
                "-s", "-S", "--max-time", "30", "--cacert", data + "/ca/root.pem", "-u", "\(id):\(secret)", "-H", "Content-Type: application/pkcs10",
                "--data-binary", "@" + directory.file("\(id).b64"), "-D", directory.file("headers"), "-o", directory.file("answer"), "-w", "%{http_code}",
                est,
            ])
            return (
                sent.stdout, String(decoding: (try? directory.read("answer")) ?? [], as: UTF8.self),
                String(decoding: (try? directory.read("headers")) ?? [], as: UTF8.self)
            )
        }
        #expect(try enroll("gone-1", "secret-gone-0000000001").status == "200")
        let admin = try fleetward.run(["token", "create", "--data", data, "--role", "admin"], environment: environment).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let auditBefore = try fleetward.run(["audit", "verify", "--data", data, "--json"], environment: environment)

        // The token's files go (a pulled HSM): the key can no longer sign.
        try FileManager.default.moveItem(atPath: directory.file("tokens"), toPath: directory.file("tokens-away"))
        let refused = try enroll("gone-2", "secret-gone-0000000002")
        #expect(refused.status == "503", "\(refused)")
        #expect(refused.body.contains("the CA cannot sign now") && refused.headers.lowercased().contains("retry-after: 30"), "\(refused)")
        #expect(!refused.body.contains(pin))
        let shown = try fleetward.run(["devices", "show", "--data", data, "gone-2", "--json"], environment: environment)
        #expect(shown.stdout.contains("\"allowed\""), "\(shown)")
        let certificates = try curl.run([
            "-s", "-H", "Authorization: Bearer \(admin)", try #require(server.listeners["management API"]) + "/api/v1/devices/gone-2/certificates",
        ])
        #expect(certificates.stdout.contains("\"certificates\"") && !certificates.stdout.contains("\"serial\""), "\(certificates)")
        let auditAfter = try fleetward.run(["audit", "verify", "--data", data, "--json"], environment: environment)
        #expect(auditAfter.stdout == auditBefore.stdout, "no audit entry for a refusal that changed nothing")
        let log = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: server.stderrPath))) ?? Data(), as: UTF8.self)
        #expect(log.contains("token 'ca-gone'") && !log.contains(pin), "the log names the token's failure, never the PIN")
    }
}
