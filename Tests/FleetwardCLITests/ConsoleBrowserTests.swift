import FleetwardTestSupport
import Foundation
import Testing

/// The console in a real browser: Debian's chromium driven by selenium (PyPI) through
/// `Fixtures/console_browser.py`, against a real `fleetward serve` with a device holding a live
/// gateway connection. Screenshots of the main pages go to `console-screenshots/`
/// (not committed).
@Suite(.tags(.slow)) struct ConsoleBrowserTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func signInOverviewRevokeOwnersAndEscapingInChromium() throws {
        let python = try Tool("python3")
        try #require(
            try python.run(["-c", "import selenium"]).succeeded,
            "selenium is not installed: scripts/test.sh installs it (python3 -m pip install selenium)")
        try #require(
            FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium")
                && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver"),
            "chromium is not installed: scripts/test.sh installs it (apt-get install chromium chromium-driver)")
        let fixture = try ESTFixture()
        func token(_ arguments: [String]) throws -> String {
            let result = try fixture.cli.run(["token", "create", "--data", fixture.data] + arguments)
            try #require(result.succeeded, "\(result)")
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let operatorToken = try token(["--role", "operator"])
        let alice = try token(["--role", "owner", "--owner", "alice"])
        _ = try token(["--role", "owner", "--owner", "bob"])

        // Alice's camera carries hostile metadata; Bob's is his own; a third waits unenrolled.
        let secret = "factory-secret-0123456789"
        try fixture.allow([
            "BR-ALICE,\(secret),,cam,note=<script>window.fleetwardPwned=true</script>;pic=<img src=x onerror=window.fleetwardPwned=true>",
            "BR-BOB,another-secret-0123456789,,cam,", "BR-SPARE,third-secret-0123456789,,cam,",
        ])
        for (device, owner) in [("BR-ALICE", "alice"), ("BR-BOB", "bob")] {
            let (status, body) = try fixture.apiCall("POST", "/devices/\(device)/transfer", token: fixture.admin, json: #"{"to":"\#(owner)"}"#)
            #expect(status == 200, "transfer \(device): \(body)")
        }
        let csr = try fixture.csr("br-alice", subject: "/serialNumber=BR-ALICE")
        let pem = try fixture.acceptCertificate(try fixture.enroll(csr: csr, user: "BR-ALICE:\(secret)"), as: "br-alice")
        let device = GatewayTests.Enrolled(id: "BR-ALICE", certificate: pem, key: fixture.directory.file("br-alice.key"))
        let held = try GatewayTests.HeldConnection(fixture, device, name: "browser")
        defer { held.stop() }
        #expect(held.proveConnected("BR-ALICE"))

        // What the API says before the browser changes anything: the overview must say the same.
        var byState: [String: Int] = [:]
        let (status, listing) = try fixture.apiCall("GET", "/devices?limit=1000", token: fixture.admin)
        #expect(status == 200)
        for item in listing["devices"] as? [[String: Any]] ?? [] { byState[item["state"] as? String ?? "?", default: 0] += 1 }
        #expect(byState["active"] == 1 && byState["allowed"] == 2, "\(byState)")

        let screenshots = Self.repository.appendingPathComponent("console-screenshots").path
        try FileManager.default.createDirectory(atPath: screenshots, withIntermediateDirectories: true)
        let base = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        let script = Self.repository.appendingPathComponent("Tests/FleetwardCLITests/Fixtures/console_browser.py").path
        let run = try python.run([script, base, operatorToken, alice, "BR-ALICE", "BR-BOB", screenshots], timeout: 360)
        try #require(run.succeeded, "the browser run failed:\n\(run.stderr.suffix(4000))\n\(run.stdout.suffix(2000))")
        let seen = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")

        // Sign-in: a wrong token is refused on the page; the right one opens the overview, and
        // the session cookie is out of the page's scripts' reach (HttpOnly).
        #expect((seen["badTokenError"] as? String)?.contains("not valid") == true, "\(seen)")
        #expect((seen["overviewTitle"] as? String)?.hasPrefix("Fleet overview") == true, "\(seen)")
        #expect((seen["cookieVisibleToScript"] as? String)?.contains("fleetward_session") == false)

        // The overview's numbers are the API's.
        let overview = seen["overview"] as? [String: Int] ?? [:]
        for state in ["allowed", "pending", "active", "suspended", "revoked", "stolen"] {
            #expect(overview[state] == byState[state, default: 0], "\(state): console \(String(describing: overview[state])), API \(byState)")
        }
        #expect(seen["totalDevices"] as? Int == 3)
        #expect(seen["liveConnections"] as? Int == 1)
        #expect(Set(seen["devicesListed"] as? [String] ?? []) == ["BR-ALICE", "BR-BOB", "BR-SPARE"])

        // Hostile metadata is text: no script element, nothing ran.
        #expect((seen["metadataText"] as? String)?.contains("<script>window.fleetwardPwned=true</script>") == true, "\(seen)")
        #expect(seen["scriptsInMetadata"] as? Int == 0)
        #expect(seen["pwned"] as? Bool == false)

        // Revoked from its page (after a confirmation): the live gateway connection is cut.
        #expect(seen["liveBefore"] as? Int == 1)
        #expect((seen["confirmText"] as? String)?.contains("permanent") == true, "\(seen)")
        #expect(seen["stateAfter"] as? String == "revoked")
        #expect(seen["liveAfter"] as? Int == 0)
        let closed = held.waitForClose(seconds: 5)
        #expect(closed != nil, "the held gateway connection is still open after the revoke")
        if let closed, let revokedAt = seen["revokedAt"] as? Double {
            #expect(closed.timeIntervalSince1970 - revokedAt < 2, "closed \(closed.timeIntervalSince1970 - revokedAt) s after the click")
        }
        #expect(try fixture.state("BR-ALICE") == "revoked")
        #expect((seen["auditVerification"] as? String)?.contains("verifies") == true, "\(seen)")

        // Signed out, the console asks to sign in again.
        #expect((seen["afterSignOutURL"] as? String)?.hasSuffix("/console/sign-in") == true, "\(seen)")

        // An owner sees only their devices; another owner's is "not found", and they may not list it.
        #expect((seen["ownerLandedOn"] as? String)?.hasSuffix("/console/devices") == true, "\(seen)")
        #expect(seen["ownerDevices"] as? [String] == ["BR-ALICE"], "\(seen)")
        #expect((seen["otherDeviceTitle"] as? String)?.hasPrefix("404") == true, "\(seen)")
        #expect((seen["otherDeviceError"] as? String)?.contains("no device BR-BOB") == true, "\(seen)")
        #expect((seen["ownerFilterError"] as? String)?.contains("only their own") == true, "\(seen)")

        // No script error and no CSP violation in the browser's console.
        #expect((seen["consoleErrors"] as? [String] ?? ["?"]).isEmpty, "\(seen["consoleErrors"] ?? "")")
        for name in ["overview", "devices", "device", "device-revoked", "owner-devices"] {
            #expect(FileManager.default.fileExists(atPath: "\(screenshots)/\(name).png"), "no screenshot \(name)")
        }
    }
}
