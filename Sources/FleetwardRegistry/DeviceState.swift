/// Where a device is in its life (see DESIGN: device lifecycle).
public enum DeviceState: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// On the allow-list, never enrolled.
    case allowed
    /// Registered by an enrollment group that needs an operator's approval.
    case pending
    /// Holds a valid operational certificate; the gateway lets it in.
    case active
    /// Temporarily barred; can be resumed.
    case suspended
    /// Decommissioned for good.
    case revoked
    /// Reported stolen by its owner; only the owner or an admin can recover it.
    case stolen

    public var description: String { rawValue }
}

/// The roles an API token or console user acts with.
public enum Role: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case admin
    case manufacturer
    case `operator`
    case owner
    /// A Prometheus scraper: reads `/metrics` and nothing else.
    case metrics

    public var description: String { rawValue }
}

/// Who performs an action, as recorded in the audit log.
public struct Actor: Sendable, Equatable, CustomStringConvertible {
    public var role: Role
    /// A token's ID, `console`, or a device ID for enrollment.
    public var name: String
    /// For the owner role: the owner the token belongs to.
    public var owner: String?

    public init(role: Role, name: String, owner: String? = nil) {
        self.role = role
        self.name = name
        self.owner = owner
    }

    /// The administrator at the console, acting on the data directory directly.
    public static let console = Actor(role: .admin, name: "console")

    public var description: String { owner.map { "\(role):\(name) (owner \($0))" } ?? "\(role):\(name)" }
}
