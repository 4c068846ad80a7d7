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

    public init(
        device: Device, registerIfMissing: Bool = false, acceptedStates: Set<DeviceState>, bindOwner: String? = nil,
        certificate: CertificateRecord, method: String, tokenHMAC: [UInt8]? = nil
    ) {
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
