public import FleetwardPKI
public import Foundation

/// One successful enrollment as the registry records it, in one transaction: the device (registered
/// on the spot for enrollment groups), its new state, the owner it is bound to, the certificate.
public struct EnrollmentRecord: Sendable, Equatable {
    /// The device as it would be registered if it is missing (used only when `registerIfMissing`).
    public var device: Device
    public var registerIfMissing: Bool
    /// The states the device may be in for this flow; anything else is refused.
    public var acceptedStates: Set<DeviceState>
    /// The owner a one-time enrollment token binds the device to.
    public var bindOwner: String?
    /// The certificate issued (its `owner` is filled in from the device).
    public var certificate: CertificateRecord
    /// How the device proved itself: `secret`, `public-key`, `token`, `birth`, `group`, `reenroll`.
    public var method: String
    /// The HMAC of the one-time enrollment token the device showed: spent in the same
    /// transaction, so a refused enrollment leaves the token unused.
    public var tokenHMAC: [UInt8]?
    /// The enrollment group whose manufacturer CA vouched for the device: it may enroll only a
    /// device that group registered.
    public var group: String?

    public init(
        device: Device, registerIfMissing: Bool = false, acceptedStates: Set<DeviceState>, bindOwner: String? = nil,
        certificate: CertificateRecord, method: String, tokenHMAC: [UInt8]? = nil, group: String? = nil
    ) {
        self.group = group
        self.tokenHMAC = tokenHMAC
        self.device = device
        self.registerIfMissing = registerIfMissing
        self.acceptedStates = acceptedStates
        self.bindOwner = bindOwner
        self.certificate = certificate
        self.method = method
    }
}

/// The decision every store applies inside its enrollment transaction.
public enum EnrollmentRules {
    /// The device after `record`, from the device as stored now (nil when not registered).
    ///
    /// - Throws: ``RegistryError`` `notFound` for an unknown device that may not be registered,
    ///   `forbidden` for a device in a state this flow does not accept (suspended, revoked,
    ///   stolen…), `duplicate` when a token would bind a device another owner holds.
    public static func apply(_ record: EnrollmentRecord, to stored: Device?, at time: Date) throws -> (device: Device, isNew: Bool) {
        var device: Device
        var isNew = false
        if let stored {
            device = stored
        } else if record.registerIfMissing {
            device = record.device
            device.createdAt = time
            isNew = true
        } else {
            throw RegistryError(.notFound, "no device \(record.device.id)")
        }
        if let group = record.group, device.group != group {
            throw RegistryError(.forbidden, "device \(device.id) was not registered by this enrollment group; it enrolls as it was registered")
        }
        guard record.acceptedStates.contains(device.state) else {
            throw RegistryError(.forbidden, "device \(device.id) is \(device.state); it cannot enroll this way")
        }
        if let owner = record.bindOwner {
            guard device.owner == nil || device.owner == owner else {
                throw RegistryError(.duplicate, "device \(device.id) belongs to another owner")
            }
            device.owner = owner
        }
        device.state = .active
        device.updatedAt = time
        return (device, isNew)
    }

    /// What a certificate under `group`'s manufacturer CA may do for device `id`, as stored now.
    public enum GroupAdmission: Sendable, Equatable {
        /// Register the device for the group; held `pending` for an operator when the group wants approval.
        case register(pending: Bool)
        /// The device waits for an operator's approval.
        case pending
        /// Enroll the device (it is the group's, allowed or active).
        case enroll
        /// Refused, with the reason.
        case refuse(String)
    }

    /// A group's proof counts only for the group's own devices: a new ID within its pattern, or a
    /// device it registered. A device registered any other way (allow-list, factory, another
    /// group) is never enrolled through a group, and an approval group holds every first enrollment.
    public static func admission(into group: EnrollmentGroup, of id: DeviceID, stored: Device?) -> GroupAdmission {
        guard let stored else {
            guard group.admits(id) else {
                return .refuse("device ID \(id) is outside the ID pattern of enrollment group \(group.name)")
            }
            return .register(pending: !group.autoApprove)
        }
        guard stored.group == group.id else {
            return .refuse("device \(id) was not registered by enrollment group \(group.name); it enrolls as it was registered")
        }
        return stored.state == .pending ? .pending : .enroll
    }

    /// Whether `token` may enroll device `id` at `time`: it is for that device, unused and unexpired.
    public static func isUsable(_ token: EnrollmentTokenRecord, for id: DeviceID, at time: Date) -> Bool {
        token.deviceID == id && token.usedAt == nil && token.expiresAt > time
    }

    /// The audit payload of an enrollment: method and certificate, never a secret.
    package static func auditJSON(_ record: EnrollmentRecord, _ device: Device) -> String {
        let owner = device.owner.map { "\"\(RegistryEncoding.jsonEscape($0))\"" } ?? "null"
        return
            "{\"state\":\"\(device.state)\",\"owner\":\(owner),\"method\":\"\(record.method)\",\"serial\":\"\(record.certificate.serial)\",\"profile\":\"\(record.certificate.profile)\"}"
    }
}
