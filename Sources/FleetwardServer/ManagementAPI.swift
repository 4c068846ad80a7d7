public import FleetwardAuthority
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import HTTPTypes
public import Hummingbird
import NIOCore
import NIOPosix

/// The management API (`/api/v1/…`): devices, lifecycle, owners, claim codes, enrollment tokens,
/// enrollment groups, API tokens and the audit log, for bearer tokens with a role; and, without a
/// token, the CAs' CRLs and OCSP.
///
/// Each route parses, calls and renders: it names its ``AccessPolicy/Operation`` (the policy
/// alone decides which roles may call it), reads its parameters and body, and calls a use case
/// (``Registrar``, ``ClaimCodeDesk``, ``EnrollmentTokens``), which holds every rule (an owner sees
/// only their devices; another owner's device is a 404). Errors become answers in one place
/// (``HTTPProblem``).
public struct ManagementAPI: Sendable {
    public let registrar: Registrar
    public let hasher: SecretHasher
    public let claims: ClaimCodeDesk
    /// Serves the CAs' CRLs at ``RevocationPublisher/paths``.
    public let revocation: RevocationPublisher
    /// Answers OCSP at `POST /ocsp` and `GET /ocsp/{base64}`.
    public let ocsp: OCSPService
    /// Failed sign-ins allowed per address before 429.
    public var authenticationLimiter = AttemptLimiter(.init(maximumFailures: 30, window: 60))
    /// The largest allow-list CSV accepted on `POST /devices/import`.
    public var importLimit = 16 * 1024 * 1024
    public var now: @Sendable () -> Date = Date.init
    /// What `GET /metrics` exports; the EST service and the gateway record into the same one.
    public var metrics = FleetMetrics()
    /// Whether `GET /metrics` needs a bearer token (of the `metrics`, `operator` or `admin`
    /// role); false serves it to anyone who can reach the listener.
    public var metricsRequireToken = true
    /// The web console at `/console/` (nil: none), signed in with its own sessions.
    public var console: Console?

    public init(
        registrar: Registrar, hasher: SecretHasher, claims: ClaimCodeDesk, revocation: RevocationPublisher, ocsp: OCSPService
    ) {
        self.registrar = registrar
        self.hasher = hasher
        self.claims = claims
        self.revocation = revocation
        self.ocsp = ocsp
    }

    var store: any RegistryStore { registrar.store }

    static let prefix = "/api/v1"
    public static let openAPIPath = "/api/v1/openapi.json"
    public static let metricsPath = "/metrics"

    /// The router with every route, the error and authentication middleware.
    public func router() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: ProblemMiddleware(closesOnRefusedBodies: true))
        router.add(
            middleware: BearerAuthenticator(
                store: store, hasher: hasher, limiter: authenticationLimiter, now: now,
                publicPaths: Set(
                    [Self.openAPIPath, "/ocsp"] + Array(RevocationPublisher.paths.values) + (metricsRequireToken ? [] : [Self.metricsPath])),
                // The console authenticates its own requests (a session cookie, ``Console``).
                publicPrefixes: ["/ocsp/"] + (console == nil ? [] : ["/console"])))
        OCSPRoutes.add(to: router, ocsp, metrics: metrics)
        router.get(RouterPath(Self.metricsPath)) { _, context in
            let actor: Actor
            if metricsRequireToken {
                actor = try authorize(.readMetrics, context)
            } else {
                actor = context.actor ?? Actor(role: .metrics, name: "scrape")
            }
            let overview = try await registrar.overview(as: actor, at: now())
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: metrics.render(.init(overview: overview)))))
        }
        for (role, path) in RevocationPublisher.paths {
            router.get(RouterPath(path)) { _, _ in
                metrics.crlRequest()
                return Response(
                    status: .ok, headers: [.contentType: "application/pkix-crl", .cacheControl: "max-age=60"],
                    body: .init(byteBuffer: ByteBuffer(bytes: try await revocation.crl(of: role))))
            }
        }
        let api = router.group(RouterPath(Self.prefix))

        api.get("openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes)))
        }

        // Devices
        api.get("devices") { request, context in try await listDevices(request, context) }
        api.post("devices") { request, context in
            let actor = try authorize(.createDevices, context)
            let body = try await JSONBodyReader.read(DeviceRequest.self, from: request)
            let device = try DeviceRegistrations.device(
                id: body.id, model: body.model, metadata: body.metadata ?? [:], secret: body.secret, keySHA256: body.keySHA256,
                hasher: hasher, at: now())
            try await registrar.register(device, by: actor, at: now())
            return JSONResponse.make(device.publicView, status: .created)
        }
        api.post("devices/import") { request, context in
            let actor = try authorize(.createDevices, context)
            guard MediaType.essence(request.headers[.contentType]) == "text/csv" else {
                throw HTTPProblem(.unsupportedMediaType, "send the allow-list as text/csv (Content-Type: text/csv)")
            }
            var request = request
            let buffer = try await request.collectBody(upTo: importLimit)
            let report = try await AllowListImport.importCSV(
                Array(buffer.readableBytesView), source: "api", into: registrar, hasher: hasher, by: actor, now: now)
            metrics.importedRows(inserted: report.inserted, duplicates: report.duplicates, rejected: report.rejected)
            return JSONResponse.make(report)
        }
        api.get("devices/{id}") { _, context in
            let actor = try authorize(.readDevices, context)
            return JSONResponse.make(try await registrar.device(try deviceID(context), as: actor).publicView)
        }
        api.get("devices/{id}/certificates") { _, context in
            let actor = try authorize(.readDevices, context)
            let device = try await registrar.device(try deviceID(context), as: actor)
            return JSONResponse.make(CertificateList(certificates: try await store.certificates(for: device.id).map(\.publicView)))
        }
        api.get("devices/{id}/telemetry") { request, context in
            let actor = try authorize(.readDevices, context)
            let device = try await registrar.device(try deviceID(context), as: actor)
            return JSONResponse.make(TelemetryList(telemetry: try await store.telemetry(for: device.id, limit: try pageSize(request))))
        }
        for event in LifecycleStateMachine.Event.allCases where event != .activate {
            api.post("devices/{id}/\(event.rawValue)") { _, context in
                let actor = try authorize(.transition(event), context)
                return JSONResponse.make(try await registrar.apply(event, to: try deviceID(context), by: actor, at: now()).publicView)
            }
        }
        api.post("devices/{id}/transfer") { request, context in
            let actor = try authorize(.transfer, context)
            let body = try await JSONBodyReader.read(TransferRequest.self, from: request)
            return JSONResponse.make(try await registrar.transfer(try deviceID(context), to: body.to, by: actor, at: now()).publicView)
        }
        api.post("devices/{id}/claim-code") { request, context in
            let actor = try authorize(.setClaimCode, context)
            let body = try await JSONBodyReader.read(ClaimCodeRequest.self, from: request)
            let id = try deviceID(context)
            let code = try await claims.issue(for: id, rotate: body.rotate ?? false, by: actor, at: now())
            return JSONResponse.make(ClaimCodeResponse(device: id.rawValue, claimCode: code), status: .created)
        }
        api.post("devices/{id}/enrollment-tokens") { request, context in
            let actor = try authorize(.createEnrollmentToken, context)
            let body = try await JSONBodyReader.read(EnrollmentTokenRequest.self, from: request)
            let id = try deviceID(context)
            let (token, record) = try await EnrollmentTokens.issue(
                for: id, lifetime: TimeInterval(body.ttlSeconds ?? Int(EnrollmentTokens.defaultLifetime)), registrar: registrar,
                hasher: hasher, by: actor, at: now())
            return JSONResponse.make(
                EnrollmentTokenResponse(device: id.rawValue, token: token, expiresAt: record.expiresAt), status: .created)
        }
        api.post("claims") { request, context in
            let actor = try authorize(.claim, context)
            let body = try await JSONBodyReader.read(ClaimRequest.self, from: request)
            let device = try await claims.claim(
                try DeviceID(body.device), code: body.claimCode, by: actor, from: context.remoteIP, at: now())
            return JSONResponse.make(device.publicView)
        }
        api.post("certificates/{serial}/revoke") { request, context in
            let actor = try authorize(.revokeCertificates, context)
            let body = try await JSONBodyReader.read(RevokeCertificateRequest.self, from: request)
            let serial = try pathParameter("serial", context).lowercased()
            guard (2...42).contains(serial.count), serial.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
            else {
                throw HTTPProblem(.badRequest, "a serial number is 2 to 42 hex digits")
            }
            let reason = try RevocationReason(name: body.reason ?? RevocationReason.keyCompromise.description)
            return JSONResponse.make(try await registrar.revokeCertificate(serial: serial, reason: reason, by: actor, at: now()).publicView)
        }

        // Owners
        api.get("owners") { request, context in
            _ = try authorize(.readOwners, context)
            let limit = try pageSize(request)
            let after = request.uri.queryParameters.get("after")
            if let after, !Owner.isValidID(after) { throw HTTPProblem(.badRequest, "'after' is not a valid owner ID") }
            let owners = try await store.owners(after: after, limit: limit + 1)
            return JSONResponse.make(
                Page(name: "owners", items: Array(owners.prefix(limit)), next: owners.count > limit ? owners[limit - 1].id : nil))
        }
        api.post("owners") { request, context in
            let actor = try authorize(.createOwner, context)
            let body = try await JSONBodyReader.read(OwnerRequest.self, from: request)
            let owner = try Owner(id: body.id, name: body.name, createdAt: now())
            try await registrar.createOwner(owner, by: actor, at: now())
            return JSONResponse.make(owner, status: .created)
        }
        api.get("owners/{owner}") { _, context in
            _ = try authorize(.readOwners, context)
            let id = try pathParameter("owner", context)
            guard Owner.isValidID(id) else { throw HTTPProblem(.badRequest, "not a valid owner ID") }
            guard let owner = try await store.owner(id) else { throw HTTPProblem(.notFound, "no owner \(id)") }
            return JSONResponse.make(owner)
        }

        // Enrollment groups
        api.get("groups") { _, context in
            _ = try authorize(.readGroups, context)
            return JSONResponse.make(GroupList(groups: try await store.enrollmentGroups().map(GroupView.init)))
        }
        api.post("groups") { request, context in
            let actor = try authorize(.manageGroups, context)
            let body = try await JSONBodyReader.read(GroupRequest.self, from: request)
            let group = try EnrollmentGroups.make(
                name: body.name, caCertificate: Array(body.caCertificate.utf8), autoApprove: body.autoApprove ?? false,
                idPattern: body.idPattern, now: now())
            try await registrar.createGroup(group, by: actor, at: now())
            return JSONResponse.make(GroupView(group), status: .created)
        }
        api.get("groups/{group}") { _, context in
            _ = try authorize(.readGroups, context)
            let id = try groupID(context)
            guard let group = try await store.enrollmentGroup(id) else { throw HTTPProblem(.notFound, "no enrollment group \(id)") }
            return JSONResponse.make(GroupView(group))
        }
        api.delete("groups/{group}") { _, context in
            let actor = try authorize(.manageGroups, context)
            try await registrar.deleteGroup(try groupID(context), by: actor, at: now())
            return Response(status: .noContent)
        }

        // MQTT policies (per model or enrollment group)
        api.get("mqtt/policies") { _, context in
            _ = try authorize(.readMQTTPolicies, context)
            return JSONResponse.make(MQTTPolicyList(policies: try await store.mqttPolicies().map(MQTTPolicyView.init)))
        }
        api.get("mqtt/policies/{scope}") { _, context in
            _ = try authorize(.readMQTTPolicies, context)
            let scope = try policyScope(context)
            guard let record = try await store.mqttPolicy(scope) else { throw HTTPProblem(.notFound, "no MQTT policy for \(scope)") }
            return JSONResponse.make(try MQTTPolicyView(record))
        }
        api.put("mqtt/policies/{scope}") { request, context in
            let actor = try authorize(.manageMQTTPolicies, context)
            let scope = try policyScope(context)
            guard MediaType.essence(request.headers[.contentType]) == "application/json" else {
                throw HTTPProblem(.unsupportedMediaType, "send the policy as application/json (Content-Type: application/json)")
            }
            var request = request
            let buffer = try await request.collectBody(upTo: MQTTPolicies.maximumDocumentSize)
            let record = try MQTTPolicies.make(scope: scope.description, document: Array(buffer.readableBytesView), now: now())
            try await registrar.setMQTTPolicy(record, by: actor, at: now())
            return JSONResponse.make(try MQTTPolicyView(record))
        }
        api.delete("mqtt/policies/{scope}") { _, context in
            let actor = try authorize(.manageMQTTPolicies, context)
            try await registrar.deleteMQTTPolicy(try policyScope(context), by: actor, at: now())
            return Response(status: .noContent)
        }

        // API tokens
        api.get("tokens") { _, context in
            _ = try authorize(.manageTokens, context)
            return JSONResponse.make(TokenList(tokens: try await store.apiTokens().map(TokenView.init)))
        }
        api.post("tokens") { request, context in
            let actor = try authorize(.manageTokens, context)
            let body = try await JSONBodyReader.read(TokenRequest.self, from: request)
            guard let role = Role(rawValue: body.role) else {
                throw HTTPProblem(.badRequest, "role must be admin, manufacturer, operator, owner or metrics")
            }
            let created = try APITokens.make(
                role: role, owner: body.owner, lifetime: body.ttlSeconds.map(TimeInterval.init), hasher: hasher, now: now())
            try await registrar.createAPIToken(created.record, by: actor, at: now())
            var view = TokenView(created.record)
            view.token = created.token
            return JSONResponse.make(view, status: .created)
        }
        api.delete("tokens/{tokenID}") { _, context in
            let actor = try authorize(.manageTokens, context)
            let id = try pathParameter("tokenID", context)
            guard id.count == 16, id.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
                throw HTTPProblem(.badRequest, "a token ID is 16 lowercase hex digits")
            }
            guard id != actor.name else { throw HTTPProblem(.conflict, "a token cannot revoke itself") }
            try await registrar.revokeAPIToken(id, by: actor, at: now())
            return Response(status: .noContent)
        }

        // Audit log
        api.get("audit") { request, context in
            _ = try authorize(.readAudit, context)
            let limit = try pageSize(request)
            var from: Int64 = 1
            if let after = request.uri.queryParameters.get("after") {
                guard let value = Int64(after), value >= 0, value < Int64.max else {
                    throw HTTPProblem(.badRequest, "'after' must be an entry number")
                }
                from = value + 1
            }
            let entries = try await store.auditEntries(from: from, limit: limit)
            return JSONResponse.make(
                Page(name: "entries", items: entries.map(AuditView.init), next: entries.count == limit ? entries.last?.sequence : nil))
        }
        // Security events: refused stolen, revoked or suspended devices.
        api.get("security-events") { request, context in
            _ = try authorize(.readSecurityEvents, context)
            let limit = try pageSize(request)
            var after: Int64 = 0
            if let text = request.uri.queryParameters.get("after") {
                guard let value = Int64(text), value >= 0 else { throw HTTPProblem(.badRequest, "'after' must be an event number") }
                after = value
            }
            let events = try await store.securityEvents(after: after, limit: limit)
            return JSONResponse.make(Page(name: "events", items: events, next: events.count == limit ? events.last?.sequence : nil))
        }
        console?.add(to: router)
        // Last: it wraps only requests no route took. HEAD goes with every GET (generated).
        let routes = router.routes.map { (path: $0.path, method: $0.method) }
        let heads = routes.filter { $0.method == .get }.map { (path: $0.path, method: HTTPRequest.Method.head) }
        router.add(middleware: MethodNotAllowedMiddleware(routes + heads))
        return router
    }

    // MARK: Devices

    private func listDevices(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let actor = try authorize(.readDevices, context)
        let query = request.uri.queryParameters
        if let unknown = query.map({ String($0.key) }).first(where: { !["state", "owner", "model", "after", "limit"].contains($0) }) {
            throw HTTPProblem(.badRequest, "unknown query parameter '\(unknown.prefix(64))'")
        }
        var filter = DeviceFilter()
        if let state = query.get("state") {
            guard let parsed = DeviceState(rawValue: state) else {
                throw HTTPProblem(.badRequest, "state must be one of \(DeviceState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter.state = parsed
        }
        if let owner = query.get("owner") {
            guard Owner.isValidID(owner) else { throw HTTPProblem(.badRequest, "'owner' is not a valid owner ID") }
            filter.owner = owner
        }
        if let model = query.get("model") {
            guard (1...100).contains(model.unicodeScalars.count), !model.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
                throw HTTPProblem(.badRequest, "'model' is 1 to 100 printable characters")
            }
            filter.model = model
        }
        let cursor = try query.get("after").map { try DeviceID($0) }
        filter = try AccessPolicy.scoped(filter, actor)
        let limit = try pageSize(request)
        let devices = try await store.devices(matching: filter, after: cursor, limit: limit + 1)
        let page = Array(devices.prefix(limit))
        return JSONResponse.make(
            Page(name: "devices", items: page.map(\.publicView), next: devices.count > limit ? page.last?.id.rawValue : nil))
    }

    // MARK: Parsing

    private func authorize(_ operation: AccessPolicy.Operation, _ context: APIRequestContext) throws -> Actor {
        let actor = try context.requireActor()
        try AccessPolicy.authorize(operation, actor)
        return actor
    }

    /// A path parameter, percent-decoded (`alice%40example.com` is `alice@example.com`).
    private func pathParameter(_ name: String, _ context: APIRequestContext) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else {
            throw HTTPProblem(.badRequest, "the path's \(name) is not valid percent-encoding")
        }
        return decoded
    }

    /// The device ID in the path.
    private func deviceID(_ context: APIRequestContext) throws -> DeviceID {
        try DeviceID(try pathParameter("id", context))
    }

    private func policyScope(_ context: APIRequestContext) throws -> MQTTPolicyScope {
        do {
            return try MQTTPolicyScope(parsing: try pathParameter("scope", context))
        } catch let error as RegistryError {
            throw HTTPProblem(.badRequest, error.message)
        }
    }

    private func groupID(_ context: APIRequestContext) throws -> String {
        let id = try pathParameter("group", context)
        guard id.count <= 64, id.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw HTTPProblem(.badRequest, "a group ID is lowercase hex")
        }
        return id
    }

    private func pageSize(_ request: Request) throws -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return 100 }
        guard let limit = Int(text), (1...1000).contains(limit) else { throw HTTPProblem(.badRequest, "'limit' is 1 to 1000") }
        return limit
    }
}
