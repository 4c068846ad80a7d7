/// Who may do what through the management API: every role check is here.
///
/// | operation | admin | manufacturer | operator | owner |
/// | --- | --- | --- | --- | --- |
/// | read devices | all | all | all | own only |
/// | create, import devices; set claim codes | ✓ | ✓ | | |
/// | suspend, resume, revoke, approve; revoke one certificate | ✓ | | ✓ | |
/// | report stolen, recover, transfer | ✓ | | | own only |
/// | claim a device | | | | ✓ |
/// | enrollment tokens | ✓ | | ✓ | own only |
/// | owners: list, create | ✓ | | ✓ | |
/// | groups: read | ✓ | ✓ | ✓ | |
/// | groups: create, delete | ✓ | | ✓ | |
/// | API tokens | ✓ | | | |
/// | audit log, security events | ✓ | | ✓ | |
/// | metrics (`GET /metrics`) | ✓ | | ✓ | |
/// | fleet overview (counts by state, certificates expiring) | ✓ | ✓ | ✓ | |
///
/// The `metrics` role (a Prometheus scraper) may read the metrics and nothing else.
///
/// An owner asking for another owner's device is told it does not exist (404), so device IDs
/// cannot be probed.
public enum AccessPolicy {
    /// Everything the management API does, by name.
    public enum Operation: Hashable, Sendable, CustomStringConvertible {
        case readDevices
        case createDevices
        case transition(LifecycleStateMachine.Event)
        case transfer
        case revokeCertificates
        case setClaimCode
        case claim
        case createEnrollmentToken
        case readOwners
        case createOwner
        case readGroups
        case manageGroups
        case readMQTTPolicies
        case manageMQTTPolicies
        case manageTokens
        case readAudit
        case readSecurityEvents
        case readMetrics
        case readFleetOverview

        public var description: String {
            switch self {
            case .readDevices: "read devices"
            case .createDevices: "register devices"
            case .transition(let event): "\(event) devices"
            case .transfer: "transfer devices"
            case .revokeCertificates: "revoke certificates"
            case .setClaimCode: "set claim codes"
            case .claim: "claim devices"
            case .createEnrollmentToken: "create enrollment tokens"
            case .readOwners: "read owners"
            case .createOwner: "create owners"
            case .readGroups: "read enrollment groups"
            case .manageGroups: "manage enrollment groups"
            case .readMQTTPolicies: "read MQTT policies"
            case .manageMQTTPolicies: "manage MQTT policies"
            case .manageTokens: "manage API tokens"
            case .readAudit: "read the audit log"
            case .readSecurityEvents: "read security events"
            case .readMetrics: "read the metrics"
            case .readFleetOverview: "read the fleet overview"
            }
        }
    }

    /// The roles allowed `operation`.
    public static func roles(for operation: Operation) -> Set<Role> {
        switch operation {
        case .readDevices: [.admin, .manufacturer, .operator, .owner]
        case .createDevices, .setClaimCode: [.admin, .manufacturer]
        case .transition(let event): LifecycleStateMachine.roles(for: event).subtracting(event == .activate ? [.operator] : [])
        case .transfer: [.admin, .owner]
        case .claim: [.owner]
        case .createEnrollmentToken: [.admin, .operator, .owner]
        case .readOwners, .createOwner, .revokeCertificates: [.admin, .operator]
        case .readGroups: [.admin, .manufacturer, .operator]
        case .manageGroups: [.admin, .operator]
        case .readMQTTPolicies: [.admin, .manufacturer, .operator]
        case .manageMQTTPolicies: [.admin, .operator]
        case .manageTokens: [.admin]
        case .readAudit, .readSecurityEvents: [.admin, .operator]
        case .readMetrics: [.admin, .operator, .metrics]
        case .readFleetOverview: [.admin, .manufacturer, .operator, .metrics]
        }
    }

    /// Throws ``RegistryError`` `forbidden` unless `actor` may do `operation`.
    public static func authorize(_ operation: Operation, _ actor: Actor) throws {
        guard roles(for: operation).contains(actor.role) else {
            throw RegistryError(.forbidden, "role \(actor.role) may not \(operation)")
        }
    }

    /// Whether `actor` may see `device` at all: owners see only their own.
    public static func canSee(_ device: Device, _ actor: Actor) -> Bool {
        actor.role != .owner || (actor.owner != nil && actor.owner == device.owner)
    }

    /// The filter `actor` may list with: an owner's listing is always narrowed to their devices.
    public static func scoped(_ filter: DeviceFilter, _ actor: Actor) throws -> DeviceFilter {
        guard actor.role == .owner else { return filter }
        guard let owner = actor.owner else { throw RegistryError(.forbidden, "an owner token without an owner") }
        if let asked = filter.owner, asked != owner {
            throw RegistryError(.forbidden, "an owner may list only their own devices")
        }
        var narrowed = filter
        narrowed.owner = owner
        return narrowed
    }
}
