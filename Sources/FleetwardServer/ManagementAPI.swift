public import FleetwardAuthority
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import HTTPTypes
public import Hummingbird
import NIOCore
import NIOPosix

/// The management API (`/api/v1/…`): devices, lifecycle, owners, claim codes, enrollment tokens,
/// enrollment groups, API tokens and the audit log, for bearer tokens with a role.
///
/// Every route names its ``AccessPolicy/Operation``; the policy alone decides which roles may
/// call it. Owners are further narrowed to their own devices, and another owner's device is a 404.
public struct ManagementAPI: Sendable {
    public let store: any RegistryStore
    public let hasher: SecretHasher
    /// PBKDF2 iterations for new claim codes.
    public var claimCodeIterations = ClaimCodes.defaultIterations
    /// Failed claims allowed per device and per address before 429.
    public var claimLimiter = AttemptLimiter(.init(maximumFailures: 5, window: 900))
    /// Failed sign-ins allowed per address before 429.
    public var authenticationLimiter = AttemptLimiter(.init(maximumFailures: 30, window: 60))
    /// The largest allow-list CSV accepted on `POST /devices/import`.
    public var importLimit = 16 * 1024 * 1024
    public var now: @Sendable () -> Date = Date.init
    /// Serves the CAs' CRLs at ``RevocationPublisher/paths`` (no token needed) when set.
    public var revocation: RevocationPublisher?
    /// Answers OCSP at `POST /ocsp` and `GET /ocsp/{base64}` (no token needed) when set.
    public var ocsp: OCSPService?

    public init(store: any RegistryStore, hasher: SecretHasher) {
        self.store = store
        self.hasher = hasher
    }

    static let prefix = "/api/v1"
    public static let openAPIPath = "/api/v1/openapi.json"

    /// The router with every route, the error and authentication middleware.
    public func router() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        router.add(
            middleware: BearerAuthenticator(
                store: store, hasher: hasher, limiter: authenticationLimiter, now: now,
                publicPaths: Set(
                    [Self.openAPIPath] + (revocation == nil ? [] : Array(RevocationPublisher.paths.values)) + (ocsp == nil ? [] : ["/ocsp"])
                ),
                publicPrefixes: ocsp == nil ? [] : ["/ocsp/"]))
        if let ocsp { OCSPRoutes.add(to: router, ocsp) }
        if let revocation {
            for (role, path) in RevocationPublisher.paths {
                router.get(RouterPath(path)) { _, _ in
                    Response(
                        status: .ok, headers: [.contentType: "application/pkix-crl", .cacheControl: "max-age=60"],
                        body: .init(byteBuffer: ByteBuffer(bytes: try await revocation.crl(of: role))))
                }
            }
        }
        let api = router.group(RouterPath(Self.prefix))

        api.get("openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }

        // Devices
        api.get("devices") { request, context in try await listDevices(request, context) }
        api.post("devices") { request, context in try await createDevice(request, context) }
        api.post("devices/import") { request, context in try await importDevices(request, context) }
        api.get("devices/{id}") { _, context in
            let actor = try authorize(.readDevices, context)
            return JSONResponse.make(try await visibleDevice(context, actor).publicView)
        }
        api.get("devices/{id}/certificates") { _, context in
            let actor = try authorize(.readDevices, context)
            let device = try await visibleDevice(context, actor)
            return JSONResponse.make(CertificateList(certificates: try await store.certificates(for: device.id).map(\.publicView)))
        }
        api.get("devices/{id}/telemetry") { request, context in
            let actor = try authorize(.readDevices, context)
            let device = try await visibleDevice(context, actor)
            return JSONResponse.make(TelemetryList(telemetry: try await store.telemetry(for: device.id, limit: try pageSize(request))))
        }
        for event in LifecycleStateMachine.Event.allCases where event != .activate {
            api.post("devices/{id}/\(event.rawValue)") { _, context in
                let actor = try authorize(.transition(event), context)
                let device = try await visibleDevice(context, actor)
                return JSONResponse.make(try await store.apply(event, to: device.id, by: actor, at: now()).publicView)
            }
        }
        api.post("devices/{id}/transfer") { request, context in
            let actor = try authorize(.transfer, context)
            let body = try await JSONBodyReader.read(TransferRequest.self, from: request)
            let device = try await visibleDevice(context, actor)
            guard Owner.isValidID(body.to) else { throw APIProblem(.badRequest, "'to' is not a valid owner ID") }
            return JSONResponse.make(try await store.transfer(device.id, to: body.to, by: actor, at: now()).publicView)
        }
        api.post("devices/{id}/claim-code") { _, context in
            let actor = try authorize(.setClaimCode, context)
            let device = try await visibleDevice(context, actor)
            let code = ClaimCodes.generate()
            let record = try ClaimCodes.record(for: code, device: device.id, iterations: claimCodeIterations)
            try await store.setClaimCode(record, by: actor, at: now())
            return JSONResponse.make(ClaimCodeResponse(device: device.id.rawValue, claimCode: code), status: .created)
        }
        api.post("devices/{id}/enrollment-tokens") { request, context in
            let actor = try authorize(.createEnrollmentToken, context)
            let body = try await JSONBodyReader.read(EnrollmentTokenRequest.self, from: request)
            let device = try await visibleDevice(context, actor)
            guard device.state != .revoked, device.state != .stolen else {
                throw APIProblem(.conflict, "device \(device.id) is \(device.state); it cannot enroll")
            }
            let created = try EnrollmentTokens.make(
                for: device.id, owner: device.owner, lifetime: TimeInterval(body.ttlSeconds ?? Int(EnrollmentTokens.defaultLifetime)),
                hasher: hasher, now: now())
            try await store.insert(created.record, by: actor, at: now())
            return JSONResponse.make(
                EnrollmentTokenResponse(device: device.id.rawValue, token: created.token, expiresAt: created.record.expiresAt),
                status: .created)
        }
        api.post("claims") { request, context in try await claim(request, context) }
        api.post("certificates/{serial}/revoke") { request, context in
            let actor = try authorize(.revokeCertificates, context)
            let body = try await JSONBodyReader.read(RevokeCertificateRequest.self, from: request)
            let serial = try context.parameters.require("serial").lowercased()
            guard (2...42).contains(serial.count), serial.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
            else {
                throw APIProblem(.badRequest, "a serial number is 2 to 42 hex digits")
            }
            let reason = try RevocationReason(name: body.reason ?? RevocationReason.keyCompromise.description)
            return JSONResponse.make(try await store.revokeCertificate(serial: serial, reason: reason, by: actor, at: now()).publicView)
        }

        // Owners
        api.get("owners") { request, context in
            _ = try authorize(.readOwners, context)
            let limit = try pageSize(request)
            let owners = try await store.owners(after: request.uri.queryParameters.get("after"), limit: limit + 1)
            return JSONResponse.make(
                OwnerPage(owners: Array(owners.prefix(limit)), next: owners.count > limit ? owners[limit - 1].id : nil))
        }
        api.post("owners") { request, context in
            let actor = try authorize(.createOwner, context)
            let body = try await JSONBodyReader.read(OwnerRequest.self, from: request)
            let owner = try Owner(id: body.id, name: body.name, createdAt: now())
            try await store.insert(owner, by: actor, at: now())
            return JSONResponse.make(owner, status: .created)
        }
        api.get("owners/{owner}") { _, context in
            _ = try authorize(.readOwners, context)
            let id = try context.parameters.require("owner")
            guard Owner.isValidID(id) else { throw APIProblem(.badRequest, "not a valid owner ID") }
            guard let owner = try await store.owner(id) else { throw APIProblem(.notFound, "no owner \(id)") }
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
                name: body.name, caCertificate: Array(body.caCertificate.utf8), autoApprove: body.autoApprove ?? false, now: now())
            try await store.insert(group, by: actor, at: now())
            return JSONResponse.make(GroupView(group), status: .created)
        }
        api.get("groups/{group}") { _, context in
            _ = try authorize(.readGroups, context)
            return JSONResponse.make(GroupView(try await requireGroup(context)))
        }
        api.delete("groups/{group}") { _, context in
            let actor = try authorize(.manageGroups, context)
            let group = try await requireGroup(context)
            try await store.deleteEnrollmentGroup(group.id, by: actor, at: now())
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
                throw APIProblem(.badRequest, "role must be admin, manufacturer, operator or owner")
            }
            let created = try APITokens.make(role: role, owner: body.owner, hasher: hasher, now: now())
            try await store.insert(created.record, by: actor, at: now())
            var view = TokenView(created.record)
            view.token = created.token
            return JSONResponse.make(view, status: .created)
        }
        api.delete("tokens/{token}") { _, context in
            let actor = try authorize(.manageTokens, context)
            let id = try context.parameters.require("token")
            guard id.count == 16, id.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
                throw APIProblem(.badRequest, "a token ID is 16 lowercase hex digits")
            }
            guard id != actor.name else { throw APIProblem(.conflict, "a token cannot revoke itself") }
            try await store.revokeAPIToken(id, by: actor, at: now())
            return Response(status: .noContent)
        }

        // Audit log
        api.get("audit") { request, context in
            _ = try authorize(.readAudit, context)
            let limit = try pageSize(request)
            var from: Int64 = 1
            if let after = request.uri.queryParameters.get("after") {
                guard let value = Int64(after), value >= 0, value < Int64.max else {
                    throw APIProblem(.badRequest, "'after' must be an entry number")
                }
                from = value + 1
            }
            let entries = try await store.auditEntries(from: from, limit: limit)
            return JSONResponse.make(
                AuditPage(entries: entries.map(AuditView.init), next: entries.count == limit ? entries.last?.sequence : nil))
        }
        return router
    }

    // MARK: Devices

    private func listDevices(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let actor = try authorize(.readDevices, context)
        let query = request.uri.queryParameters
        if let unknown = query.map({ String($0.key) }).first(where: { !["state", "owner", "model", "after", "limit"].contains($0) }) {
            throw APIProblem(.badRequest, "unknown query parameter '\(unknown.prefix(64))'")
        }
        var filter = DeviceFilter()
        if let state = query.get("state") {
            guard let parsed = DeviceState(rawValue: state) else {
                throw APIProblem(.badRequest, "state must be one of \(DeviceState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter.state = parsed
        }
        if let owner = query.get("owner") {
            guard Owner.isValidID(owner) else { throw APIProblem(.badRequest, "'owner' is not a valid owner ID") }
            filter.owner = owner
        }
        if let model = query.get("model") {
            guard (1...100).contains(model.utf8.count) else { throw APIProblem(.badRequest, "'model' is 1 to 100 characters") }
            filter.model = model
        }
        let cursor = try query.get("after").map { try DeviceID($0) }
        filter = try AccessPolicy.scoped(filter, actor)
        let limit = try pageSize(request)
        let devices = try await store.devices(matching: filter, after: cursor, limit: limit + 1)
        let page = Array(devices.prefix(limit))
        return JSONResponse.make(
            DevicePage(devices: page.map(\.publicView), next: devices.count > limit ? page.last?.id.rawValue : nil))
    }

    private func createDevice(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let actor = try authorize(.createDevices, context)
        let body = try await JSONBodyReader.read(DeviceRequest.self, from: request)
        let id = try DeviceID(body.id)
        guard (1...100).contains(body.model.utf8.count), !body.model.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw APIProblem(.badRequest, "'model' is 1 to 100 printable characters")
        }
        let metadata = body.metadata ?? [:]
        guard metadata.count <= 32, metadata.allSatisfy({ $0.key.utf8.count <= 64 && $0.value.utf8.count <= 1024 }) else {
            throw APIProblem(.badRequest, "'metadata' holds at most 32 entries, keys up to 64 and values up to 1024 bytes")
        }
        let proof: EnrollmentProof
        switch (body.secret, body.keySHA256) {
        case (let secret?, nil):
            guard (SecretHasher.minimumSecretBytes...SecretHasher.maximumSecretBytes).contains(secret.utf8.count) else {
                throw APIProblem(
                    .badRequest, "'secret' is \(SecretHasher.minimumSecretBytes) to \(SecretHasher.maximumSecretBytes) bytes")
            }
            proof = .secret(hmac: hasher.hash(Array(secret.utf8)))
        case (nil, let fingerprint?):
            guard let bytes = Hex.bytes(Array(fingerprint.utf8)), bytes.count == 32 else {
                throw APIProblem(.badRequest, "'keySHA256' is the 64 hex digits of the SHA-256 of the device's public key")
            }
            proof = .publicKey(sha256: bytes)
        default:
            throw APIProblem(.badRequest, "give exactly one of 'secret' and 'keySHA256': an ID alone proves nothing")
        }
        let device = Device(id: id, model: body.model, metadata: metadata, proof: proof, createdAt: now())
        try await store.insert(device, by: actor, at: now())
        return JSONResponse.make(device.publicView, status: .created)
    }

    private func importDevices(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let actor = try authorize(.createDevices, context)
        if let contentType = request.headers[.contentType], !contentType.lowercased().hasPrefix("text/csv") {
            throw APIProblem(.unsupportedMediaType, "send the allow-list as text/csv")
        }
        var request = request
        let buffer = try await request.collectBody(upTo: importLimit)
        let summary = try await AllowListImport.importCSV(
            Array(buffer.readableBytesView), source: "api", into: store, hasher: hasher, by: actor, now: now)
        return JSONResponse.make(summary)
    }

    private func claim(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let actor = try authorize(.claim, context)
        let body = try await JSONBodyReader.read(ClaimRequest.self, from: request)
        let id = try DeviceID(body.device)
        let keys = ["claim-device:\(id)", "claim-address:\(context.remoteIP ?? "local")"]
        let time = now()
        if let wait = keys.compactMap({ claimLimiter.retryAfter($0, now: time) }).max() {
            throw APIProblem(.tooManyRequests, "too many failed claims; try again later", headers: [.retryAfter: "\(wait)"])
        }
        // The attempt counts before the slow hash runs, so parallel guesses cannot all slip
        // under the limit; a success takes it back.
        for key in keys { claimLimiter.recordFailure(key, now: time) }
        // Unknown device, no code, used code and wrong code all answer alike, after the same
        // work: a missing or used code is checked against a dummy record.
        let stored = try await store.claimCode(for: id)
        let usable = stored.flatMap { $0.claimedBy == nil ? $0 : nil }
        let candidate = usable ?? ClaimCodes.dummyRecord(for: id)
        let typed = body.claimCode
        let matched = try await NIOThreadPool.singleton.runIfActive { ClaimCodes.matches(typed, candidate) }
        guard matched, let record = usable else {
            throw APIProblem(.forbidden, "the claim code does not match device \(id)")
        }
        let device = try await store.claim(id, verifiedHash: record.hash, by: actor, at: now())
        for key in keys { claimLimiter.forgiveLast(key) }
        return JSONResponse.make(device.publicView)
    }

    // MARK: Helpers

    private func authorize(_ operation: AccessPolicy.Operation, _ context: APIRequestContext) throws -> Actor {
        let actor = try context.requireActor()
        try AccessPolicy.authorize(operation, actor)
        return actor
    }

    /// The device named in the path, if it exists and the actor may see it; else 404.
    private func visibleDevice(_ context: APIRequestContext, _ actor: Actor) async throws -> Device {
        let id = try DeviceID(try context.parameters.require("id"))
        guard let device = try await store.device(id), AccessPolicy.canSee(device, actor) else {
            throw APIProblem(.notFound, "no device \(id)")
        }
        return device
    }

    private func requireGroup(_ context: APIRequestContext) async throws -> EnrollmentGroup {
        let id = try context.parameters.require("group")
        guard id.count <= 64, id.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw APIProblem(.badRequest, "a group ID is lowercase hex")
        }
        guard let group = try await store.enrollmentGroup(id) else { throw APIProblem(.notFound, "no enrollment group \(id)") }
        return group
    }

    private func pageSize(_ request: Request) throws -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return 100 }
        guard let limit = Int(text), (1...1000).contains(limit) else { throw APIProblem(.badRequest, "'limit' is 1 to 1000") }
        return limit
    }
}
