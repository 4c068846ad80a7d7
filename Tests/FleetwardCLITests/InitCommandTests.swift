import FleetwardTestSupport
import Foundation
import Testing

@Suite(.tags(.slow)) struct InitCommandTests {
    @Test func hierarchyVerifiesWithOpenSSLAndHasCAExtensions() throws {
        let cli = try CLI()
        let dir = try SharedAuthority.get()
        let ca = dir.file("data/ca")
        let verify = try cli.openssl(["verify", "-CAfile", "\(ca)/root.pem", "\(ca)/issuing.pem", "\(ca)/factory.pem"])
        #expect(verify.stdout.contains("issuing.pem: OK") && verify.stdout.contains("factory.pem: OK"))

        let root = try cli.openssl(["x509", "-in", "\(ca)/root.pem", "-noout", "-text"]).stdout
        #expect(root.contains("Subject: O = Fleetward, CN = Fleetward Root CA"))
        #expect(root.contains("Issuer: O = Fleetward, CN = Fleetward Root CA"))
        #expect(root.contains("ASN1 OID: secp384r1"))
        #expect(root.contains("ecdsa-with-SHA384"))
        #expect(root.contains("X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:1"))
        for name in ["issuing", "factory"] {
            let text = try cli.openssl(["x509", "-in", "\(ca)/\(name).pem", "-noout", "-text"]).stdout
            #expect(text.contains("ASN1 OID: prime256v1"), "\(name)")
            #expect(text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0"), "\(name)")
            #expect(text.contains("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign"), "\(name)")
            #expect(text.contains("X509v3 Subject Key Identifier"), "\(name)")
            #expect(text.contains("X509v3 Authority Key Identifier"), "\(name)")
        }
        // The intermediates' authorityKeyIdentifier is the root's subjectKeyIdentifier.
        let rootSKI = try cli.openssl(["x509", "-in", "\(ca)/root.pem", "-noout", "-ext", "subjectKeyIdentifier"]).stdout
            .split(separator: "\n").last!.trimmingCharacters(in: .whitespaces)
        let issuingAKI = try cli.openssl(["x509", "-in", "\(ca)/issuing.pem", "-noout", "-ext", "authorityKeyIdentifier"]).stdout
        #expect(issuingAKI.contains(rootSKI))

        let dates = try cli.openssl(["x509", "-in", "\(ca)/issuing.pem", "-noout", "-enddate"]).stdout
        let year = Calendar(identifier: .gregorian).component(.year, from: Date())
        #expect(dates.contains("\(year + 5) GMT"), "intermediates last 5 years: \(dates)")
        let rootDates = try cli.openssl(["x509", "-in", "\(ca)/root.pem", "-noout", "-enddate"]).stdout
        #expect(rootDates.contains("\(year + 20) GMT"), "the root lasts 20 years: \(rootDates)")

        let gateway = try cli.openssl([
            "verify", "-CAfile", "\(ca)/root.pem", "-untrusted", "\(ca)/issuing.pem", "-purpose", "sslserver",
            dir.file("data/tls/gateway.pem"),
        ])
        #expect(gateway.stdout.contains(": OK"))
        let gatewayText = try cli.openssl(["x509", "-in", dir.file("data/tls/gateway.pem"), "-noout", "-ext", "subjectAltName"]).stdout
        #expect(gatewayText.contains("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"))
    }

    @Test func keysOpenWithThePassphraseOnlyAndAreNeverPlain() throws {
        let cli = try CLI()
        let dir = try SharedAuthority.get()
        for name in ["ca/root.key", "ca/issuing.key", "ca/factory.key", "tls/gateway.key"] {
            let path = dir.file("data/" + name)
            #expect(AtomicFile.mode(path) == 0o600, "\(name)")
            let good = try cli.openssl.run(
                ["pkey", "-in", path, "-passin", "env:FLEETWARD_PASSPHRASE", "-noout"],
                environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase])
            #expect(good.succeeded, "\(name): \(good.stderr)")
            let bad = try cli.openssl.run(["pkey", "-in", path, "-passin", "pass:correct horse batterz", "-noout"])
            #expect(!bad.succeeded, "\(name) opened with a wrong passphrase")
            let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
            #expect(text.hasPrefix("-----BEGIN ENCRYPTED PRIVATE KEY-----"))
            let parsed = try cli.openssl(["asn1parse", "-in", path]).stdout
            #expect(
                parsed.contains(":PBES2") && parsed.contains(":PBKDF2") && parsed.contains(":hmacWithSHA256")
                    && parsed.contains(":aes-256-cbc"))
            #expect(parsed.contains("INTEGER           :0927C0"), "600,000 PBKDF2 iterations")
        }
    }

    @Test func refusesAnExistingDirectoryUnlessForcedAndChangesNothing() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = dir.file("data")
        try cli.run(["init", "--data", data, "--kdf-iterations", "2000"])
        let before = try snapshot(data)
        let again = try cli.run(["init", "--data", data, "--kdf-iterations", "2000"])
        cli.expectOneLineError(again, containing: "already holds a Fleetward CA; use --force")
        #expect(try snapshot(data) == before)

        let forced = try cli.run(["init", "--data", data, "--kdf-iterations", "2000", "--force", "--json"])
        #expect(forced.succeeded, "\(forced)")
        #expect(try snapshot(data)["ca/root.pem"] != before["ca/root.pem"])
        let report = try JSONSerialization.jsonObject(with: Data(forced.stdout.utf8)) as? [String: Any]
        let certificates = report?["certificates"] as? [[String: Any]]
        #expect(certificates?.map { $0["role"] as? String } == ["root", "issuing", "factory", "gateway"])
    }

    @Test func optionsChooseKeyTypesOrganizationHostsAndLifetimes() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = dir.file("data")
        let result = try cli.run([
            "init", "--data", data, "--kdf-iterations", "2000", "--org", "Acme Sensors", "--root-key", "P-256",
            "--issuing-key", "p384", "--root-days", "3650", "--intermediate-days", "730", "--host", "gw.acme.example", "--host", "10.0.0.5",
        ])
        #expect(result.succeeded, "\(result)")
        let root = try cli.openssl(["x509", "-in", data + "/ca/root.pem", "-noout", "-text"]).stdout
        #expect(root.contains("ASN1 OID: prime256v1") && root.contains("O = Acme Sensors, CN = Acme Sensors Root CA"))
        let issuing = try cli.openssl(["x509", "-in", data + "/ca/issuing.pem", "-noout", "-text"]).stdout
        #expect(issuing.contains("ASN1 OID: secp384r1"))
        let san = try cli.openssl(["x509", "-in", data + "/tls/gateway.pem", "-noout", "-ext", "subjectAltName"]).stdout
        #expect(san.contains("DNS:gw.acme.example, IP Address:10.0.0.5"))
    }

    @Test(arguments: [
        (["--root-key", "P-521"], "--root-key must be P-256 or P-384"),
        (["--org", String(repeating: "x", count: 60)], "organization name has 60 characters"),
        (["--host", "bad host"], "neither an IP address nor a valid DNS name"),
        (["--root-days", "100", "--intermediate-days", "200"], "no longer than the root"),
        (["--kdf-iterations", "5"], "PBKDF2 iteration count"),
        (["--bogus"], "Unknown option '--bogus'"),
    ])
    func badOptionsAreOneClearLineAndWriteNothing(_ extra: [String], _ fragment: String) throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let result = try cli.run(["init", "--data", dir.file("data")] + extra)
        cli.expectOneLineError(result, containing: fragment)
        #expect(!dir.exists("data"))
    }

    @Test func theRevocationURLIsCheckedAndCanBeLeftOut() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        for bad in ["ftp://x/", "not a url", "http://", "http://h/?q=1"] {
            cli.expectOneLineError(
                try cli.run(["init", "--data", dir.file("bad"), "--kdf-iterations", "1000", "--revocation-url", bad]),
                containing: "revocation URL")
            #expect(!dir.exists("bad/fleetward.json"))
        }
        let made = try cli.run(["init", "--data", dir.file("none"), "--kdf-iterations", "1000", "--revocation-url", "none"])
        #expect(made.succeeded, "\(made)")
        let json = try String(contentsOfFile: dir.file("none/fleetward.json"), encoding: .utf8)
        #expect(!json.contains("revocationBaseURL"), "\(json)")
        let custom = try cli.run([
            "init", "--data", dir.file("custom"), "--kdf-iterations", "1000", "--revocation-url", "https://pki.example/fleet",
        ])
        #expect(custom.succeeded, "\(custom)")
        #expect(try String(contentsOfFile: dir.file("custom/fleetward.json"), encoding: .utf8).contains("https:\\/\\/pki.example\\/fleet"))
    }

    @Test func aShortOrMissingPassphraseIsRefused() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        cli.expectOneLineError(try cli.run(["init", "--data", dir.file("a")], passphrase: "short"), containing: "at least 8 characters")
        cli.expectOneLineError(
            try cli.run(["init", "--data", dir.file("b")], passphrase: ""), containing: "FLEETWARD_PASSPHRASE is set but empty")
        // No environment variable and no terminal (setsid drops the controlling tty).
        let setsid = try Tool("setsid")
        let noTTY = try setsid.run(
            ["--wait", cli.fleetward.executable, "init", "--data", dir.file("c")], removingEnvironment: ["FLEETWARD_PASSPHRASE"])
        cli.expectOneLineError(noTTY, containing: "set FLEETWARD_PASSPHRASE or run on a terminal")
        #expect(!dir.exists("c/ca/root.key"))
    }

    @Test func promptsWithoutEchoOnATerminal() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let result = try PseudoTerminal.run(
            cli.fleetward.executable, ["init", "--data", dir.file("data"), "--kdf-iterations", "2000"],
            answers: [("Passphrase for the new CA keys: ", "typed secret 123"), ("Repeat the passphrase: ", "typed secret 123")],
            removingEnvironment: ["FLEETWARD_PASSPHRASE"])
        #expect(result.succeeded, "\(result)")
        #expect(result.stdout.contains("Passphrase for the new CA keys: "))
        #expect(result.stdout.contains("Repeat the passphrase: "))
        #expect(!result.stdout.contains("typed secret"), "the passphrase was echoed")
        let opened = try cli.openssl.run(["pkey", "-in", dir.file("data/ca/root.key"), "-passin", "pass:typed secret 123", "-noout"])
        #expect(opened.succeeded, "\(opened)")
    }
}

extension AtomicFile {
    static func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }
}

enum AtomicFile {}
