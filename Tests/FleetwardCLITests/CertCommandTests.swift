import FleetwardTestSupport
import Foundation
import Testing

@Suite(.tags(.slow)) struct CertCommandTests {
    /// `openssl req` arguments making a key of each allowed type.
    static let keyTypes: [(String, [String])] = [
        ("P-256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        ("P-384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        ("Ed25519", ["-newkey", "ed25519"]),
        ("RSA-2048", ["-newkey", "rsa:2048"]),
    ]

    func makeCSR(
        _ cli: CLI, _ dir: TemporaryDirectory, _ name: String, key: [String], subject: String = "/", extra: [String] = [], der: Bool = false
    ) throws -> String {
        let path = dir.file(name)
        try cli.openssl(
            ["req", "-new"] + key + ["-nodes", "-keyout", dir.file(name + ".key"), "-subj", subject] + extra
                + (der ? ["-outform", "DER"] : []) + ["-out", path])
        return path
    }

    @Test(arguments: keyTypes)
    func deviceCertificateForEachKeyTypeVerifiesAsAClient(_ keyType: String, _ keyArguments: [String]) throws {
        let cli = try CLI()
        let shared = try SharedAuthority.get()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let ca = shared.file("data/ca")
        let csr = try makeCSR(
            cli, dir, "csr.pem", key: keyArguments, subject: "/serialNumber=D-0042",
            extra: ["-addext", "subjectAltName=DNS:evil.example", "-addext", "basicConstraints=critical,CA:TRUE"])
        let issued = try cli.run([
            "cert", "issue", "--data", shared.file("data"), "--profile", "device", "--csr", csr, "--id", "D-0042", "--out",
            dir.file("dev.pem"),
        ])
        #expect(issued.succeeded, "\(issued)")
        let verify = try cli.openssl([
            "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/issuing.pem", "-purpose", "sslclient", dir.file("dev.pem"),
        ])
        #expect(verify.stdout.contains("dev.pem: OK"))
        let asServer = try cli.openssl.run([
            "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/issuing.pem", "-purpose", "sslserver", dir.file("dev.pem"),
        ])
        #expect(!asServer.succeeded, "a device certificate verified as a TLS server")
        #expect((asServer.stdout + asServer.stderr).contains("unsuitable certificate purpose"))

        let text = try cli.openssl(["x509", "-in", dir.file("dev.pem"), "-noout", "-text"]).stdout
        #expect(text.contains("Subject: O = Fleetward, CN = D-0042, serialNumber = D-0042"))
        #expect(text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"))
        #expect(text.contains("X509v3 Key Usage: critical\n                Digital Signature"))
        #expect(text.contains("X509v3 Extended Key Usage: \n                TLS Web Client Authentication"))
        #expect(text.contains("URI:urn:fleetward:device:D-0042"))
        #expect(text.contains("Policy: 1.2.840.113556.1.8000.2554.41859.15517.20887.16429.36653.1713437.4589622.1.1"))
        #expect(!text.contains("evil.example"), "a SAN was copied from the CSR")
        #expect(!text.contains("CA:TRUE"), "basicConstraints was copied from the CSR")

        // The certificate holds the CSR's key.
        let certKey = try cli.openssl(["x509", "-in", dir.file("dev.pem"), "-noout", "-pubkey"]).stdout
        let csrKey = try cli.openssl(["req", "-in", csr, "-noout", "-pubkey"]).stdout
        #expect(certKey == csrKey)

        let days = try cli.openssl(["x509", "-in", dir.file("dev.pem"), "-noout", "-checkend", "\(29 * 86_400)"])
        #expect(days.stdout.contains("will not expire"))
        let expiry = try cli.openssl.run(["x509", "-in", dir.file("dev.pem"), "-noout", "-checkend", "\(31 * 86_400)"])
        #expect(!expiry.succeeded, "a device certificate lasts 30 days by default")

        // A serial of at most 20 octets, positive.
        let serial = try cli.openssl(["x509", "-in", dir.file("dev.pem"), "-noout", "-serial"]).stdout
        let hex = serial.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
        #expect(hex.count == 40)
        #expect(Int(String(hex.prefix(1)), radix: 16)! < 8)
    }

    @Test func serverBirthAndOCSPProfiles() throws {
        let cli = try CLI()
        let shared = try SharedAuthority.get()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = shared.file("data")
        let ca = shared.file("data/ca")
        let key = Self.keyTypes[0].1

        let serverCSR = try makeCSR(cli, dir, "server.csr", key: key, subject: "/CN=gw.example.com", der: true)
        #expect(
            try cli.run([
                "cert", "issue", "--data", data, "--profile", "server", "--csr", serverCSR, "--host", "gw.example.com",
                "--host", "192.0.2.7", "--days", "90", "--out", dir.file("server.pem"),
            ]).succeeded)
        #expect(
            try cli.openssl([
                "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/issuing.pem", "-purpose", "sslserver",
                dir.file("server.pem"),
            ]).stdout.contains(": OK"))
        let serverText = try cli.openssl(["x509", "-in", dir.file("server.pem"), "-noout", "-text"]).stdout
        #expect(serverText.contains("DNS:gw.example.com, IP Address:192.0.2.7"))
        #expect(serverText.contains("TLS Web Server Authentication"))

        let birthCSR = try makeCSR(cli, dir, "birth.csr", key: key)
        #expect(
            try cli.run([
                "cert", "issue", "--data", data, "--profile", "birth", "--csr", birthCSR, "--id", "SN-77", "--out", dir.file("birth.pem"),
            ]).succeeded)
        #expect(
            try cli.openssl([
                "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/factory.pem", "-purpose", "sslclient",
                dir.file("birth.pem"),
            ]).stdout.contains(": OK"))
        let viaIssuing = try cli.openssl.run([
            "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/issuing.pem", dir.file("birth.pem"),
        ])
        #expect(!viaIssuing.succeeded, "a birth certificate chained through the issuing CA")
        let birthText = try cli.openssl(["x509", "-in", dir.file("birth.pem"), "-noout", "-text"]).stdout
        #expect(birthText.contains("Issuer: O = Fleetward, CN = Fleetward Factory CA"))
        #expect(birthText.contains("Policy: 1.2.840.113556.1.8000.2554.41859.15517.20887.16429.36653.1713437.4589622.1.2"))

        let ocspCSR = try makeCSR(cli, dir, "ocsp.csr", key: key)
        #expect(
            try cli.run([
                "cert", "issue", "--data", data, "--profile", "ocsp", "--csr", ocspCSR, "--ca", "factory", "--out", dir.file("ocsp.pem"),
            ]).succeeded)
        let ocspText = try cli.openssl(["x509", "-in", dir.file("ocsp.pem"), "-noout", "-text"]).stdout
        #expect(ocspText.contains("OCSP Signing"))
        #expect(ocspText.contains("OCSP No Check"))
        #expect(ocspText.contains("Issuer: O = Fleetward, CN = Fleetward Factory CA"))
        #expect(
            try cli.openssl([
                "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/factory.pem", "-purpose", "ocsphelper",
                dir.file("ocsp.pem"),
            ]).stdout.contains(": OK"))
    }

    @Test func badInputGetsOneClearLineAndChangesNothing() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // Its own data directory: successful issues elsewhere now write the shared one's registry.
        let data = dir.file("data")
        #expect(try cli.run(["init", "--data", data, "--kdf-iterations", "10000"]).succeeded)
        let key = Self.keyTypes[0].1
        let good = try makeCSR(cli, dir, "good.der", key: key, subject: "/CN=D-1", der: true)
        let goodBytes = try dir.read("good.der")

        var broken = goodBytes
        broken[broken.count - 5] ^= 0x55
        try dir.write("broken-signature.der", broken)
        try dir.write("truncated.der", Array(goodBytes.prefix(goodBytes.count / 2)))
        try dir.write("garbage.bin", (0..<500).map { UInt8(truncatingIfNeeded: $0 &* 7919) })
        try dir.write("huge.bin", [UInt8](repeating: 0x41, count: 1 << 20))
        try dir.write("empty.pem", "")
        _ = try makeCSR(cli, dir, "p521.pem", key: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"])
        _ = try makeCSR(cli, dir, "rsa1024.pem", key: ["-newkey", "rsa:1024"])
        _ = try makeCSR(cli, dir, "secp256k1.pem", key: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"])
        _ = try makeCSR(cli, dir, "other-device.pem", key: key, subject: "/serialNumber=D-2")

        let cases: [([String], String)] = [
            (["--csr", dir.file("broken-signature.der"), "--id", "D-1"], "CSR signature does not verify"),
            (["--csr", dir.file("truncated.der"), "--id", "D-1"], "not a PKCS#10 certificate signing request"),
            (["--csr", dir.file("garbage.bin"), "--id", "D-1"], "CSR is neither DER nor PEM"),
            (["--csr", dir.file("huge.bin"), "--id", "D-1"], "CSR is 1048576 bytes; the limit is 65536"),
            (["--csr", dir.file("empty.pem"), "--id", "D-1"], "no PEM block found"),
            (["--csr", dir.file("p521.pem"), "--id", "D-1"], "CSR has a P-521 key"),
            (["--csr", dir.file("rsa1024.pem"), "--id", "D-1"], "CSR has a RSA-1024 key"),
            (["--csr", dir.file("secp256k1.pem"), "--id", "D-1"], "CSR has a EC secp256k1 key"),
            (["--csr", dir.file("other-device.pem"), "--id", "D-1"], "CSR subject serialNumber 'D-2' does not match device D-1"),
            (["--csr", good, "--id", "D 1; DROP TABLE"], "device ID has ' ' at position 2"),
            (["--csr", good], "profile device needs --id"),
            (["--csr", dir.file("absent.pem"), "--id", "D-1"], "does not exist"),
            (["--csr", good, "--id", "D-1", "--days", "0"], "may last 1 to 825 days, not 0"),
        ]
        let before = try snapshot(data)
        for (arguments, fragment) in cases {
            let result = try cli.run(["cert", "issue", "--data", data, "--profile", "device", "--out", dir.file("out.pem")] + arguments)
            cli.expectOneLineError(result, containing: fragment)
            #expect(!dir.exists("out.pem"), "\(arguments) wrote a certificate")
        }
        let wrongPassphrase = try cli.run(
            ["cert", "issue", "--data", data, "--profile", "device", "--csr", good, "--id", "D-1", "--out", dir.file("out.pem")],
            passphrase: "not the passphrase")
        cli.expectOneLineError(wrongPassphrase, containing: "wrong passphrase for \(data)/ca/issuing.key")
        #expect(!wrongPassphrase.stderr.contains("not the passphrase"))
        #expect(!dir.exists("out.pem"))
        let unknownProfile = try cli.run(["cert", "issue", "--data", data, "--profile", "root", "--csr", good])
        cli.expectOneLineError(unknownProfile, containing: "unknown profile 'root'")
        #expect(try snapshot(data) == before, "a failed issue changed the data directory")
    }

    @Test func inspectPrintsWhatACertificateSays() throws {
        let cli = try CLI()
        let shared = try SharedAuthority.get()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let csr = try makeCSR(cli, dir, "csr.pem", key: Self.keyTypes[0].1)
        let issued = try cli.run([
            "cert", "issue", "--data", shared.file("data"), "--profile", "device", "--csr", csr, "--id", "D-9", "--json",
        ])
        #expect(issued.succeeded, "\(issued)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])
        let pem = try #require(report["certificate"] as? String)
        try dir.write("dev.pem", pem)

        let json = try cli.run(["cert", "inspect", dir.file("dev.pem"), "--json"])
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(summary["profile"] as? String == "device")
        #expect(summary["deviceID"] as? String == "D-9")
        #expect(summary["serialNumber"] as? String == report["serialNumber"] as? String)
        #expect(summary["extendedKeyUsage"] as? [String] == ["clientAuth"])
        let fingerprint = try cli.openssl(["x509", "-in", dir.file("dev.pem"), "-noout", "-fingerprint", "-sha256"]).stdout
        let expected = fingerprint.split(separator: "=").last!.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(
            of: ":", with: ""
        ).lowercased()
        #expect(summary["sha256Fingerprint"] as? String == expected)
        #expect(report["sha256Fingerprint"] as? String == expected)

        let text = try cli.run(["cert", "inspect", dir.file("dev.pem")])
        #expect(text.stdout.contains("Subject             O=Fleetward, CN=D-9, serialNumber=D-9"))
        #expect(text.stdout.contains("Profile             device"))

        let chain = try cli.run(["cert", "inspect", shared.file("data/tls/gateway.pem"), "--json"])
        let list = try #require(try JSONSerialization.jsonObject(with: Data(chain.stdout.utf8)) as? [[String: Any]])
        #expect(list.count == 2)

        try dir.write("junk.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        cli.expectOneLineError(try cli.run(["cert", "inspect", dir.file("junk.pem")]), containing: "not an X.509 certificate")
    }

    @Test func caShowListsTheHierarchyWithoutAPassphrase() throws {
        let cli = try CLI()
        let shared = try SharedAuthority.get()
        let result = try cli.run(["ca", "show", "--data", shared.file("data"), "--json"], passphrase: nil)
        #expect(result.succeeded, "\(result)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let certificates = try #require(report["certificates"] as? [[String: Any]])
        let fingerprint = try cli.openssl(["x509", "-in", shared.file("data/ca/root.pem"), "-noout", "-fingerprint", "-sha256"]).stdout
            .split(separator: "=").last!.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: ":", with: "")
            .lowercased()
        let root = certificates.first { $0["role"] as? String == "root" }?["certificate"] as? [String: Any]
        #expect(root?["sha256Fingerprint"] as? String == fingerprint)
        #expect(root?["publicKey"] as? String == "P-384")

        let text = try cli.run(["ca", "show", "--data", shared.file("data")], passphrase: nil)
        #expect(text.stdout.contains("root     P-384"))
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        cli.expectOneLineError(try cli.run(["ca", "show", "--data", dir.path]), containing: "holds no Fleetward CA; run 'fleetward init")
    }

    @Test func serveCreatesTheDirectoryOnFirstRunAndChecksThePassphraseAfter() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        func serve() throws -> RunningServer {
            try RunningServer(
                executable: cli.fleetward.executable,
                arguments: [
                    "serve", "--data", dir.file("data"), "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen",
                    "127.0.0.1:0", "--mqtt-listen", "off",
                ],
                environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: dir.path,
                expectedListeners: 3)
        }
        let first = try serve()
        #expect(first.stdout.contains("Fleetward CA for Fleetward in"))
        #expect(dir.exists("data/ca/root.key"))
        #expect(first.stop() == 0, "\(first.stderr)")
        let second = try serve()
        #expect(second.listeners["management API"] != nil)
        #expect(second.stop() == 0, "\(second.stderr)")
        cli.expectOneLineError(
            try cli.run(["serve", "--data", dir.file("data")], passphrase: "wrong passphrase!"), containing: "wrong passphrase for")

        // Default data directory: ./fleetward-data, or $FLEETWARD_DATA.
        let defaulted = try cli.run(["ca", "show"], in: dir.path)
        cli.expectOneLineError(defaulted, containing: "\(dir.path)/fleetward-data holds no Fleetward CA")
    }

    @Test func everyCommandHasHelp() throws {
        let cli = try CLI()
        for command in [
            [], ["init"], ["serve"], ["ca", "show"], ["cert", "issue"], ["cert", "inspect"], ["factory", "issue"], ["devices", "import"],
            ["devices", "list"], ["token", "create"], ["audit", "verify"],
        ] {
            let result = try cli.run(command + ["--help"])
            #expect(result.succeeded, "\(command)")
            #expect(result.stdout.contains("USAGE: fleetward"), "\(command)")
        }
    }
}
