public import FleetwardPKI
public import FleetwardRegistry
public import Foundation

/// A ``RegistryStore`` that times each write transaction into ``FleetMetrics`` and forwards
/// everything else unchanged: the registry's latency on `/metrics` without the stores knowing.
public struct TimedRegistryStore: RegistryStore {
    public let base: any RegistryStore
    let metrics: FleetMetrics

    public init(_ base: any RegistryStore, metrics: FleetMetrics) {
        self.base = base
        self.metrics = metrics
    }

    public func migrate() async throws -> [Int] { try await base.migrate() }

    public func transaction<T: Sendable>(audited: Bool, _ body: (any RegistryTransaction) async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        defer {
            let elapsed = ContinuousClock.now - start
            metrics.transaction(seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        }
        return try await base.transaction(audited: audited, body)
    }

    public func device(_ id: DeviceID) async throws -> Device? { try await base.device(id) }
    public func devices(matching filter: DeviceFilter, after cursor: DeviceID?, limit: Int) async throws -> [Device] {
        try await base.devices(matching: filter, after: cursor, limit: limit)
    }
    public func deviceCounts() async throws -> [DeviceState: Int] { try await base.deviceCounts() }
    public func expiringCertificateCounts(from: Date, until: Date) async throws -> [String: Int] {
        try await base.expiringCertificateCounts(from: from, until: until)
    }
    public func apiToken(id: String) async throws -> APITokenRecord? { try await base.apiToken(id: id) }
    public func apiTokens() async throws -> [APITokenRecord] { try await base.apiTokens() }
    public func auditEntries(from sequence: Int64, limit: Int) async throws -> [AuditEntry] {
        try await base.auditEntries(from: sequence, limit: limit)
    }
    public func auditSubjects(after sequence: Int64, limit: Int) async throws -> [AuditSubject] {
        try await base.auditSubjects(after: sequence, limit: limit)
    }
    public func auditEntries(subjects: [String], limit: Int) async throws -> [AuditEntry] {
        try await base.auditEntries(subjects: subjects, limit: limit)
    }
    public func auditHead() async throws -> Int64 { try await base.auditHead() }
    public func auditAppends() -> AsyncStream<Void>? { base.auditAppends() }
    public func certificate(serial: String) async throws -> CertificateRecord? { try await base.certificate(serial: serial) }
    public func certificates(for id: DeviceID) async throws -> [CertificateRecord] { try await base.certificates(for: id) }
    public func revokedCertificates(profiles: [String]) async throws -> [RevokedEntry] {
        try await base.revokedCertificates(profiles: profiles)
    }
    public func revocationCount() async throws -> Int { try await base.revocationCount() }
    public func heldCertificates(profiles: [String]) async throws -> [RevokedEntry] { try await base.heldCertificates(profiles: profiles) }
    public func telemetry(for device: DeviceID, limit: Int) async throws -> [TelemetryRecord] {
        try await base.telemetry(for: device, limit: limit)
    }
    public func updateCounts(version: String) async throws -> [UpdateState: Int] { try await base.updateCounts(version: version) }
    public func owner(_ id: String) async throws -> Owner? { try await base.owner(id) }
    public func owners(after cursor: String?, limit: Int) async throws -> [Owner] { try await base.owners(after: cursor, limit: limit) }
    public func claimCode(for id: DeviceID) async throws -> ClaimCodeRecord? { try await base.claimCode(for: id) }
    public func enrollmentToken(secretHMAC: [UInt8]) async throws -> EnrollmentTokenRecord? {
        try await base.enrollmentToken(secretHMAC: secretHMAC)
    }
    public func enrollmentGroup(_ id: String) async throws -> EnrollmentGroup? { try await base.enrollmentGroup(id) }
    public func enrollmentGroups() async throws -> [EnrollmentGroup] { try await base.enrollmentGroups() }
    public func mqttPolicy(_ scope: MQTTPolicyScope) async throws -> MQTTPolicyRecord? { try await base.mqttPolicy(scope) }
    public func mqttPolicies() async throws -> [MQTTPolicyRecord] { try await base.mqttPolicies() }
    public func securityEvents(after sequence: Int64, limit: Int) async throws -> [SecurityEvent] {
        try await base.securityEvents(after: sequence, limit: limit)
    }
}
