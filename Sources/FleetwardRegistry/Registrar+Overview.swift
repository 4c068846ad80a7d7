public import FleetwardPKI
public import Foundation

/// The fleet at a glance: what `/metrics` exports and the console's overview draws.
public struct FleetOverview: Sendable, Equatable {
    /// How far ahead "expiring" looks.
    public enum ExpiryWindow: String, CaseIterable, Sendable {
        case sevenDays = "7d"
        case thirtyDays = "30d"

        public var seconds: TimeInterval { self == .sevenDays ? 7 * 86_400 : 30 * 86_400 }
    }

    public var devicesByState: [DeviceState: Int]
    /// Unrevoked certificates whose validity ends within each window (from now), by profile.
    public var expiring: [ExpiryWindow: [String: Int]]
    /// Entries in the audit log (its head's sequence number).
    public var auditEntries: Int64

    public init(devicesByState: [DeviceState: Int], expiring: [ExpiryWindow: [String: Int]], auditEntries: Int64) {
        self.devicesByState = devicesByState
        self.expiring = expiring
        self.auditEntries = auditEntries
    }

    public var totalDevices: Int { devicesByState.values.reduce(0, +) }
}

extension Registrar {
    /// Devices by state, certificates expiring within 7 and 30 days of `time`, and the audit
    /// log's length, for a role that may see the whole fleet (not an owner).
    ///
    /// Counts come from the store's indexes (devices by state, certificates by expiry): no
    /// device row is loaded, however large the fleet.
    /// - Throws: ``RegistryError`` `forbidden` for the owner role.
    public func overview(as actor: Actor, at time: Date) async throws -> FleetOverview {
        try AccessPolicy.authorize(.readFleetOverview, actor)
        let devices = try await store.deviceCounts()
        var expiring: [FleetOverview.ExpiryWindow: [String: Int]] = [:]
        for window in FleetOverview.ExpiryWindow.allCases {
            expiring[window] = try await store.expiringCertificateCounts(from: time, until: time.addingTimeInterval(window.seconds))
        }
        return FleetOverview(devicesByState: devices, expiring: expiring, auditEntries: try await store.auditHead())
    }
}

extension Registrar {
    /// The newest `limit` audit entries about device `id` and its certificates, newest first.
    /// - Throws: ``RegistryError`` `forbidden` for a role that may not read the audit log,
    ///   `notFound` when `actor` may not see the device.
    public func timeline(of id: DeviceID, as actor: Actor, limit: Int = 50) async throws -> [AuditEntry] {
        try AccessPolicy.authorize(.readAudit, actor)
        let device = try await device(id, as: actor)
        let serials = try await store.certificates(for: device.id).map { "certificate:" + $0.serial }
        return try await store.auditEntries(subjects: ["device:" + device.id.rawValue] + serials.prefix(200), limit: limit)
    }
}

extension Registrar {
    /// Where device `id` stands with each release in `versions` (absent: never offered).
    /// - Throws: ``RegistryError`` `notFound` when `actor` may not see the device.
    public func updateStates(of id: DeviceID, versions: [String], as actor: Actor) async throws -> [String: UpdateState] {
        let device = try await device(id, as: actor)
        return try await store.transaction(audited: false) { transaction in
            var states: [String: UpdateState] = [:]
            for version in versions.prefix(100) {
                if let state = try await transaction.updateState(of: device.id, version: version) { states[version] = state }
            }
            return states
        }
    }
}
