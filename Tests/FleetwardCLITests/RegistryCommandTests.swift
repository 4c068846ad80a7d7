import FleetwardTestSupport
import Foundation
import Testing

@Suite(.tags(.slow)) struct RegistryCommandTests {
    /// Writes an allow-list of `count` rows: secrets, every fifth a key fingerprint, every tenth with metadata.
    static func writeAllowList(_ path: String, count: Int, prefix: String = "DEV") throws {
        var text = "id,secret,key_sha256,model,metadata\n"
        text.reserveCapacity(count * 64)
        for index in 0..<count {
            let id = String(format: "%@-%07d", prefix, index)
            if index % 5 == 4 {
                text += "\(id),,\(String(repeating: String(format: "%02x", index % 256), count: 32)),cam-v2,\n"
            } else {
                text +=
                    "\(id),factory-secret-\(String(format: "%012d", index * 7919)),,sensor-v1,\(index % 10 == 0 ? "site=plant-1;batch=b7" : "")\n"
            }
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func initialized(_ cli: CLI, _ dir: TemporaryDirectory) throws -> String {
        let data = dir.file("data")
        let result = try cli.run(["init", "--data", data, "--kdf-iterations", "2000"])
        #expect(result.succeeded, "\(result)")
        return data
    }

    func json(_ result: Tool.Result) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result)")
    }

    @Test func importListShowAndTransitions() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        try Self.writeAllowList(dir.file("allow.csv"), count: 50)

        let first = try json(try cli.run(["devices", "import", "--data", data, dir.file("allow.csv"), "--json"]))
        #expect(first["inserted"] as? Int == 50)
        #expect(first["duplicates"] as? Int == 0)
        let again = try json(try cli.run(["devices", "import", "--data", data, dir.file("allow.csv"), "--json"]))
        #expect(again["inserted"] as? Int == 0)
        #expect(again["duplicates"] as? Int == 50)

        let page = try json(try cli.run(["devices", "list", "--data", data, "--limit", "20", "--json"], passphrase: nil))
        let devices = try #require(page["devices"] as? [[String: Any]])
        #expect(devices.count == 20)
        #expect(page["next"] as? String == "DEV-0000019")
        let next = try json(try cli.run(["devices", "list", "--data", data, "--limit", "20", "--after", "DEV-0000019", "--json"]))
        #expect((next["devices"] as? [[String: Any]])?.first?["id"] as? String == "DEV-0000020")
        let cams = try json(try cli.run(["devices", "list", "--data", data, "--model", "cam-v2", "--limit", "100", "--json"]))
        #expect((cams["devices"] as? [[String: Any]])?.count == 10)

        let shown = try json(try cli.run(["devices", "show", "--data", data, "DEV-0000000", "--json"]))
        #expect(shown["state"] as? String == "allowed")
        #expect(shown["proof"] as? String == "secret")
        #expect((shown["metadata"] as? [String: String]) == ["site": "plant-1", "batch": "b7"])
        #expect(!(String(data: try JSONSerialization.data(withJSONObject: shown), encoding: .utf8) ?? "").contains("factory-secret"))
        let camera = try json(try cli.run(["devices", "show", "--data", data, "DEV-0000004", "--json"]))
        #expect(camera["keySHA256"] as? String == String(repeating: "04", count: 32))

        // allowed → suspend is not a transition the lifecycle allows.
        cli.expectOneLineError(
            try cli.run(["devices", "suspend", "--data", data, "DEV-0000001"]), containing: "cannot go from allowed to suspended")
        #expect(try cli.run(["devices", "revoke", "--data", data, "DEV-0000001"]).stdout == "DEV-0000001 is now revoked\n")
        cli.expectOneLineError(
            try cli.run(["devices", "resume", "--data", data, "DEV-0000001"]),
            containing: "a device cannot go from revoked to active (resume)")
        cli.expectOneLineError(try cli.run(["devices", "show", "--data", data, "NOPE-1"]), containing: "no device NOPE-1")
        cli.expectOneLineError(try cli.run(["devices", "show", "--data", data, "x' OR '1'='1"]), containing: "device ID has")
        cli.expectOneLineError(try cli.run(["devices", "list", "--data", data, "--state", "bogus"]), containing: "unknown state 'bogus'")

        let audit = try cli.run(["audit", "verify", "--data", data])
        #expect(audit.stdout == "Audit log intact: 3 entries.\n", "\(audit)")
    }

    @Test func theSameCommandsWorkOnPostgreSQL() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        let database = try TestPostgres.makeDatabase()
        defer { database.drop() }
        try Self.writeAllowList(dir.file("allow.csv"), count: 2500)
        let db = ["--database", database.url]
        let first = try json(try cli.run(["devices", "import", "--data", data, dir.file("allow.csv"), "--json", "--batch", "1000"] + db))
        #expect(first["inserted"] as? Int == 2500)
        let again = try json(try cli.run(["devices", "import", "--data", data, dir.file("allow.csv"), "--json"] + db))
        #expect(again["duplicates"] as? Int == 2500)
        #expect(try database.psql("SELECT count(*) FROM devices") == "2500")
        #expect(!FileManager.default.fileExists(atPath: data + "/registry.sqlite"), "SQLite was used despite --database")

        #expect(try cli.run(["devices", "revoke", "--data", data, "DEV-0000007"] + db).stdout == "DEV-0000007 is now revoked\n")
        cli.expectOneLineError(
            try cli.run(["devices", "resume", "--data", data, "DEV-0000007"] + db), containing: "cannot go from revoked to active")
        let shown = try json(try cli.run(["devices", "show", "--data", data, "DEV-0000007", "--json"] + db))
        #expect(shown["state"] as? String == "revoked")
        #expect(try cli.run(["token", "create", "--data", data, "--role", "manufacturer"] + db).succeeded)
        #expect(try cli.run(["audit", "verify", "--data", data] + db).stdout == "Audit log intact: 6 entries.\n")
        try database.psql("UPDATE audit_log SET subject = 'device:DEV-0000008' WHERE action = 'device.revoke'")
        cli.expectOneLineError(
            try cli.run(["audit", "verify", "--data", data] + db), containing: "audit log broken at entry 5: entry 5 was altered")

        cli.expectOneLineError(
            try cli.run(["devices", "list", "--data", data, "--database", "mysql://x"]),
            containing: "the database URL must look like postgres://")
    }

    @Test func aMalformedFileImportsNothingAndNamesItsLines() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        try "id,secret,key_sha256,model\nD-1,factory-secret-0001,,m\nD 2,factory-secret-0002,,m\nD-3,,,m\nD-4,factory-secret-0004,,m\n"
            .write(toFile: dir.file("bad.csv"), atomically: true, encoding: .utf8)
        let result = try cli.run(["devices", "import", "--data", data, dir.file("bad.csv")])
        cli.expectOneLineError(result, containing: "has 2 malformed rows (line 3: device ID has ' ' at position 2")
        #expect(result.stderr.contains("line 4: device D-3: an ID alone proves nothing"))
        #expect(result.stderr.contains("nothing was imported"))
        let list = try json(try cli.run(["devices", "list", "--data", data, "--json"]))
        #expect((list["devices"] as? [Any])?.isEmpty == true)

        let skipped = try json(try cli.run(["devices", "import", "--data", data, dir.file("bad.csv"), "--skip-invalid", "--json"]))
        #expect(skipped["inserted"] as? Int == 2)
        #expect(skipped["rejected"] as? Int == 2)
        #expect((skipped["errors"] as? [String])?.first?.hasPrefix("line 3:") == true)
        cli.expectOneLineError(try cli.run(["devices", "import", "--data", data, dir.file("absent.csv")]), containing: "cannot read")
    }

    @Test func tokensArePrintedOnceAndStoredOnlyAsHMAC() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        let created = try cli.run(["token", "create", "--data", data, "--role", "operator"])
        #expect(created.succeeded, "\(created)")
        let token = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.hasPrefix("fwt_") && token.count > 50)
        #expect(created.stderr.contains("shown only this once"))
        let secret = String(token.split(separator: "_").last!)
        for file in ["registry.sqlite", "registry.sqlite-wal"] where FileManager.default.fileExists(atPath: data + "/" + file) {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: data + "/" + file))
            #expect(bytes.range(of: Data(secret.utf8)) == nil, "the token's secret is stored in \(file)")
        }
        let owner = try json(try cli.run(["token", "create", "--data", data, "--role", "owner", "--owner", "alice@example.com", "--json"]))
        #expect(owner["owner"] as? String == "alice@example.com")
        cli.expectOneLineError(
            try cli.run(["token", "create", "--data", data, "--role", "owner"]), containing: "an owner token needs --owner")
        cli.expectOneLineError(try cli.run(["token", "create", "--data", data, "--role", "root"]), containing: "unknown role 'root'")
        cli.expectOneLineError(
            try cli.run(["token", "create", "--data", data, "--role", "admin"], passphrase: "wrong passphrase"),
            containing: "wrong passphrase for")
        #expect(AtomicFile.mode(data + "/ca/registry.seal") == 0o600)
    }

    @Test func auditVerifyNamesAnEntryEditedBehindItsBack() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        try Self.writeAllowList(dir.file("allow.csv"), count: 10)
        #expect(try cli.run(["devices", "import", "--data", data, dir.file("allow.csv")]).succeeded)
        for id in ["DEV-0000001", "DEV-0000002", "DEV-0000003"] {
            #expect(try cli.run(["devices", "revoke", "--data", data, id]).succeeded)
        }
        #expect(try cli.run(["audit", "verify", "--data", data]).stdout.contains("intact: 4 entries"))
        let sqlite = try Tool("sqlite3")
        // Someone rewrites history: the revocation of DEV-0000002 becomes a suspension.
        #expect(try sqlite.run([data + "/registry.sqlite", "UPDATE audit_log SET action = 'device.suspend' WHERE sequence = 3"]).succeeded)
        cli.expectOneLineError(
            try cli.run(["audit", "verify", "--data", data]), containing: "audit log broken at entry 3: entry 3 was altered")
    }

    /// Entries rewritten with their SHA-256 chain recomputed (without the registry key) fail on
    /// their MAC; a log cut short fails against a checkpoint signed before, which openssl checks
    /// with the issuing CA's certificate alone.
    @Test func anAuditCheckpointCatchesATruncatedOrRewrittenLog() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        for role in ["admin", "operator", "manufacturer"] {
            #expect(try cli.run(["token", "create", "--data", data, "--role", role]).succeeded)
        }
        let made = try cli.run(["audit", "checkpoint", "--data", data, "--out", dir.file("cp.json")])
        #expect(made.succeeded, "\(made)")
        let checkpoint = try #require(
            try JSONSerialization.jsonObject(with: Data(dir.read("cp.json"))) as? [String: Any])
        #expect(checkpoint["sequence"] as? Int == 3)
        // Anyone can check the signature: the signed bytes, the issuing CA's public key, openssl.
        let time = try #require(ISO8601DateFormatter().date(from: checkpoint["time"] as? String ?? ""))
        try dir.write(
            "signed", "fleetward-audit-checkpoint-v1\n\(checkpoint["sequence"] as? Int ?? 0)\n\(checkpoint["hash"] as? String ?? "")\n\(Int64(time.timeIntervalSince1970) * 1000)\n")
        try dir.write("signature", try #require(Data(base64Encoded: checkpoint["signature"] as? String ?? "")))
        try cli.openssl(["x509", "-in", data + "/ca/issuing.pem", "-pubkey", "-noout", "-out", dir.file("issuing.pub")])
        let verified = try cli.openssl.run([
            "dgst", "-sha256", "-verify", dir.file("issuing.pub"), "-signature", dir.file("signature"), dir.file("signed"),
        ])
        #expect(verified.stdout.contains("Verified OK"), "\(verified)")
        let holds = try cli.run(["audit", "verify", "--data", data, "--checkpoint", dir.file("cp.json")])
        #expect(holds.stdout.contains("holding checkpoint entry 3"), "\(holds)")
        // The newest entry removed: the chain that is left is whole, the checkpoint says otherwise.
        let sqlite = try Tool("sqlite3")
        #expect(try sqlite.run([data + "/registry.sqlite", "DELETE FROM audit_log WHERE sequence = 3"]).succeeded)
        #expect(try cli.run(["audit", "verify", "--data", data]).succeeded)
        cli.expectOneLineError(
            try cli.run(["audit", "verify", "--data", data, "--checkpoint", dir.file("cp.json")]), containing: "entries were removed")
        // An entry rewritten with its hash recomputed: the MAC gives it away.
        let rehash = """
            import hashlib, sqlite3, struct, sys
            db = sqlite3.connect(sys.argv[1])
            rows = db.execute("SELECT sequence, time_ms, actor, action, subject, before, after, previous_hash FROM audit_log ORDER BY sequence").fetchall()
            previous = None
            for (seq, t, actor, action, subject, before, after, prev) in rows:
                if seq == 2: action = "device.suspend"
                prev = previous if previous is not None else prev
                h = hashlib.sha256(struct.pack(">q", seq) + struct.pack(">q", t))
                for field in (actor, action, subject, before, after):
                    data = b"\\xff" if field is None else field.encode()
                    h.update(struct.pack(">Q", len(data)) + data)
                h.update(struct.pack(">Q", len(prev)) + prev)
                digest = h.digest()
                db.execute("UPDATE audit_log SET action = ?, previous_hash = ?, hash = ? WHERE sequence = ?", (action, prev, digest, seq))
                previous = digest
            db.commit()
            """
        let rewritten = try Tool("python3").run(["-c", rehash, data + "/registry.sqlite"])
        #expect(rewritten.succeeded, "\(rewritten)")
        cli.expectOneLineError(
            try cli.run(["audit", "verify", "--data", data]), containing: "entry 2 does not carry the registry key's MAC")
    }

    @Test func killingAnImportLeavesWholeBatchesAndARerunFinishesIt() throws {
        let cli = try CLI()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let data = try initialized(cli, dir)
        let total = 200_000
        try Self.writeAllowList(dir.file("allow.csv"), count: total)
        let sqlite = try Tool("sqlite3")
        func scalar(_ sql: String) throws -> Int {
            let result = try sqlite.run([data + "/registry.sqlite", sql])
            return Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: cli.fleetward.executable)
        process.arguments = ["devices", "import", "--data", data, dir.file("allow.csv"), "--batch", "1000", "--json"]
        var environment = ProcessInfo.processInfo.environment
        environment["FLEETWARD_PASSPHRASE"] = CLI.passphrase
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.launchSerialized()
        // Wait (bounded) until a few batches are in, then kill -9 in the middle of the import.
        var batches = 0
        for _ in 0..<600 where batches < 5 {
            Thread.sleep(forTimeInterval: 0.05)
            batches = (try? scalar("SELECT count(*) FROM audit_log WHERE action = 'devices.import'")) ?? 0
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the import finished before it could be killed")

        let devices = try scalar("SELECT count(*) FROM devices")
        let audited = try scalar(
            "SELECT coalesce(sum(json_extract(after, '$.inserted')), 0) FROM audit_log WHERE action = 'devices.import'")
        #expect(devices > 0 && devices < total, "devices: \(devices)")
        #expect(devices % 1000 == 0, "a batch was cut in half: \(devices) rows")
        #expect(devices == audited, "rows and audit entries disagree: \(devices) vs \(audited)")
        #expect(try sqlite.run([data + "/registry.sqlite", "PRAGMA integrity_check"]).stdout == "ok\n")
        #expect(try cli.run(["audit", "verify", "--data", data]).succeeded)

        let rerun = try json(try cli.run(["devices", "import", "--data", data, dir.file("allow.csv"), "--json"]))
        #expect(rerun["duplicates"] as? Int == devices)
        #expect(rerun["inserted"] as? Int == total - devices)
        #expect(try scalar("SELECT count(*) FROM devices") == total)
    }
}
