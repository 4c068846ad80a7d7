public import FleetwardAuthority
import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The web console at `/console/`, on the management listener: server-rendered HTML pages over
/// the same use cases and access policy as the API.
///
/// Sign-in exchanges an API token for a session (``ConsoleSessions``); every page checks the
/// session and the token behind it, every change is a POST carrying the session's CSRF token,
/// and every answer carries a strict Content-Security-Policy. A role sees and does exactly what
/// it may through the API: the routes call ``AccessPolicy`` and ``Registrar``, which decide.
public struct Console: Sendable {
    let registrar: Registrar
    let hasher: SecretHasher
    let gateway: Gateway
    let metrics: FleetMetrics
    let updates: UpdateCatalog?
    let sessions: ConsoleSessions
    let limiter: AttemptLimiter
    let now: @Sendable () -> Date

    public init(
        registrar: Registrar, hasher: SecretHasher, gateway: Gateway, metrics: FleetMetrics, updates: UpdateCatalog?,
        limiter: AttemptLimiter, sessionLifetime: TimeInterval = 30 * 60, now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.registrar = registrar
        self.hasher = hasher
        self.gateway = gateway
        self.metrics = metrics
        self.updates = updates
        self.limiter = limiter
        self.sessions = ConsoleSessions(lifetime: sessionLifetime)
        self.now = now
    }

    var store: any RegistryStore { registrar.store }

    static let cookie = "fleetward_session"
    static let signInCookie = "fleetward_signin"
    /// The largest form accepted.
    static let formLimit = 8 * 1024
    static let pageSize = 50

    static let securityHeaders: HTTPFields = [
        .contentSecurityPolicy:
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        .xContentTypeOptions: "nosniff",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        .cacheControl: "no-store",
    ]

    // MARK: Routes

    func add(to router: Router<APIRequestContext>) {
        router.get("console") { request, context in await page(request, context) { try await overview($0) } }
        router.get("console/static/console.css") { _, _ in
            Self.asset(PackageResources.console_css, type: "text/css; charset=utf-8")
        }
        router.get("console/static/console.js") { _, _ in
            Self.asset(PackageResources.console_js, type: "text/javascript; charset=utf-8")
        }
        router.get("console/sign-in") { request, _ in signInPage(request, message: nil, status: .ok) }
        router.post("console/sign-in") { request, context in await signIn(request, context) }
        router.post("console/sign-out") { request, context in
            await change(request, context) { session, _ in
                sessions.end(Self.cookieValue(request, Self.cookie))
                var response = Self.redirect("/console/sign-in")
                response.headers[.setCookie] = "\(Self.cookie)=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"
                _ = session
                return response
            }
        }
        router.get("console/devices") { request, context in await page(request, context) { try await devices($0, request) } }
        router.get("console/devices/{id}") { request, context in
            await page(request, context) { try await device($0, try Self.deviceID(context), request) }
        }
        router.get("console/devices/{id}/confirm") { request, context in
            await page(request, context) { try await confirm($0, try Self.deviceID(context), request) }
        }
        router.post("console/devices/{id}/action") { request, context in
            await change(request, context) { session, form in try await act(session, try Self.deviceID(context), form) }
        }
        router.get("console/groups") { request, context in await page(request, context) { try await groups($0) } }
        router.get("console/releases") { request, context in await page(request, context) { try await releases($0) } }
        router.get("console/audit") { request, context in await page(request, context) { try await audit($0, request) } }
        router.get("console/security-events") { request, context in await page(request, context) { try await securityEvents($0, request) } }
    }

    // MARK: Plumbing

    static func asset(_ bytes: [UInt8], type: String) -> Response {
        var headers = securityHeaders
        headers[.contentType] = type
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = securityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func redirect(_ location: String) -> Response {
        var headers = securityHeaders
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    static func cookieValue(_ request: Request, _ name: String) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0] == name { return String(parts[1]) }
            }
        }
        return nil
    }

    static func deviceID(_ context: APIRequestContext) throws -> DeviceID {
        let raw = try context.parameters.require("id")
        guard let decoded = raw.removingPercentEncoding else { throw HTTPProblem(.badRequest, "the device ID is not valid percent-encoding") }
        return try DeviceID(decoded)
    }

    /// The session of a request whose API token is still valid; nil otherwise (and the session
    /// of a revoked or expired token is ended).
    func currentSession(_ request: Request) async throws -> ConsoleSessions.Session? {
        let secret = Self.cookieValue(request, Self.cookie)
        guard let session = sessions.session(secret, at: now()) else { return nil }
        guard let record = try await store.apiToken(id: session.tokenID), record.expiresAt.map({ $0 > now() }) ?? true else {
            sessions.end(secret)
            return nil
        }
        return session
    }

    /// A GET page: signed in, or sent to sign in; errors as an HTML page with their status.
    func page(_ request: Request, _ context: APIRequestContext, _ body: (ConsoleSessions.Session) async throws -> Response) async
        -> Response
    {
        do {
            guard let session = try await currentSession(request) else { return Self.redirect("/console/sign-in") }
            return try await body(session)
        } catch {
            return errorPage(error, request, context)
        }
    }

    /// A POST: signed in, a form under the size limit, and the session's CSRF token, or it is
    /// refused (403) and changes nothing.
    func change(
        _ request: Request, _ context: APIRequestContext,
        _ body: (ConsoleSessions.Session, [String: String]) async throws -> Response
    ) async -> Response {
        do {
            guard let session = try await currentSession(request) else {
                throw HTTPProblem(.unauthorized, "your console session has ended; sign in again")
            }
            let form = try await Self.readForm(request)
            guard ConsoleSessions.matches(form["csrf"], session.csrf) else {
                throw HTTPProblem(.forbidden, "the form's CSRF token is missing or wrong; nothing was changed")
            }
            return try await body(session, form)
        } catch {
            return errorPage(error, request, context)
        }
    }

    /// An `application/x-www-form-urlencoded` body of at most ``formLimit`` bytes.
    static func readForm(_ request: Request) async throws -> [String: String] {
        guard MediaType.essence(request.headers[.contentType]) == "application/x-www-form-urlencoded" else {
            throw HTTPProblem(.unsupportedMediaType, "send the form as application/x-www-form-urlencoded")
        }
        if let length = request.headers[.contentLength].flatMap(Int.init), length > formLimit {
            throw HTTPProblem(.contentTooLarge, "the form is \(length) bytes; the limit is \(formLimit)")
        }
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: formLimit)
        } catch {
            throw HTTPProblem(.contentTooLarge, "the form is over \(formLimit) bytes")
        }
        var form: [String: String] = [:]
        for pair in String(buffer: buffer).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = parts[0].replacingOccurrences(of: "+", with: " ").removingPercentEncoding else { continue }
            let value = parts.count > 1 ? parts[1].replacingOccurrences(of: "+", with: " ").removingPercentEncoding : ""
            if form[key] != nil { throw HTTPProblem(.badRequest, "the form names '\(key.prefix(32))' twice") }
            form[key] = value ?? ""
        }
        return form
    }

    func errorPage(_ error: any Error, _ request: Request, _ context: APIRequestContext) -> Response {
        let problem = HTTPProblem.from(error, path: request.uri.path, logger: context.logger)
        let body =
            "<p class=\"error\" id=\"error\">\(ConsoleHTML.escape(problem.message))</p><p><a href=\"/console/\">Back to the console</a></p>"
        return Self.html(ConsoleHTML.page(title: "\(problem.status.code) \(problem.status.reasonPhrase)", actor: nil, csrf: nil, body), status: problem.status)
    }

    // MARK: Sign-in

    func signInPage(_ request: Request, message: String?, status: HTTPResponse.Status) -> Response {
        // Login CSRF: the form carries a value that must match a cookie only this origin can set.
        let nonce = ConsoleSessions.randomToken()
        let body = """
            \(message.map { "<p class=\"error\" id=\"error\">\(ConsoleHTML.escape($0))</p>" } ?? "")
            <form method="post" action="/console/sign-in" class="sign-in">
            <input type="hidden" name="nonce" value="\(nonce)">
            <label for="token">API token</label>
            <input type="password" id="token" name="token" autocomplete="off" required placeholder="fwt_…">
            <button type="submit" id="sign-in">Sign in</button>
            </form>
            <p class="hint">Make one with <code>fleetward token create --role operator</code> (or <code>--role owner --owner NAME</code>).
            It is exchanged for a session of \(Int(sessions.lifetime / 60)) minutes; the browser does not keep it.</p>
            """
        var response = Self.html(ConsoleHTML.page(title: "Sign in", actor: nil, csrf: nil, body), status: status)
        response.headers[.setCookie] = "\(Self.signInCookie)=\(nonce); Path=/console/sign-in; HttpOnly; SameSite=Strict; Max-Age=600"
        return response
    }

    func signIn(_ request: Request, _ context: APIRequestContext) async -> Response {
        do {
            let form = try await Self.readForm(request)
            guard let nonce = Self.cookieValue(request, Self.signInCookie), ConsoleSessions.matches(form["nonce"], nonce) else {
                return signInPage(request, message: "The sign-in form expired; try again.", status: .forbidden)
            }
            let key = "auth:" + AttemptLimiter.addressKey(context.remoteIP)
            if let wait = limiter.retryAfter(key, now: now()) {
                var response = signInPage(request, message: "Too many failed sign-ins from this address; wait \(wait) s.", status: .tooManyRequests)
                response.headers[.retryAfter] = "\(wait)"
                return response
            }
            let token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard let actor = try await BearerAuthenticator.actor(token: token, store: store, hasher: hasher, now: now()),
                actor.role != .metrics
            else {
                limiter.recordFailure(key, now: now())
                return signInPage(request, message: "That token is not valid (unknown, revoked, expired, or a metrics token).", status: .unauthorized)
            }
            let (secret, _) = sessions.create(for: actor, at: now())
            var response = Self.redirect(actor.role == .owner ? "/console/devices" : "/console/")
            response.headers[.setCookie] =
                "\(Self.cookie)=\(secret); Path=/console; HttpOnly; SameSite=Strict; Max-Age=\(Int(sessions.lifetime))"
            context.logger.info("console sign-in", metadata: ["fleetward.actor": "\(actor.role):\(actor.name)"])
            return response
        } catch {
            return errorPage(error, request, context)
        }
    }

    // MARK: Pages

    func overview(_ session: ConsoleSessions.Session) async throws -> Response {
        let actor = session.actor
        guard actor.role != .owner else { return Self.redirect("/console/devices") }
        let time = now()
        let overview = try await registrar.overview(as: actor, at: time)
        let rows = DeviceState.allCases.map {
            (label: $0.rawValue, value: overview.devicesByState[$0, default: 0], colour: ConsoleHTML.stateColours[$0] ?? "#888", id: "count-\($0.rawValue)")
        }
        let totals = metrics.enrollmentTotals
        var expiring = "<table class=\"compact\"><tr><th>profile</th><th>within 7 days</th><th>within 30 days</th></tr>"
        let profiles = Set(overview.expiring.values.flatMap(\.keys)).union(["device"]).sorted()
        for profile in profiles {
            let week = overview.expiring[.sevenDays]?[profile] ?? 0
            let month = overview.expiring[.thirtyDays]?[profile] ?? 0
            expiring +=
                "<tr><td>\(ConsoleHTML.escape(profile))</td><td id=\"expiring-7d-\(ConsoleHTML.escape(profile))\">\(week)</td><td id=\"expiring-30d-\(ConsoleHTML.escape(profile))\">\(month)</td></tr>"
        }
        expiring += "</table>"
        let body = """
            <section class="tiles">
            <div class="tile"><span class="number" id="total-devices">\(overview.totalDevices)</span><span>devices</span></div>
            <div class="tile"><span class="number" id="live-connections">\(gateway.liveConnections)</span><span>live connections</span></div>
            <div class="tile"><span class="number" id="enrollments-issued">\(totals.issued)</span><span>enrolled since start</span></div>
            <div class="tile"><span class="number" id="enrollments-refused">\(totals.refused)</span><span>refused since start</span></div>
            </section>
            <section><h2>Devices by state</h2>\(ConsoleHTML.barChart(rows))</section>
            <section><h2>Enrollments and refusals</h2>\(ConsoleHTML.activityChart(metrics.activity(at: time)))</section>
            <section><h2>Certificates expiring</h2>\(expiring)</section>
            """
        return Self.html(ConsoleHTML.page(title: "Fleet overview", actor: actor, csrf: session.csrf, active: "overview", body))
    }

    func devices(_ session: ConsoleSessions.Session, _ request: Request) async throws -> Response {
        let actor = session.actor
        try AccessPolicy.authorize(.readDevices, actor)
        let query = request.uri.queryParameters
        // An ID typed into the search box goes straight to that device.
        if let wanted = query.get("id")?.trimmingCharacters(in: .whitespaces), !wanted.isEmpty {
            guard let id = try? DeviceID(wanted) else { throw HTTPProblem(.badRequest, "'\(wanted.prefix(64))' is not a device ID") }
            return Self.redirect("/console/devices/" + ConsoleHTML.component(id.rawValue))
        }
        var filter = DeviceFilter()
        if let state = query.get("state"), !state.isEmpty {
            guard let parsed = DeviceState(rawValue: state) else { throw HTTPProblem(.badRequest, "no device state '\(state.prefix(32))'") }
            filter.state = parsed
        }
        if let model = query.get("model"), !model.isEmpty {
            guard model.unicodeScalars.count <= 100 else { throw HTTPProblem(.badRequest, "'model' is at most 100 characters") }
            filter.model = model
        }
        if let owner = query.get("owner"), !owner.isEmpty {
            guard Owner.isValidID(owner) else { throw HTTPProblem(.badRequest, "'owner' is not a valid owner ID") }
            filter.owner = owner
        }
        let cursor = try query.get("after").flatMap { $0.isEmpty ? nil : try DeviceID($0) }
        let scoped = try AccessPolicy.scoped(filter, actor)
        // One page and one more row (is there a next page?): never the whole fleet.
        let found = try await store.devices(matching: scoped, after: cursor, limit: Self.pageSize + 1)
        let shown = found.prefix(Self.pageSize)
        var options = "<option value=\"\">any state</option>"
        for state in DeviceState.allCases {
            options += "<option value=\"\(state.rawValue)\"\(filter.state == state ? " selected" : "")>\(state.rawValue)</option>"
        }
        var body = """
            <form method="get" action="/console/devices" class="filters">
            <select name="state" id="filter-state">\(options)</select>
            <input name="model" id="filter-model" placeholder="model" value="\(ConsoleHTML.escape(filter.model ?? ""))">
            \(actor.role == .owner ? "" : "<input name=\"owner\" id=\"filter-owner\" placeholder=\"owner\" value=\"\(ConsoleHTML.escape(filter.owner ?? ""))\">")
            <button type="submit" id="filter">Filter</button>
            </form>
            <form method="get" action="/console/devices" class="filters"><input name="id" id="search-id" placeholder="device ID">
            <button type="submit" id="search">Go to device</button></form>
            <table id="devices"><tr><th>ID</th><th>state</th><th>model</th><th>owner</th><th>updated</th></tr>
            """
        for device in shown {
            body += """
                <tr><td><a href="/console/devices/\(ConsoleHTML.escape(ConsoleHTML.component(device.id.rawValue)))">\(ConsoleHTML.escape(device.id.rawValue))</a></td>\
                <td><span class="state state-\(device.state.rawValue)">\(device.state.rawValue)</span></td><td>\(ConsoleHTML.escape(device.model))</td>\
                <td>\(ConsoleHTML.escape(device.owner ?? "—"))</td><td>\(ConsoleHTML.date(device.updatedAt))</td></tr>
                """
        }
        body += "</table>"
        if shown.isEmpty { body += "<p id=\"no-devices\">No devices match.</p>" }
        if found.count > Self.pageSize, let last = shown.last {
            var next = "/console/devices?after=" + ConsoleHTML.component(last.id.rawValue)
            if let state = filter.state { next += "&state=" + state.rawValue }
            if let model = filter.model { next += "&model=" + ConsoleHTML.component(model) }
            if let owner = filter.owner, actor.role != .owner { next += "&owner=" + ConsoleHTML.component(owner) }
            body += "<p><a id=\"next-page\" href=\"\(ConsoleHTML.escape(next))\">Next \(Self.pageSize) →</a></p>"
        }
        return Self.html(ConsoleHTML.page(title: "Devices", actor: actor, csrf: session.csrf, active: "devices", body))
    }

    /// The lifecycle actions a role may offer on a device in its state.
    static func actions(for device: Device, actor: Actor) -> [(event: String, label: String)] {
        var actions: [(String, String)] = []
        for event in LifecycleStateMachine.Event.allCases where event != .activate {
            guard (try? AccessPolicy.authorize(.transition(event), actor)) != nil,
                (try? LifecycleStateMachine.next(
                    from: device.state, on: event, by: actor, deviceOwner: device.owner, stateBeforeTheft: device.stateBeforeTheft)) != nil
            else { continue }
            actions.append((event.rawValue, event.rawValue.replacingOccurrences(of: "-", with: " ").capitalized))
        }
        if (try? AccessPolicy.authorize(.transfer, actor)) != nil, device.state != .revoked, device.state != .stolen {
            actions.append(("transfer", "Transfer"))
        }
        return actions
    }

    func device(_ session: ConsoleSessions.Session, _ id: DeviceID, _ request: Request) async throws -> Response {
        let actor = session.actor
        try AccessPolicy.authorize(.readDevices, actor)
        let device = try await registrar.device(id, as: actor)
        let certificates = try await store.certificates(for: device.id)
        let live = gateway.liveConnections(of: device.id)
        var body = "<dl class=\"facts\">"
        body += "<dt>ID</dt><dd id=\"device-id\">\(ConsoleHTML.escape(device.id.rawValue))</dd>"
        body += "<dt>state</dt><dd><span class=\"state state-\(device.state.rawValue)\" id=\"device-state\">\(device.state.rawValue)</span></dd>"
        body += "<dt>model</dt><dd>\(ConsoleHTML.escape(device.model))</dd>"
        body += "<dt>owner</dt><dd id=\"device-owner\">\(ConsoleHTML.escape(device.owner ?? "—"))</dd>"
        body += "<dt>live connections</dt><dd id=\"device-live\">\(live)</dd>"
        body += "<dt>registered</dt><dd>\(ConsoleHTML.date(device.createdAt)) by \(ConsoleHTML.escape(device.registeredBy ?? "—"))</dd>"
        body += "</dl><h2>Metadata</h2><table id=\"metadata\">"
        for (key, value) in device.metadata.sorted(by: { $0.key < $1.key }) {
            body += "<tr><th>\(ConsoleHTML.escape(key))</th><td>\(ConsoleHTML.escape(value))</td></tr>"
        }
        body += "</table>"
        let actions = Self.actions(for: device, actor: actor)
        if !actions.isEmpty {
            body += "<h2>Actions</h2><p class=\"actions\">"
            for action in actions {
                body +=
                    "<a class=\"button\" id=\"action-\(action.event)\" href=\"/console/devices/\(ConsoleHTML.escape(ConsoleHTML.component(device.id.rawValue)))/confirm?action=\(action.event)\">\(action.label)</a> "
            }
            body += "</p>"
        }
        body += "<h2>Certificates</h2><table id=\"certificates\"><tr><th>serial</th><th>profile</th><th>valid until</th><th>status</th></tr>"
        for certificate in certificates {
            let status = certificate.revocation.map { "revoked " + ConsoleHTML.date($0.time) } ?? (certificate.notAfter < now() ? "expired" : "valid")
            body +=
                "<tr><td class=\"mono\">\(ConsoleHTML.escape(certificate.serial))</td><td>\(ConsoleHTML.escape(certificate.profile))</td><td>\(ConsoleHTML.date(certificate.notAfter))</td><td>\(status)</td></tr>"
        }
        body += "</table>"
        if let updates, let releases = try? updates.snapshot().releases, !releases.isEmpty {
            let versions = Array(Set(releases.map(\.manifest.version))).sorted()
            let states = try await registrar.updateStates(of: device.id, versions: versions, as: actor)
            body += "<h2>Updates</h2><table id=\"updates\"><tr><th>release</th><th>state</th></tr>"
            for version in versions {
                body += "<tr><td>\(ConsoleHTML.escape(version))</td><td>\(states[version]?.rawValue ?? "—")</td></tr>"
            }
            body += "</table>"
        }
        if (try? AccessPolicy.authorize(.readAudit, actor)) != nil {
            body += "<h2>Timeline</h2><table id=\"timeline\"><tr><th>#</th><th>time</th><th>action</th><th>by</th></tr>"
            for entry in try await registrar.timeline(of: device.id, as: actor) {
                body +=
                    "<tr><td>\(entry.sequence)</td><td>\(ConsoleHTML.date(Date(timeIntervalSince1970: Double(entry.timeMilliseconds) / 1000)))</td><td>\(ConsoleHTML.escape(entry.action))</td><td>\(ConsoleHTML.escape(entry.actor))</td></tr>"
            }
            body += "</table>"
        }
        return Self.html(ConsoleHTML.page(title: "Device \(device.id.rawValue)", actor: actor, csrf: session.csrf, active: "devices", body))
    }

    func confirm(_ session: ConsoleSessions.Session, _ id: DeviceID, _ request: Request) async throws -> Response {
        let actor = session.actor
        let device = try await registrar.device(id, as: actor)
        let action = request.uri.queryParameters.get("action") ?? ""
        guard let chosen = Self.actions(for: device, actor: actor).first(where: { $0.event == action }) else {
            throw HTTPProblem(.forbidden, "\(action.prefix(32)) is not something you may do to device \(id) in state \(device.state)")
        }
        let consequence: String
        switch action {
        case "revoke": consequence = "Revoking is permanent: its certificates are revoked and its live connections cut."
        case "suspend": consequence = "Its live connections are cut and it cannot connect until resumed."
        case "report-stolen": consequence = "Its certificates are revoked at once; only its owner or an admin can recover it."
        case "transfer": consequence = "Its certificates are revoked; it re-enrolls with a token from its new owner."
        default: consequence = ""
        }
        let target =
            action == "transfer"
            ? "<label for=\"to\">New owner</label><input id=\"to\" name=\"to\" required pattern=\"[A-Za-z0-9._@-]{1,64}\">" : ""
        let body = """
            <form method="post" action="/console/devices/\(ConsoleHTML.escape(ConsoleHTML.component(device.id.rawValue)))/action" class="confirm">
            \(ConsoleHTML.csrfField(session.csrf))
            <input type="hidden" name="action" value="\(ConsoleHTML.escape(action))">
            <p>\(ConsoleHTML.escape(chosen.label)) device <strong>\(ConsoleHTML.escape(device.id.rawValue))</strong> (now \(device.state.rawValue))?
            \(ConsoleHTML.escape(consequence))</p>
            \(target)
            <button type="submit" id="confirm" class="danger">\(ConsoleHTML.escape(chosen.label))</button>
            <a href="/console/devices/\(ConsoleHTML.escape(ConsoleHTML.component(device.id.rawValue)))">Cancel</a>
            </form>
            """
        return Self.html(ConsoleHTML.page(title: "Confirm", actor: actor, csrf: session.csrf, active: "devices", body))
    }

    func act(_ session: ConsoleSessions.Session, _ id: DeviceID, _ form: [String: String]) async throws -> Response {
        let actor = session.actor
        let action = form["action"] ?? ""
        if action == "transfer" {
            try AccessPolicy.authorize(.transfer, actor)
            let to = (form["to"] ?? "").trimmingCharacters(in: .whitespaces)
            _ = try await registrar.transfer(id, to: to, by: actor, at: now())
        } else {
            guard let event = LifecycleStateMachine.Event(rawValue: action), event != .activate else {
                throw HTTPProblem(.badRequest, "no action '\(action.prefix(32))'")
            }
            try AccessPolicy.authorize(.transition(event), actor)
            _ = try await registrar.apply(event, to: id, by: actor, at: now())
        }
        return Self.redirect("/console/devices/" + ConsoleHTML.component(id.rawValue))
    }

    func groups(_ session: ConsoleSessions.Session) async throws -> Response {
        let actor = session.actor
        try AccessPolicy.authorize(.readGroups, actor)
        var body = "<table id=\"groups\"><tr><th>name</th><th>approval</th><th>IDs</th><th>created</th></tr>"
        for group in try await store.enrollmentGroups() {
            body +=
                "<tr><td>\(ConsoleHTML.escape(group.name))</td><td>\(group.autoApprove ? "automatic" : "by an operator")</td><td>\(ConsoleHTML.escape(group.idPattern ?? "any"))</td><td>\(ConsoleHTML.date(group.createdAt))</td></tr>"
        }
        body += "</table><h2>Waiting for approval</h2>"
        let pending = try await store.devices(matching: try AccessPolicy.scoped(DeviceFilter(state: .pending), actor), after: nil, limit: Self.pageSize)
        body += "<table id=\"pending\"><tr><th>ID</th><th>model</th><th>group</th><th></th></tr>"
        for device in pending {
            let link = "/console/devices/" + ConsoleHTML.component(device.id.rawValue)
            let approve =
                (try? AccessPolicy.authorize(.transition(.approve), actor)) != nil
                ? "<a class=\"button\" href=\"\(ConsoleHTML.escape(link))/confirm?action=approve\">Approve</a> <a class=\"button\" href=\"\(ConsoleHTML.escape(link))/confirm?action=revoke\">Reject</a>"
                : ""
            body +=
                "<tr><td><a href=\"\(ConsoleHTML.escape(link))\">\(ConsoleHTML.escape(device.id.rawValue))</a></td><td>\(ConsoleHTML.escape(device.model))</td><td>\(ConsoleHTML.escape(device.group ?? "—"))</td><td>\(approve)</td></tr>"
        }
        body += "</table>"
        if pending.count == Self.pageSize {
            body += "<p><a href=\"/console/devices?state=pending\">All pending devices →</a></p>"
        }
        return Self.html(ConsoleHTML.page(title: "Enrollment groups", actor: actor, csrf: session.csrf, active: "groups", body))
    }

    func releases(_ session: ConsoleSessions.Session) async throws -> Response {
        let actor = session.actor
        try AccessPolicy.authorize(.readAudit, actor)
        var body = "<table id=\"releases\"><tr><th>version</th><th>models</th><th>channel</th><th>rollout</th><th>progress</th><th></th></tr>"
        let releases = (try? updates?.snapshot().releases) ?? []
        for release in releases {
            let counts = try await store.updateCounts(version: release.manifest.version)
            let installed = counts[.installed, default: 0]
            let offered = counts.values.reduce(0, +)
            let failed = counts[.failed, default: 0] + counts[.rolledBack, default: 0]
            let width = offered == 0 ? 0 : Int(200 * Double(installed) / Double(offered))
            body += """
                <tr><td>\(ConsoleHTML.escape(release.manifest.version))</td><td>\(ConsoleHTML.escape(release.manifest.models.joined(separator: ", ")))</td>\
                <td>\(ConsoleHTML.escape(release.manifest.channel))</td><td>\(release.manifest.rollout) %</td>\
                <td><svg class="progress" width="204" height="14" viewBox="0 0 204 14"><rect x="2" y="2" width="200" height="10" fill="#ddd"></rect>\
                <rect x="2" y="2" width="\(width)" height="10" fill="#3c9d5d"></rect></svg> \(installed) installed of \(offered) offered, \(failed) failed</td>\
                <td>\(release.halted ? "halted" : "")</td></tr>
                """
        }
        body += "</table>"
        if releases.isEmpty { body += "<p>No releases published (<code>fleetward release publish</code>).</p>" }
        return Self.html(ConsoleHTML.page(title: "Releases and rollouts", actor: actor, csrf: session.csrf, active: "releases", body))
    }

    func audit(_ session: ConsoleSessions.Session, _ request: Request) async throws -> Response {
        let actor = session.actor
        try AccessPolicy.authorize(.readAudit, actor)
        let head = try await store.auditHead()
        var before = head + 1
        if let text = request.uri.queryParameters.get("before") {
            guard let value = Int64(text), value > 0 else { throw HTTPProblem(.badRequest, "'before' must be an entry number") }
            before = min(value, head + 1)
        }
        let from = max(1, before - Int64(Self.pageSize))
        let entries = try await store.auditEntries(from: from, limit: Int(before - from)).reversed()
        var body = ""
        if request.uri.queryParameters.get("verify") == "1" {
            switch try await store.verifyAudit(sealer: hasher.auditSealer) {
            case .intact(let count):
                body += "<p class=\"ok\" id=\"verification\">The audit chain verifies: \(count) entries, every hash and seal intact.</p>"
            case .broken(let sequence, let reason):
                body +=
                    "<p class=\"error\" id=\"verification\">The audit chain is broken at entry \(sequence): \(ConsoleHTML.escape(reason)).</p>"
            }
        } else {
            body += "<p><a class=\"button\" id=\"verify\" href=\"/console/audit?verify=1\">Verify the whole chain</a></p>"
        }
        body += "<table id=\"audit\"><tr><th>#</th><th>time</th><th>actor</th><th>action</th><th>subject</th></tr>"
        for entry in entries {
            body +=
                "<tr><td>\(entry.sequence)</td><td>\(ConsoleHTML.date(Date(timeIntervalSince1970: Double(entry.timeMilliseconds) / 1000)))</td><td>\(ConsoleHTML.escape(entry.actor))</td><td>\(ConsoleHTML.escape(entry.action))</td><td>\(ConsoleHTML.escape(entry.subject))</td></tr>"
        }
        body += "</table>"
        if from > 1 { body += "<p><a href=\"/console/audit?before=\(from)\">Older →</a></p>" }
        return Self.html(ConsoleHTML.page(title: "Audit log", actor: actor, csrf: session.csrf, active: "audit", body))
    }

    func securityEvents(_ session: ConsoleSessions.Session, _ request: Request) async throws -> Response {
        let actor = session.actor
        try AccessPolicy.authorize(.readSecurityEvents, actor)
        var after: Int64 = 0
        if let text = request.uri.queryParameters.get("after") {
            guard let value = Int64(text), value >= 0 else { throw HTTPProblem(.badRequest, "'after' must be an event number") }
            after = value
        }
        let events = try await store.securityEvents(after: after, limit: Self.pageSize)
        var body = "<table id=\"events\"><tr><th>#</th><th>time</th><th>kind</th><th>device</th><th>address</th><th>detail</th></tr>"
        for event in events {
            body +=
                "<tr><td>\(event.sequence)</td><td>\(ConsoleHTML.date(event.time))</td><td>\(ConsoleHTML.escape(event.kind))</td><td>\(ConsoleHTML.escape(event.device ?? "—"))</td><td>\(ConsoleHTML.escape(event.address ?? "—"))</td><td>\(ConsoleHTML.escape(event.detail))</td></tr>"
        }
        body += "</table>"
        if events.isEmpty { body += "<p>No security events.</p>" }
        if events.count == Self.pageSize, let last = events.last {
            body += "<p><a href=\"/console/security-events?after=\(last.sequence)\">Newer →</a></p>"
        }
        return Self.html(ConsoleHTML.page(title: "Security events", actor: actor, csrf: session.csrf, active: "security", body))
    }
}
