import Crypto
import FleetwardDevice
import FleetwardPKI
import FleetwardServer
import FleetwardTestSupport
import Foundation
import Testing
import X509

/// Signed updates end to end: `fleetward release publish` on the operator's side, `fleetward serve`
/// offering it through the gateway, `fleetward-agent update` checking, downloading, installing into
/// the inactive slot, switching, health-checking and reporting; and every tampered, misdirected or
/// interrupted update leaving the device on a working slot.
@Suite(.tags(.slow)) struct UpdateTests {
    static let secret = "secret-update-device-0123456789"

    /// Enrolls `id` (allow-listed with `secret`) with its own agent.
    static func enrolledDevice(_ fixture: ESTFixture, _ id: String) throws -> AgentTests.Device {
        let device = try AgentTests.device(fixture, id)
        let enrolled = try device.run("enroll", ["--id", id, "--secret", secret])
        try #require(enrolled.succeeded, "\(enrolled)")
        return device
    }

    static func update(
        _ device: AgentTests.Device, _ command: String, slots: String, model: String = "sensor", _ arguments: [String] = []
    ) throws -> Tool.Result {
        try device.agent.run(["update", command] + device.options + ["--slots", slots, "--model", model] + arguments, timeout: 120)
    }

    /// Progress lines may come first on stderr; the last line is the one error line.
    static func expectError(
        _ result: Tool.Result, exit: Int32, containing fragment: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(result.status == exit, "exit \(result.status), expected \(exit): \(result)", sourceLocation: sourceLocation)
        let last = result.stderrLines.last ?? ""
        #expect(last.hasPrefix("fleetward-agent: error: "), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(last.contains(fragment), "'\(fragment)' not in: \(last)", sourceLocation: sourceLocation)
        #expect(result.stderrLines.filter { $0.contains("error:") }.count == 1, "\(result.stderr)", sourceLocation: sourceLocation)
    }

    static func firmware(_ fixture: ESTFixture, _ name: String, bytes: Int) throws -> String {
        var generator = SystemRandomNumberGenerator()
        var data = Data(count: bytes)
        data.withUnsafeMutableBytes { raw in
            for index in stride(from: 0, to: raw.count, by: 8) {
                var word = generator.next()
                withUnsafeBytes(of: &word) { bytes in
                    for offset in 0..<min(8, raw.count - index) { raw[index + offset] = bytes[offset] }
                }
            }
        }
        let path = fixture.directory.file(name)
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    static func publish(_ fixture: ESTFixture, _ file: String, _ arguments: [String]) throws -> [String: Any] {
        let result = try fixture.cli.run(["release", "publish", "--data", fixture.data, file, "--json"] + arguments)
        try #require(result.succeeded, "\(result)")
        return (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
    }

    static func status(_ fixture: ESTFixture, _ version: String) throws -> [String: Int] {
        let result = try fixture.cli.run(["release", "status", "--data", fixture.data, version, "--json"])
        try #require(result.succeeded, "\(result)")
        let json = (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
        return json["devices"] as? [String: Int] ?? [:]
    }

    static func current(_ slots: String) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: slots + "/current")
    }

    /// Replaces a file the way an attacker with write access to the server would, in one rename.
    static func replace(_ path: String, with bytes: Data) throws {
        let temporary = path + ".tamper"
        try bytes.write(to: URL(fileURLWithPath: temporary))
        #expect(rename(temporary, path) == 0)
    }

    @Test func aDeviceInTheRolloutInstallsReportsAndOthersAreNotOffered() throws {
        let fixture = try ESTFixture()
        // Places in the 50 % rollout of 1.0.0 are fixed by ID: one device inside, one outside.
        let candidates = (0..<64).map { "fleet-\($0)" }
        let inside = try #require(candidates.first { UpdateCatalog.inRollout(device: $0, version: "1.0.0", percent: 50) })
        let outside = try #require(candidates.first { !UpdateCatalog.inRollout(device: $0, version: "1.0.0", percent: 50) })
        try fixture.allow(["\(inside),\(Self.secret),,sensor,", "\(outside),\(Self.secret),,sensor,"])
        let first = try Self.enrolledDevice(fixture, inside)
        let second = try Self.enrolledDevice(fixture, outside)
        let firstSlots = fixture.directory.file("slots-first")
        let secondSlots = fixture.directory.file("slots-second")

        // Nothing published yet.
        let nothing = try Self.update(first, "check", slots: firstSlots)
        #expect(nothing.succeeded && nothing.stdout.contains("up to date"), "\(nothing)")

        let image = try Self.firmware(fixture, "fw-1.img", bytes: 5 << 20 + 12345)
        _ = try Self.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor", "--rollout", "50"])

        let offered = AgentTests.json(try Self.update(first, "check", slots: firstSlots, ["--json"]))
        #expect((offered["offered"] as? [String: Any])?["version"] as? String == "1.0.0", "\(offered)")
        #expect(offered["slot"] as? String == "slot-a")

        let healthy = #"test "$(wc -c < "$FLEETWARD_SLOT")" -eq \#(5 << 20 + 12345) && test "$FLEETWARD_VERSION" = 1.0.0"#
        let applied = try Self.update(first, "apply", slots: firstSlots, ["--health-check", healthy])
        #expect(applied.succeeded && applied.stdout.contains("installed 1.0.0 on slot-b"), "\(applied)")
        #expect(Self.current(firstSlots) == "slot-b")
        #expect(FileManager.default.contentsEqual(atPath: firstSlots + "/slot-b", andPath: image))
        #expect(!FileManager.default.fileExists(atPath: firstSlots + "/pending.json"))
        let again = try Self.update(first, "apply", slots: firstSlots)
        #expect(again.succeeded && again.stdout.contains("up to date"), "\(again)")

        // Outside the rollout: not offered, nothing written.
        let notOffered = try Self.update(second, "apply", slots: secondSlots)
        #expect(notOffered.succeeded && notOffered.stdout.contains("up to date"), "\(notOffered)")
        #expect(Self.current(secondSlots) == "slot-a")
        #expect(
            try Self.status(fixture, "1.0.0") == [
                "offered": 0, "downloading": 0, "downloaded": 0, "installed": 1, "failed": 0, "rolled-back": 0,
            ])

        // Widening the rollout re-signs the same image: the second device takes it, the first
        // (already running it) installs nothing.
        let widened = try fixture.cli.run(["release", "promote", "--data", fixture.data, "1.0.0", "--rollout", "100"])
        #expect(widened.succeeded, "\(widened)")
        let secondApplied = try Self.update(second, "apply", slots: secondSlots)
        #expect(secondApplied.succeeded && secondApplied.stdout.contains("installed 1.0.0 on slot-b"), "\(secondApplied)")
        let firstUnchanged = try Self.update(first, "apply", slots: firstSlots)
        #expect(firstUnchanged.succeeded && firstUnchanged.stdout.contains("up to date") && Self.current(firstSlots) == "slot-b")
        #expect(try Self.status(fixture, "1.0.0")["installed"] == 2)

        // A halted release is offered to no one.
        let image2 = try Self.firmware(fixture, "fw-2.img", bytes: 1 << 20)
        _ = try Self.publish(fixture, image2, ["--version", "2.0.0", "--model", "sensor"])
        #expect(try fixture.cli.run(["release", "halt", "--data", fixture.data, "2.0.0"]).succeeded)
        let halted = try Self.update(first, "check", slots: firstSlots)
        #expect(halted.succeeded && halted.stdout.contains("up to date"), "\(halted)")
        #expect(try Self.status(fixture, "2.0.0")["offered"] == 0)

        // A failing health check switches back and is reported; the release is not taken again.
        let image3 = try Self.firmware(fixture, "fw-3.img", bytes: 1 << 20)
        _ = try Self.publish(fixture, image3, ["--version", "3.0.0", "--model", "sensor"])
        let unhealthy = try Self.update(
            first, "apply", slots: firstSlots, ["--health-check", "echo self-test: sensor bus; echo 'no response on i2c-1' >&2; exit 3"])
        Self.expectError(unhealthy, exit: 9, containing: "release 3.0.0 failed its health check")
        // What the check printed is in the error (one line), so the operator sees why.
        #expect(unhealthy.stderr.contains("status 3; it printed: self-test: sensor bus | no response on i2c-1"), "\(unhealthy)")
        #expect(Self.current(firstSlots) == "slot-b")
        #expect(FileManager.default.contentsEqual(atPath: firstSlots + "/slot-b", andPath: image))
        #expect(try Self.status(fixture, "3.0.0")["rolled-back"] == 1)
        let notRetried = try Self.update(first, "apply", slots: firstSlots)
        #expect(notRetried.succeeded && notRetried.stdout.contains("up to date"), "\(notRetried)")

        // Another model's release: the gateway offers by the registry's model, the device checks its own.
        let otherModel = try Self.update(second, "check", slots: secondSlots, model: "lock")
        Self.expectError(otherModel, exit: 8, containing: "is for sensor, not lock")

        // `run` takes updates on its live connection, between telemetry messages.
        let image4 = try Self.firmware(fixture, "fw-4.img", bytes: 1 << 20)
        _ = try Self.publish(fixture, image4, ["--version", "4.0.0", "--model", "sensor"])
        let running = try first.agent.run(
            ["run"] + first.options + ["--duration", "4", "--interval", "1", "--slots", firstSlots, "--model", "sensor"], timeout: 60)
        #expect(running.succeeded && running.stdout.contains("installed update 4.0.0 on slot-a"), "\(running)")
        #expect(Self.current(firstSlots) == "slot-a")
        #expect(FileManager.default.contentsEqual(atPath: firstSlots + "/slot-a", andPath: image4))

        // A revoked release signing certificate: the gateway offers nothing, publishing refuses.
        let signerSerial = try fixture.cli.openssl(["x509", "-in", fixture.data + "/releases/signing.pem", "-noout", "-serial"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
        let image5 = try Self.firmware(fixture, "fw-5.img", bytes: 1 << 20)
        _ = try Self.publish(fixture, image5, ["--version", "5.0.0", "--model", "sensor"])
        let revoked = try fixture.cli.run(["cert", "revoke", "--data", fixture.data, "--serial", signerSerial])
        #expect(revoked.succeeded, "\(revoked)")
        let withheld = try Self.update(first, "apply", slots: firstSlots)
        Self.expectError(withheld, exit: 4, containing: "is revoked")
        #expect(Self.current(firstSlots) == "slot-a", "nothing was installed")
        let refusedPublish = try fixture.cli.run([
            "release", "publish", "--data", fixture.data, image5, "--version", "6.0.0", "--model", "sensor",
        ])
        #expect(!refusedPublish.succeeded && refusedPublish.stderr.contains("is revoked"), "\(refusedPublish)")

        // A suspended device is cut off and gets nothing.
        let suspend = try fixture.cli.run(["devices", "suspend", "--data", fixture.data, outside])
        #expect(suspend.succeeded, "\(suspend)")
        // The gateway learns of the suspension from the registry within its poll interval (200 ms
        // on SQLite): a connection admitted just before that is cut off when it does (exit 3, "the
        // gateway closed the connection"). Either way nothing is installed; once the gateway
        // knows, the device is refused outright (exit 4).
        let slotBefore = Self.current(secondSlots)
        var refused = try Self.update(second, "check", slots: secondSlots)
        for _ in 0..<20 where refused.status == 3 && refused.stderr.contains("closed the connection") {
            #expect(Self.current(secondSlots) == slotBefore)
            Thread.sleep(forTimeInterval: 0.05)
            refused = try Self.update(second, "check", slots: secondSlots)
        }
        #expect(refused.status == 4, "\(refused)")
        #expect(Self.current(secondSlots) == slotBefore)
    }

    /// The MQTT path: `serve` announces the signed offer, retained, on the device's updates
    /// topic; `fleetward-agent mqtt run --slots` takes it through the gateway; a device cannot
    /// plant an offer of its own; halting the release clears the retained offer.
    @Test func anOfferAnnouncedOverMQTTIsTakenByTheAgentAndHaltingClearsIt() throws {
        let fixture = try ESTFixture(mqtt: true)
        try fixture.allow(["upd-mq,\(Self.secret),,sensor,"])
        let device = try Self.enrolledDevice(fixture, "upd-mq")
        let slots = fixture.directory.file("slots-mq")
        let sub = try Tool("mosquitto_sub")
        let socket = fixture.data + "/mqtt/broker.sock"
        /// The retained offer on the device's updates topic, as a backend on the broker reads it.
        func retained() throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: sub.executable)
            process.arguments = ["--unix", socket, "-t", "devices/upd-mq/updates", "-C", "1", "--retained-only"]
            process.standardOutput = Pipe()
            process.standardError = Pipe()
            try process.run()
            return MQTTFrontDoorTests.output(process, seconds: 1.5)
        }

        let running = try AgentTests.Background(
            device, ["mqtt", "run"] + device.options + ["--interval", "5", "--duration", "90", "--slots", slots, "--model", "sensor"])
        defer { running.stop() }
        #expect(running.wait(for: "connected over MQTT as upd-mq", seconds: 20), "\(running.log())")

        let image = try Self.firmware(fixture, "fw-mq.img", bytes: 300_000)
        _ = try Self.publish(fixture, image, ["--version", "2.0.0", "--model", "sensor"])
        #expect(running.wait(for: "installed update 2.0.0 on slot-b", seconds: 30), "\(running.log())")
        #expect(Self.current(slots) == "slot-b")
        #expect(FileManager.default.contentsEqual(atPath: slots + "/slot-b", andPath: image))
        #expect(try Self.status(fixture, "2.0.0")["installed"] == 1)

        // What the broker keeps is the signed offer, the same document the gateway answers.
        let offer = try retained()
        let decoded = try? JSONDecoder().decode(UpdateOffer.self, from: Data(offer.utf8))
        #expect(decoded?.version == "2.0.0" && decoded?.size == 300_000, "\(offer)")
        #expect(decoded.map { (try? DeviceOptionsForTests.updater(device).verify($0)) != nil } == false,
            "an offer already taken is refused as a replay")

        // A device cannot plant an offer: its policy denies publishing there.
        let planted = try device.agent.run(
            ["mqtt", "publish"] + device.options + ["--topic", "devices/upd-mq/updates", "--message", "{}", "--retain"])
        Self.expectError(planted, exit: 4, containing: "not authorized")
        #expect(try retained().contains("2.0.0"), "the announced offer stays")

        // Halted: the retained offer is cleared (nothing else is offered on the channel).
        #expect(try fixture.cli.run(["release", "halt", "--data", fixture.data, "2.0.0"]).succeeded)
        var cleared = false
        let deadline = Date().addingTimeInterval(15)
        while !cleared, Date() < deadline {
            cleared = try !retained().contains("2.0.0")
            if !cleared { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(
            cleared,
            """
            the halted release's offer was not cleared; announced: \((try? String(contentsOfFile: fixture.data + "/mqtt/announced", encoding: .utf8)) ?? "-"); \
            serve: \(((try? String(contentsOfFile: fixture.server.stderrPath, encoding: .utf8)) ?? "").suffix(2000)); agent: \(running.log().suffix(1500))
            """)
    }

    @Test func tamperedArtifactsAndManifestsAreRefusedAndNothingIsWritten() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["tamper-1,\(Self.secret),,sensor,"])
        let device = try Self.enrolledDevice(fixture, "tamper-1")
        let slots = fixture.directory.file("slots")
        let image = try Self.firmware(fixture, "fw.img", bytes: 3 << 20)
        let published = try Self.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor"])
        let artifactPath = try #require(published["artifactPath"] as? String)
        let manifestPath = try #require(published["manifestPath"] as? String)
        let signaturePath = try #require(published["signaturePath"] as? String)
        let signerPath = fixture.data + "/releases/signing.pem"
        let genuine = (
            artifact: try Data(contentsOf: URL(fileURLWithPath: artifactPath)),
            manifest: try Data(contentsOf: URL(fileURLWithPath: manifestPath)),
            signature: try Data(contentsOf: URL(fileURLWithPath: signaturePath)),
            signer: try Data(contentsOf: URL(fileURLWithPath: signerPath))
        )
        func expectUntouched(_ what: String) {
            #expect(Self.current(slots) == "slot-a", "\(what): the device stays on slot-a")
            #expect(!FileManager.default.fileExists(atPath: slots + "/slot-b"), "\(what): nothing was installed")
            #expect(!FileManager.default.fileExists(atPath: slots + "/pending.json"), "\(what)")
        }

        // One flipped byte in the artifact the server holds: downloaded, hash refused, discarded.
        var flipped = genuine.artifact
        flipped[flipped.count / 2] ^= 0x01
        try Self.replace(artifactPath, with: flipped)
        Self.expectError(try Self.update(device, "apply", slots: slots), exit: 8, containing: "SHA-256")
        expectUntouched("flipped artifact byte")
        #expect((try? FileManager.default.contentsOfDirectory(atPath: slots + "/download")) == [], "the bad download was discarded")
        #expect(try Self.status(fixture, "1.0.0")["failed"] == 1)
        try Self.replace(artifactPath, with: genuine.artifact)

        // An edited manifest (the size changed) under its original signature.
        let edited = String(decoding: genuine.manifest, as: UTF8.self).replacingOccurrences(
            of: "\"size\":\(3 << 20)", with: "\"size\":\(3 << 20 - 1)")
        #expect(edited != String(decoding: genuine.manifest, as: UTF8.self), "the edit changed the manifest")
        try Self.replace(manifestPath, with: Data(edited.utf8))
        Self.expectError(try Self.update(device, "apply", slots: slots), exit: 8, containing: "signature does not verify")
        expectUntouched("edited manifest")
        try Self.replace(manifestPath, with: genuine.manifest)

        // Signed by the wrong role: the issuing CA's own key (its certificate is under the root,
        // but it is a CA, not a release signer), then the gateway's server key (not under the root).
        for (name, certificate, keyPath) in [
            ("issuing", fixture.data + "/ca/issuing.pem", fixture.data + "/ca/issuing.key"),
            ("gateway", fixture.data + "/tls/gateway.pem", fixture.data + "/tls/gateway.key"),
        ] {
            let signed = try fixture.cli.openssl([
                "dgst", "-sha256", "-sign", keyPath, "-passin", "pass:" + CLI.passphrase, "-out", fixture.directory.file("\(name).sig"),
                manifestPath,
            ])
            #expect(signed.succeeded, "\(signed)")
            try Self.replace(signaturePath, with: try Data(contentsOf: URL(fileURLWithPath: fixture.directory.file("\(name).sig"))))
            // The first certificate of the file: the signer alone, as the release signer is served.
            let leaf = try fixture.cli.openssl(["x509", "-in", certificate]).stdout
            try Self.replace(signerPath, with: Data(leaf.utf8))
            let refused = try Self.update(device, "apply", slots: slots)
            Self.expectError(
                refused, exit: 8,
                containing: name == "issuing"
                    ? "not signed by a release signing (codesign) certificate" : "not certified by the pinned root")
            expectUntouched("signed by the \(name) key")
        }
        try Self.replace(signaturePath, with: genuine.signature)
        try Self.replace(signerPath, with: genuine.signer)

        // The genuine release installs; afterwards the older, genuinely signed manifest and an
        // expired one signed by the release key itself are refused by the device (the gateway
        // would not offer them; a replaying server would).
        let installed = try Self.update(device, "apply", slots: slots)
        #expect(installed.succeeded && installed.stdout.contains("installed 1.0.0 on slot-b"), "\(installed)")
        let image2 = try Self.firmware(fixture, "fw-2.img", bytes: 1 << 20)
        _ = try Self.publish(fixture, image2, ["--version", "2.0.0", "--model", "sensor"])
        #expect(try Self.update(device, "apply", slots: slots).succeeded)
        #expect(FileManager.default.contentsEqual(atPath: slots + "/slot-a", andPath: image2))

        let agent = try DeviceOptionsForTests.agent(device)
        let updater = Updater(agent: agent, slots: SlotStore(directory: slots), model: "sensor")
        #expect(try agent.credential().acceptedManifestVersion == 2)
        let replayed = UpdateOffer(
            version: "1.0.0", manifestVersion: 1, manifest: genuine.manifest.base64EncodedString(),
            signature: genuine.signature.base64EncodedString(), certificate: String(decoding: genuine.signer, as: UTF8.self),
            artifact: "/v1/updates/x", size: 3 << 20)
        #expect(throws: DeviceError(.updateRejected, "")) { try updater.verify(replayed) }
        do {
            _ = try updater.verify(replayed)
        } catch let error as DeviceError {
            #expect(error.message.contains("not newer than 2"), "\(error)")
        }

        var expired = try JSONSerialization.jsonObject(with: genuine.manifest) as? [String: Any] ?? [:]
        expired["manifestVersion"] = 99
        expired["expires"] = "2026-01-01T00:00:00Z"
        let expiredBytes = try JSONSerialization.data(withJSONObject: expired, options: [.sortedKeys])
        try expiredBytes.write(to: URL(fileURLWithPath: fixture.directory.file("expired.json")))
        let signedExpired = try fixture.cli.openssl([
            "dgst", "-sha256", "-sign", fixture.data + "/releases/signing.key", "-passin", "pass:" + CLI.passphrase, "-out",
            fixture.directory.file("expired.sig"), fixture.directory.file("expired.json"),
        ])
        #expect(signedExpired.succeeded, "\(signedExpired)")
        let expiredOffer = UpdateOffer(
            version: "1.0.0", manifestVersion: 99, manifest: expiredBytes.base64EncodedString(),
            signature: try Data(contentsOf: URL(fileURLWithPath: fixture.directory.file("expired.sig"))).base64EncodedString(),
            certificate: String(decoding: genuine.signer, as: UTF8.self), artifact: "/v1/updates/x", size: 3 << 20)
        do {
            _ = try updater.verify(expiredOffer)
            Issue.record("an expired manifest was accepted")
        } catch let error as DeviceError {
            #expect(error.code == .updateRejected && error.message.contains("expired"), "\(error)")
        }
    }

    @Test func aKilledApplyLeavesAWorkingSlotResumesTheDownloadAndFinishesTheSwitch() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["killed-1,\(Self.secret),,sensor,"])
        let device = try Self.enrolledDevice(fixture, "killed-1")
        let slots = fixture.directory.file("slots")
        let size = 96 << 20
        let image = try Self.firmware(fixture, "big.img", bytes: size)
        let published = try Self.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor"])
        let sha256 = try #require(
            (published["manifest"] as? [String: Any]).flatMap { $0["artifact"] as? [String: Any] }?["sha256"] as? String)
        let partial = slots + "/download/\(sha256).partial"

        func start(_ arguments: [String]) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: device.agent.executable)
            process.arguments = ["update", "apply"] + device.options + ["--slots", slots, "--model", "sensor"] + arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.launchSerialized()
            return process
        }
        func fileSize(_ path: String) -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
        }
        func kill9(_ process: Process) {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        // Killed mid-download: still on slot-a, a partial download kept.
        let downloading = try start([])
        let deadline = Date().addingTimeInterval(60)
        while fileSize(partial) < 8 << 20, downloading.isRunning, Date() < deadline { usleep(2_000) }
        kill9(downloading)
        let kept = fileSize(partial)
        #expect(kept > 0 && kept < size, "a partial download of \(kept) bytes")
        #expect(Self.current(slots) == "slot-a")
        #expect(!FileManager.default.fileExists(atPath: slots + "/slot-b"))

        // Killed after the switch, during the health check: the new slot is whole, the switch pending.
        let switching = try start(["--health-check", "sleep 3"])
        let pendingDeadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: slots + "/pending.json"), switching.isRunning, Date() < pendingDeadline {
            usleep(2_000)
        }
        while Self.current(slots) != "slot-b", switching.isRunning, Date() < pendingDeadline { usleep(1_000) }
        kill9(switching)
        #expect(Self.current(slots) == "slot-b")
        #expect(FileManager.default.contentsEqual(atPath: slots + "/slot-b", andPath: image), "the switched-to slot is the whole image")
        #expect(FileManager.default.fileExists(atPath: slots + "/pending.json"))

        // The next run checks the pending switch, confirms it and reports; nothing is downloaded again.
        let recovered = try Self.update(device, "apply", slots: slots, ["--health-check", "true"])
        #expect(recovered.succeeded, "\(recovered)")
        #expect(recovered.stderr.contains("release 1.0.0 passed its health check on slot-b"), "\(recovered)")
        #expect(recovered.stdout.contains("up to date"), "\(recovered)")
        #expect(!FileManager.default.fileExists(atPath: slots + "/pending.json"))
        #expect(try Self.status(fixture, "1.0.0")["installed"] == 1)
    }

    /// `release publish --encrypt`: only ciphertext is stored and served; each device gets the key
    /// wrapped to its own certificate's key and decrypts into its inactive slot; a wrap taken from
    /// another device, or a content key the server cannot open, installs nothing.
    @Test func anEncryptedImageIsServedAsCiphertextAndOnlyTheAskingDeviceCanDecryptIt() async throws {
        let fixture = try ESTFixture()
        try fixture.allow(["crypt-1,\(Self.secret),,sensor,", "crypt-2,\(Self.secret),,sensor,"])
        let first = try Self.enrolledDevice(fixture, "crypt-1")
        let second = try Self.enrolledDevice(fixture, "crypt-2")
        let image = try Self.firmware(fixture, "secret-fw.img", bytes: 3 << 20 + 777)
        let published = try Self.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor", "--encrypt"])
        let manifest = try #require(published["manifest"] as? [String: Any])
        let artifact = try #require(manifest["artifact"] as? [String: Any])
        let encryption = try #require(manifest["encryption"] as? [String: Any], "\(published)")
        let sha256 = try #require(artifact["sha256"] as? String)
        let imageBytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let imageSHA = SHA256.hash(data: imageBytes).map { String(format: "%02x", $0) }.joined()
        #expect((encryption["plaintext"] as? [String: Any])?["sha256"] as? String == imageSHA)
        #expect(encryption["scheme"] as? String == "aes-256-gcm-stream-v1" && encryption["keyWrap"] as? String == "hpke-p256-sha256-aes256gcm")
        // The server holds ciphertext only (no run of the image in it), and the content key sealed, 0600.
        let stored = try Data(contentsOf: URL(fileURLWithPath: fixture.data + "/releases/artifacts/" + sha256))
        #expect(stored.count == 3 << 20 + 777 + 16 * 49 && stored.range(of: imageBytes.subdata(in: 4096..<4160)) == nil)
        #expect(!FileManager.default.fileExists(atPath: fixture.data + "/releases/artifacts/" + imageSHA))
        let sealedKey = fixture.data + "/releases/keys/\(sha256).sealed"
        #expect((try FileManager.default.attributesOfItem(atPath: sealedKey)[.posixPermissions] as? Int) == 0o600)
        // The signed manifest says it is encrypted, and openssl checks the signature over it.
        _ = try fixture.cli.openssl([
            "x509", "-in", fixture.data + "/releases/signing.pem", "-pubkey", "-noout", "-out", fixture.directory.file("release-signing.pub"),
        ])
        let verified = try fixture.cli.openssl([
            "dgst", "-sha256", "-verify", fixture.directory.file("release-signing.pub"), "-signature",
            fixture.data + "/releases/manifests/1.sig", fixture.data + "/releases/manifests/1.json",
        ])
        #expect(verified.succeeded && verified.stdout.contains("Verified OK"), "\(verified)")

        // Each device decrypts it into its inactive slot.
        let firstSlots = fixture.directory.file("slots-1")
        let applied = try Self.update(first, "apply", slots: firstSlots)
        #expect(applied.succeeded && applied.stdout.contains("installed 1.0.0 on slot-b"), "\(applied)")
        #expect(FileManager.default.contentsEqual(atPath: firstSlots + "/slot-b", andPath: image))

        // The first device's wrap does not open with the second device's key, nor as the second device.
        let connection = try await DeviceOptionsForTests.agent(first).connect()
        let response = try await connection.send(HTTP1Request(method: "GET", path: "/v1/updates/\(sha256)/key"))
        await connection.close()
        #expect(response.status == 200)
        let wrapped = try JSONDecoder().decode(ImageEncryption.WrappedKey.self, from: Data(response.body))
        let secondKey = try DeviceOptionsForTests.agent(second).operationalIdentity().key
        let secondPublic = try P256.KeyAgreement.PublicKey(x963Representation: secondKey.publicKey.x963Representation)
        #expect(throws: PKIError.self) {
            try ImageEncryption.unwrap(
                wrapped, recipient: secondPublic, info: ImageEncryption.wrapInfo(artifact: sha256, device: "crypt-2"),
                agree: { try secondKey.sharedSecret(with: $0) })
        }
        let firstKey = try DeviceOptionsForTests.agent(first).operationalIdentity().key
        let firstPublic = try P256.KeyAgreement.PublicKey(x963Representation: firstKey.publicKey.x963Representation)
        #expect(throws: PKIError.self) {
            try ImageEncryption.unwrap(
                wrapped, recipient: firstPublic, info: ImageEncryption.wrapInfo(artifact: sha256, device: "crypt-2"),
                agree: { try firstKey.sharedSecret(with: $0) })
        }
        _ = try ImageEncryption.unwrap(
            wrapped, recipient: firstPublic, info: ImageEncryption.wrapInfo(artifact: sha256, device: "crypt-1"),
            agree: { try firstKey.sharedSecret(with: $0) })

        // A content key the server cannot open (altered on disk before anyone asked): the gateway
        // gives no key, the device downloads and installs nothing.
        let image2 = try Self.firmware(fixture, "secret-fw-2.img", bytes: 70_000)
        let published2 = try Self.publish(fixture, image2, ["--version", "2.0.0", "--model", "sensor", "--encrypt"])
        let sha2 = try #require(((published2["manifest"] as? [String: Any])?["artifact"] as? [String: Any])?["sha256"] as? String)
        let sealedKey2 = fixture.data + "/releases/keys/\(sha2).sealed"
        var altered = try Data(contentsOf: URL(fileURLWithPath: sealedKey2))
        altered[altered.startIndex + 20] ^= 0x01
        try Self.replace(sealedKey2, with: altered)
        let secondSlots = fixture.directory.file("slots-2")
        let refused = try Self.update(second, "apply", slots: secondSlots)
        Self.expectError(refused, exit: 4, containing: "no key for the encrypted image (503)")
        #expect(Self.current(secondSlots) == "slot-a")
        #expect(!FileManager.default.fileExists(atPath: secondSlots + "/slot-b"))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: secondSlots + "/download")) ?? []).isEmpty)
    }

    @Test func resumingADownloadContinuesFromThePartialFileAndAFlippedPartialIsDiscarded() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["resume-1,\(Self.secret),,sensor,"])
        let device = try Self.enrolledDevice(fixture, "resume-1")
        let slots = fixture.directory.file("slots")
        let image = try Self.firmware(fixture, "fw.img", bytes: 6 << 20)
        let published = try Self.publish(fixture, image, ["--version", "1.0.0", "--model", "sensor"])
        let sha256 = try #require(
            (published["manifest"] as? [String: Any]).flatMap { $0["artifact"] as? [String: Any] }?["sha256"] as? String)
        try FileManager.default.createDirectory(atPath: slots + "/download", withIntermediateDirectories: true)
        let partial = slots + "/download/\(sha256).partial"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))

        // A partial download whose bytes were damaged: resumed, then refused by hash and discarded.
        var damaged = bytes.prefix(3 << 20)
        damaged[damaged.startIndex + 100] ^= 0x80
        try damaged.write(to: URL(fileURLWithPath: partial))
        let refused = try Self.update(device, "apply", slots: slots)
        Self.expectError(refused, exit: 8, containing: "SHA-256")
        #expect(!FileManager.default.fileExists(atPath: partial) && Self.current(slots) == "slot-a")

        // A genuine partial (the first 3 MiB): the rest is fetched with Range and the image installs.
        try bytes.prefix(3 << 20).write(to: URL(fileURLWithPath: partial))
        let resumed = try Self.update(device, "apply", slots: slots)
        #expect(resumed.succeeded && resumed.stderr.contains("resuming the download at \(3 << 20) bytes"), "\(resumed)")
        #expect(FileManager.default.contentsEqual(atPath: slots + "/slot-b", andPath: image))
    }
}

/// The device kit's agent over a test device's files (for checks below the command line).
enum DeviceOptionsForTests {
    static func updater(_ device: AgentTests.Device, slots: String = "/nonexistent") throws -> Updater {
        Updater(agent: try agent(device), slots: SlotStore(directory: slots), model: "sensor")
    }

    static func agent(_ device: AgentTests.Device) throws -> DeviceAgent {
        let config = try ProvisioningConfig.load(path: device.config)
        return DeviceAgent(
            config: config,
            store: CredentialStore(
                directory: device.credentials, uniqueKey: try DeviceUniqueKey.load(path: device.uniqueKey, createIfMissing: false)))
    }
}
