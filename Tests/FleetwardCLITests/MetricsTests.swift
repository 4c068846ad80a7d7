import FleetwardTestSupport
import Foundation
import Testing

/// `GET /metrics` of a real `fleetward serve`, read by Prometheus' own text parser
/// (`prometheus_client.parser` from PyPI): counters move when a device enrolls, when an
/// enrollment is refused and when a handshake is refused; only the right roles may scrape.
@Suite(.tags(.slow)) struct MetricsTests {
    /// One sample: name, labels, value.
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Parses an exposition with `prometheus_client.parser.text_string_to_metric_families`
    /// (which throws on anything malformed) and returns every sample.
    static func parse(_ text: String, in directory: TemporaryDirectory) throws -> [Sample] {
        let python = try Tool("python3")
        try #require(
            try python.run(["-c", "import prometheus_client"]).succeeded,
            "prometheus-client is not installed: scripts/test.sh installs it (python3 -m pip install prometheus-client)")
        try directory.write("scrape.txt", text)
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = []
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                for s in family.samples:
                    out.append([s.name, s.labels, s.value])
            print(json.dumps(out))
            """
        let result = try python.run(["-c", script, directory.file("scrape.txt")])
        try #require(result.succeeded, "the Prometheus parser refused the scrape: \(result.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[Any]])
        return rows.compactMap { row in
            guard row.count == 3, let name = row[0] as? String, let labels = row[1] as? [String: String],
                let value = row[2] as? Double ?? (row[2] as? Int).map(Double.init)
            else { return nil }
            return Sample(name: name, labels: labels, value: value)
        }
    }

    static func value(_ samples: [Sample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }?.value
    }

    /// `curl /metrics` with `token`: the status and body.
    static func scrape(_ fixture: ESTFixture, token: String?) throws -> (status: Int, body: String, contentType: String) {
        let base = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        var arguments = ["-s", "-S", "--max-time", "20", "-D", fixture.directory.file("metrics-headers.txt"), "-w", "\n%{http_code}"]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        let result = try fixture.curl.run(arguments + [base + "/metrics"], timeout: 30)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let headers = (try? fixture.directory.read("metrics-headers.txt")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let contentType = headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-type:") }.map(String.init) ?? ""
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"), contentType)
    }

    @Test func countersMoveWhenADeviceEnrollsAndWhenOneIsRefused() throws {
        let fixture = try ESTFixture()
        let created = try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "metrics"])
        try #require(created.succeeded, "\(created)")
        let scraper = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        let before = try Self.scrape(fixture, token: scraper)
        #expect(before.status == 200, "\(before.body)")
        #expect(before.contentType.lowercased().contains("text/plain; version=0.0.4"), "\(before.contentType)")
        let start = try Self.parse(before.body, in: fixture.directory)
        let issued = ["flow": "enroll", "credential": "password", "result": "issued"]
        let unauthenticated = ["flow": "enroll", "credential": "password", "result": "unauthenticated"]
        let notActive = ["listener": "gateway", "result": "refused", "reason": "not_active"]
        let admitted = ["listener": "gateway", "result": "admitted"]
        #expect(Self.value(start, "fleetward_enrollments_total", issued) == 0)
        #expect(Self.value(start, "fleetward_devices", ["state": "active"]) == 0)
        // Every name is Fleetward's; no label names a device, serial or owner.
        #expect(start.allSatisfy { $0.name.hasPrefix("fleetward_") }, "\(Set(start.map(\.name)).filter { !$0.hasPrefix("fleetward_") })")
        #expect(start.allSatisfy { Set($0.labels.keys).isDisjoint(with: ["device", "serial", "owner", "id"]) })

        // A wrong secret is refused, then the right one enrolls, and the device connects.
        try fixture.allow(["MX-1,0123456789abcdef0123,,cam,"])
        let csr = try fixture.csr("mx1", subject: "/serialNumber=MX-1")
        #expect(try fixture.enroll(csr: csr, user: "MX-1:wrong-secret-0000000000").status == 401)
        let pem = try fixture.acceptCertificate(try fixture.enroll(csr: csr, user: "MX-1:0123456789abcdef0123"), as: "mx1")
        let connected = try GatewayTests.whoami(fixture, certificate: pem, key: fixture.directory.file("mx1.key"))
        #expect(connected.exit == 0 && connected.body.contains("MX-1"), "\(connected)")
        // Suspended, its next handshake is refused.
        #expect(try fixture.apiCall("POST", "/devices/MX-1/suspend", token: fixture.admin).0 == 200)
        #expect(
            try eventually(timeout: 5) {
                try GatewayTests.whoami(fixture, certificate: pem, key: fixture.directory.file("mx1.key")).exit != 0
            })

        let after = try Self.parse(try Self.scrape(fixture, token: scraper).body, in: fixture.directory)
        #expect(Self.value(after, "fleetward_enrollments_total", issued) == 1)
        #expect(Self.value(after, "fleetward_enrollments_total", unauthenticated) == 1)
        #expect(Self.value(after, "fleetward_device_handshakes_total", admitted).map { $0 >= 1 } == true)
        #expect(Self.value(after, "fleetward_device_handshakes_total", notActive).map { $0 >= 1 } == true)
        #expect(Self.value(after, "fleetward_devices", ["state": "suspended"]) == 1)
        #expect(Self.value(after, "fleetward_devices", ["state": "allowed"]) == 0)
        #expect(Self.value(after, "fleetward_certificates_expiring", ["profile": "device", "within": "7d"]) == 0)
        // Registered, enrolled (certificate recorded), suspended: the audit log grew.
        let audit = try #require(Self.value(after, "fleetward_audit_entries_total"))
        #expect(audit > (Self.value(start, "fleetward_audit_entries_total") ?? 0))
        #expect(Self.value(after, "fleetward_registry_transaction_seconds_count").map { $0 >= 2 } == true)
    }

    @Test func onlyTheMetricsOperatorAndAdminRolesMayScrapeAndAMetricsTokenReadsNothingElse() throws {
        let fixture = try ESTFixture()
        func token(_ arguments: [String]) throws -> String {
            let result = try fixture.cli.run(["token", "create", "--data", fixture.data] + arguments)
            try #require(result.succeeded, "\(result)")
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let scraper = try token(["--role", "metrics"])
        #expect(try Self.scrape(fixture, token: nil).status == 401)
        #expect(try Self.scrape(fixture, token: "fwt_0123456789abcdef_forged").status == 401)
        #expect(try Self.scrape(fixture, token: try token(["--role", "owner", "--owner", "alice"])).status == 403)
        #expect(try Self.scrape(fixture, token: try token(["--role", "manufacturer"])).status == 403)
        #expect(try Self.scrape(fixture, token: try token(["--role", "operator"])).status == 200)
        #expect(try Self.scrape(fixture, token: fixture.admin).status == 200)
        #expect(try Self.scrape(fixture, token: scraper).status == 200)
        // The scraper's token opens nothing of the API.
        for path in ["/devices", "/audit", "/tokens", "/security-events"] {
            #expect(try fixture.apiCall("GET", path, token: scraper).0 == 403, "\(path)")
        }
        #expect(try fixture.apiCall("POST", "/devices/X-1/suspend", token: scraper).0 == 403)
        // The token list names the role.
        let listed = try fixture.cli.run(["token", "list", "--data", fixture.data])
        #expect(listed.stdout.contains("\tmetrics\t"), "\(listed.stdout)")
        // An unknown role is one clear line.
        fixture.cli.expectOneLineError(
            try fixture.cli.run(["token", "create", "--data", fixture.data, "--role", "scraper"]), containing: "use admin, manufacturer, operator, owner or metrics")
    }

    @Test func withMetricsAuthNoneAnyoneOnTheListenerMayScrape() throws {
        let fixture = try ESTFixture(serveArguments: ["--metrics-auth", "none"])
        let open = try Self.scrape(fixture, token: nil)
        #expect(open.status == 200)
        #expect(try Self.parse(open.body, in: fixture.directory).contains { $0.name == "fleetward_devices" })
        // The API itself still needs its token.
        #expect(try fixture.apiCall("GET", "/devices", token: "").0 == 401)
    }
    /// The README's scrape, run by bash as written (the default data directory and port become
    /// this server's): it makes a metrics token and reads the metrics with it.
    @Test func theREADMEsScrapeRunsAsWritten() throws {
        let fixture = try ESTFixture()
        let work = fixture.directory.file("readme")
        try FileManager.default.createDirectory(atPath: work + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: work + "/fleetward-data", withDestinationPath: fixture.data)
        try FileManager.default.createSymbolicLink(atPath: work + "/bin/fleetward", withDestinationPath: try FleetwardBinary.tool().executable)
        let base = fixture.api.replacingOccurrences(of: "/api/v1", with: "")
        let block = try ReadmeExamplesTests.block(containing: "--role metrics", "/metrics")
            .replacingOccurrences(of: "http://127.0.0.1:8080", with: base)
        let result = try Tool("bash").run(
            ["-euo", "pipefail", "-c", block],
            environment: [
                "PATH": work + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"),
                "FLEETWARD_PASSPHRASE": CLI.passphrase,
            ], currentDirectory: work, timeout: 60)
        #expect(result.succeeded, "\(result)")
        let samples = try Self.parse(result.stdout, in: fixture.directory)
        #expect(Self.value(samples, "fleetward_devices", ["state": "active"]) == 0, "\(result.stdout.prefix(400))")
        #expect(samples.contains { $0.name == "fleetward_enrollments_total" })
    }
}
