import FleetwardTestSupport
import Foundation
import Testing

/// `fleetward serve` brings up the management API; checked with curl, a client nobody here wrote.
@Suite(.serialized, .tags(.slow)) struct ServeCommandTests {
    let cli: CLI
    let curl: Tool
    let directory: TemporaryDirectory
    let data: String

    init() throws {
        cli = try CLI()
        curl = try Tool("curl")
        directory = try TemporaryDirectory(prefix: "fleetward-serve")
        data = directory.file("data")
        let result = try cli.run(["init", "--data", data, "--kdf-iterations", "10000"])
        #expect(result.succeeded, "\(result)")
    }

    func token(_ role: String, owner: String? = nil) throws -> String {
        let result = try cli.run(["token", "create", "--data", data, "--role", role] + (owner.map { ["--owner", $0] } ?? []))
        #expect(result.succeeded, "\(result)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func serve(_ extra: [String] = []) throws -> RunningServer {
        try RunningServer(
            executable: cli.fleetward.executable,
            arguments: [
                "serve", "--data", data, "--api-listen", "127.0.0.1:0", "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off",
            ] + extra,
            environment: ["FLEETWARD_PASSPHRASE": CLI.passphrase], logDirectory: directory.path,
            expectedListeners: 3)
    }

    /// `curl -s -w '\n%{http_code}'`: the body and the status.
    func request(_ method: String, _ url: String, token: String?, json: String? = nil, file: String? = nil, type: String? = nil)
        throws -> (status: Int, body: String)
    {
        var arguments = ["-s", "-S", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        if let json { arguments += ["-H", "Content-Type: application/json", "--data-binary", json] }
        if let file { arguments += ["-H", "Content-Type: \(type ?? "application/json")", "--data-binary", "@" + file] }
        let result = try curl.run(arguments + [url], timeout: 30)
        #expect(result.succeeded, "curl failed: \(result)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test func servesTheAPIAndStopsCleanlyOnSIGTERM() throws {
        defer { directory.remove() }
        let admin = try token("admin")
        let manufacturer = try token("manufacturer")
        let server = try serve()
        let base = try #require(server.listeners["management API"], "no listener line in: \(server.stdout)")
        #expect(base.hasPrefix("http://127.0.0.1:"))

        #expect(try request("GET", base + "/api/v1/openapi.json", token: nil).status == 200)
        let unauthorised = try request("GET", base + "/api/v1/devices", token: nil)
        #expect(unauthorised.status == 401 && unauthorised.body.contains("\"error\""))

        let created = try request(
            "POST", base + "/api/v1/devices", token: manufacturer, json: #"{"id":"SN-1","model":"cam","secret":"0123456789abcdef0123"}"#)
        #expect(created.status == 201, "\(created)")
        #expect(!created.body.contains("0123456789abcdef0123"))
        #expect(try request("POST", base + "/api/v1/devices/SN-1/revoke", token: manufacturer).status == 403)

        // A certificate issued at the console is recorded against the registered device.
        try cli.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", directory.file("sn1.key"),
            "-subj", "/", "-out", directory.file("sn1.csr"),
        ])
        let issued = try cli.run([
            "cert", "issue", "--data", data, "--profile", "device", "--id", "SN-1", "--csr", directory.file("sn1.csr"), "--out",
            directory.file("sn1.pem"),
        ])
        #expect(issued.succeeded, "\(issued)")
        let serial = try cli.openssl(["x509", "-in", directory.file("sn1.pem"), "-noout", "-serial"]).stdout
            .replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines).lowercased()

        // The console and the server share the data directory: a change at the console shows at once.
        #expect(try cli.run(["devices", "revoke", "--data", data, "SN-1"]).succeeded)
        let shown = try request("GET", base + "/api/v1/devices/SN-1", token: admin)
        #expect(shown.status == 200 && shown.body.contains("\"state\":\"revoked\""), "\(shown)")
        let certificates = try request("GET", base + "/api/v1/devices/SN-1/certificates", token: manufacturer)
        #expect(certificates.body.contains("\"serial\":\"\(serial)\""), "\(certificates) (openssl says \(serial))")
        #expect(certificates.body.contains("\"revocationReason\":5"), "revoking a device revokes its certificates: \(certificates)")

        // An oversized body is refused without reading it all.
        try directory.write("big.json", "{\"id\":\"" + String(repeating: "A", count: 200_000) + "\"}")
        #expect(try request("POST", base + "/api/v1/devices", token: admin, file: directory.file("big.json")).status == 413)

        // Bulk import over HTTP.
        try directory.write(
            "allow.csv", "id,secret,key_sha256,model,metadata\nSN-2,0123456789abcdef0124,,cam,\nSN-3,0123456789abcdef0125,,cam,\n")
        let imported = try request(
            "POST", base + "/api/v1/devices/import", token: manufacturer, file: directory.file("allow.csv"), type: "text/csv")
        #expect(imported.status == 200 && imported.body.contains("\"inserted\":2"), "\(imported)")

        let status = server.stop()
        #expect(status == 0, "serve did not exit cleanly on SIGTERM: \(String(describing: status))\n\(server.stderr)")
        // Nothing secret reached the log.
        #expect(!server.stderr.contains(admin) && !server.stderr.contains("0123456789abcdef0123"))
        #expect(try cli.run(["audit", "verify", "--data", data]).succeeded)
    }

    @Test func aBadListenAddressOrABusyPortIsOneClearLine() throws {
        defer { directory.remove() }
        cli.expectOneLineError(
            try cli.run(["serve", "--data", data, "--api-listen", "nonsense"]), containing: "nonsense")
        let first = try serve()
        defer { first.stop() }
        let address = try #require(first.listeners["management API"]).replacingOccurrences(of: "http://", with: "")
        let second = try cli.run([
            "serve", "--data", data, "--api-listen", address, "--est-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--mqtt-listen", "off",
        ])
        #expect(second.status != 0)
        #expect(second.stderr.split(separator: "\n").last?.hasPrefix("fleetward: error: ") == true, "\(second.stderr)")
        #expect(second.stderr.contains("in use"), "\(second.stderr)")
    }
}
