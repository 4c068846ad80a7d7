import FleetwardTestSupport
import Foundation
import Testing

/// The console's guards, with curl against a real `fleetward serve`: a change without the
/// session's CSRF token, without a session, from a role that may not, with a body too large or
/// of the wrong type is refused and changes nothing; a revoked API token or signing out ends
/// the session; every page carries the Content-Security-Policy and no inline script.
@Suite(.tags(.slow)) struct ConsoleTests {
    /// curl with a cookie jar of its own.
    struct Browser {
        let fixture: ESTFixture
        let jar: String
        var base: String { fixture.api.replacingOccurrences(of: "/api/v1", with: "") }

        init(_ fixture: ESTFixture, name: String) {
            self.fixture = fixture
            jar = fixture.directory.file("jar-\(name)")
        }

        /// `(status, headers, body)`.
        func request(_ path: String, form: [String]? = nil, extra: [String] = [], cookies: Bool = true) throws -> (Int, String, String) {
            let headers = fixture.directory.file("console-headers")
            var arguments = ["-s", "-S", "--max-time", "20", "-D", headers, "-o", fixture.directory.file("console-body"), "-w", "%{http_code}"]
            if cookies { arguments += ["-b", jar, "-c", jar] }
            for field in form ?? [] { arguments += ["--data-urlencode", field] }
            let result = try fixture.curl.run(arguments + extra + [base + path], timeout: 30)
            let head = (try? fixture.directory.read("console-headers")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let body = (try? fixture.directory.read("console-body")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            return (Int(result.stdout) ?? 0, head, body)
        }

        @discardableResult
        func signIn(_ token: String) throws -> (Int, String, String) {
            let (_, _, page) = try request("/console/sign-in")
            return try request("/console/sign-in", form: ["nonce=\(Self.value(of: "nonce", in: page) ?? "")", "token=\(token)"])
        }

        static func value(of name: String, in page: String) -> String? {
            guard let range = page.range(of: "name=\"\(name)\" value=\"") else { return nil }
            return String(page[range.upperBound...].prefix { $0 != "\"" })
        }

        /// The CSRF token of the session, read from a page's sign-out form.
        func csrf() throws -> String {
            try #require(Self.value(of: "csrf", in: try request("/console/devices").2))
        }
    }

    static func token(_ fixture: ESTFixture, _ arguments: [String]) throws -> String {
        let result = try fixture.cli.run(["token", "create", "--data", fixture.data] + arguments)
        try #require(result.succeeded, "\(result)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func changesNeedTheSessionsCSRFTokenAndARoleThatMayAndBadInputChangesNothing() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["CS-1,factory-secret-0123456789,,cam,"])
        let browser = Browser(fixture, name: "operator")
        let (status, headers, _) = try browser.signIn(try Self.token(fixture, ["--role", "operator"]))
        #expect(status == 303, "\(headers)")
        let cookie = try #require(headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("set-cookie: fleetward_session=") })
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/console"), "\(cookie)")
        let csrf = try browser.csrf()
        let action = "/console/devices/CS-1/action"

        // No CSRF token, a forged one, no session, the wrong type, too large: refused, unchanged.
        #expect(try browser.request(action, form: ["action=suspend"]).0 == 403)
        #expect(try browser.request(action, form: ["action=revoke", "csrf=\(csrf.dropLast())x"]).0 == 403)
        #expect(try browser.request(action, form: ["action=revoke", "csrf=\(csrf)"], cookies: false).0 == 401)
        #expect(
            try browser.request(action, extra: ["-H", "Content-Type: application/json", "--data", #"{"action":"revoke","csrf":"\#(csrf)"}"#]).0
                == 415)
        #expect(try browser.request(action, form: ["action=revoke", "csrf=\(csrf)", "pad=\(String(repeating: "x", count: 9000))"]).0 == 413)
        #expect(try browser.request(action, form: ["action=launch", "csrf=\(csrf)"]).0 == 400)
        #expect(try fixture.state("CS-1") == "allowed")

        // A manufacturer may read but not revoke, whatever the console is asked.
        let maker = Browser(fixture, name: "manufacturer")
        #expect(try maker.signIn(try Self.token(fixture, ["--role", "manufacturer"])).0 == 303)
        #expect(try maker.request(action, form: ["action=revoke", "csrf=\(try maker.csrf())"]).0 == 403)
        #expect(try !maker.request("/console/devices/CS-1").2.contains("action-revoke"))
        #expect(try fixture.state("CS-1") == "allowed")

        // With everything right, the change is made and audited under the operator's token.
        let done = try browser.request(action, form: ["action=suspend", "csrf=\(csrf)"])
        #expect(done.0 == 400 || done.0 == 409, "an allowed device cannot be suspended: \(done.2)")
        let revoked = try browser.request(action, form: ["action=revoke", "csrf=\(csrf)"])
        #expect(revoked.0 == 303, "\(revoked.2)")
        #expect(try fixture.state("CS-1") == "revoked")
        let (auditStatus, audit) = try fixture.apiCall("GET", "/audit?limit=1000", token: fixture.admin)
        #expect(auditStatus == 200)
        let last = (audit["entries"] as? [[String: Any]])?.last
        #expect(last?["action"] as? String == "device.revoke" && (last?["actor"] as? String)?.hasPrefix("operator:") == true, "\(String(describing: last))")
    }

    @Test func signingOutOrRevokingTheTokenEndsTheSessionAndAMetricsTokenCannotSignIn() throws {
        let fixture = try ESTFixture()
        let operatorToken = try Self.token(fixture, ["--role", "operator"])
        let browser = Browser(fixture, name: "a")
        #expect(try browser.request("/console/devices").0 == 303)
        #expect(try browser.signIn(operatorToken).0 == 303)
        #expect(try browser.request("/console/devices").0 == 200)

        // A second session, then the token behind both is revoked: both end at their next request.
        let second = Browser(fixture, name: "b")
        #expect(try second.signIn(operatorToken).0 == 303)
        let id = String(operatorToken.split(separator: "_")[1])
        #expect(try fixture.cli.run(["token", "revoke", "--data", fixture.data, id]).succeeded)
        let after = try second.request("/console/devices")
        #expect(after.0 == 303 && after.1.contains("Location: /console/sign-in"), "\(after.1)")

        // Signing out ends the session on the server: the old cookie opens nothing.
        let third = Browser(fixture, name: "c")
        #expect(try third.signIn(try Self.token(fixture, ["--role", "admin"])).0 == 303)
        let saved = try String(contentsOfFile: third.jar, encoding: .utf8)
        #expect(try third.request("/console/sign-out", form: ["csrf=\(try third.csrf())"]).0 == 303)
        try saved.write(toFile: third.jar, atomically: true, encoding: .utf8)
        #expect(try third.request("/console/devices").0 == 303)

        // A scraper's token, a wrong token, a sign-in without its form nonce: no session.
        let scraper = Browser(fixture, name: "d")
        let refused = try scraper.signIn(try Self.token(fixture, ["--role", "metrics"]))
        #expect(refused.0 == 401 && !refused.1.contains("fleetward_session="))
        #expect(try scraper.signIn("fwt_0123456789abcdef_guess").0 == 401)
        #expect(try scraper.request("/console/sign-in", form: ["token=\(operatorToken)"], cookies: false).0 == 403)
    }

    @Test func everyPageCarriesTheContentSecurityPolicyAndNoInlineScript() throws {
        let fixture = try ESTFixture()
        try fixture.allow(["CP-1,factory-secret-0123456789,,cam,note=<b>bold</b>"])
        let browser = Browser(fixture, name: "admin")
        #expect(try browser.signIn(fixture.admin).0 == 303)
        for path in [
            "/console/sign-in", "/console/", "/console/devices", "/console/devices?state=allowed", "/console/devices/CP-1",
            "/console/devices/CP-1/confirm?action=revoke", "/console/groups", "/console/releases", "/console/audit", "/console/audit?verify=1",
            "/console/security-events", "/console/devices/NOPE-1",
        ] {
            let (status, headers, body) = try browser.request(path)
            #expect([200, 404].contains(status), "\(path): \(status)")
            #expect(headers.contains("Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'"), "\(path)")
            #expect(headers.contains("X-Frame-Options: DENY") && headers.contains("Cache-Control: no-store"), "\(path)")
            #expect(!body.contains("<script>") && !body.contains(" style=") && !body.contains(" onclick="), "\(path)")
            #expect(!body.contains("<b>bold</b>"), "\(path) rendered metadata as HTML")
        }
        // The stylesheet and script are served, compiled in.
        #expect(try browser.request("/console/static/console.css").1.contains("Content-Type: text/css"))
        #expect(try browser.request("/console/static/console.js").1.contains("Content-Type: text/javascript"))
        // A page of a million-device fleet is a page: 50 rows and a link to the next.
        let rows = (1...120).map { String(format: "PG-%04d,factory-secret-0123456789,,cam,", $0) }
        try fixture.allow(rows)
        let first = try browser.request("/console/devices?model=cam").2
        #expect(first.components(separatedBy: "<tr><td><a href=").count - 1 == 50)
        #expect(first.contains("id=\"next-page\" href=\"/console/devices?after=PG-0049&amp;model=cam\""), "\(first.suffix(400))")
    }
}
