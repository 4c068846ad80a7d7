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
