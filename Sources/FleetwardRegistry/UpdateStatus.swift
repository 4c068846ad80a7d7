public import FleetwardPKI
public import Foundation

/// Where one device stands with one release: what the gateway offered it and what it reported.
public enum UpdateState: String, Sendable, Codable, CaseIterable {
    /// The gateway answered the device's update check with this release.
    case offered
    case downloading
    case downloaded
    /// Installed into the inactive slot, switched to, and the health check passed.
    case installed
    /// Refused (signature, hash, size…) or could not be installed; the device stayed where it was.
    case failed
    /// Switched to, then the health check failed and the device switched back.
    case rolledBack = "rolled-back"
}

/// A device's latest update state for one release version.
public struct UpdateReport: Sendable, Equatable {
    public var device: DeviceID
    public var version: String
    public var state: UpdateState
    /// What the device said (why it failed or rolled back), at most 500 characters.
    public var detail: String?

    public init(device: DeviceID, version: String, state: UpdateState, detail: String? = nil) {
        self.device = device
        self.version = version
        self.state = state
        self.detail = detail.map { String($0.prefix(500)) }
    }
}

extension UpdateReport {
    /// The conflict clause of the upsert both stores run, keeping one row per (device, version): a
    /// report replaces the row, except that an offer never overwrites what the device reported.
    public static let upsertConflictClause = """
        ON CONFLICT (device_id, version) DO UPDATE SET state = excluded.state, detail = excluded.detail,
            updated_at = excluded.updated_at
        WHERE excluded.state <> 'offered'
        """
}
