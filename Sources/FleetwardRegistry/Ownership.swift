public import FleetwardPKI
public import Foundation

/// A device owner: an end user or customer who claims, transfers and reports devices stolen
/// (DESIGN: provisioning flow 3). Owner tokens act for exactly one owner.
public struct Owner: Sendable, Equatable, Codable {
    /// 1 to 64 letters, digits, `-`, `_`, `.`, `@`.
    public var id: String
    /// A display name, if given.
    public var name: String?
    public var createdAt: Date

    public init(id: String, name: String? = nil, createdAt: Date) throws {
        guard Self.isValidID(id) else {
            throw RegistryError(.invalidInput, "an owner ID is 1 to 64 letters, digits, '-', '_', '.', '@'")
        }
        if let name, name.isEmpty || name.unicodeScalars.count > 200 || name.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            throw RegistryError(.invalidInput, "an owner name is 1 to 200 printable characters")
        }
        self.id = id
        self.name = name
        self.createdAt = createdAt
    }

    /// Whether `id` is a well-formed owner ID.
    public static func isValidID(_ id: String) -> Bool {
        (1...64).contains(id.utf8.count)
            && id.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: "@")
            }
    }
}

/// A device's claim code as stored: a salted PBKDF2 hash of the code printed on its label.
public struct ClaimCodeRecord: Sendable, Equatable {
    public var deviceID: DeviceID
    public var salt: [UInt8]
    public var hash: [UInt8]
    public var iterations: Int
    /// The owner who claimed the device with it, once used.
    public var claimedBy: String?
    public var claimedAt: Date?

    public init(deviceID: DeviceID, salt: [UInt8], hash: [UInt8], iterations: Int, claimedBy: String? = nil, claimedAt: Date? = nil) {
        self.deviceID = deviceID
        self.salt = salt
        self.hash = hash
        self.iterations = iterations
        self.claimedBy = claimedBy
        self.claimedAt = claimedAt
    }
}

/// A one-time enrollment token as stored: the HMAC of its secret, the device it is for, its expiry.
public struct EnrollmentTokenRecord: Sendable, Equatable {
    public var secretHMAC: [UInt8]
    public var deviceID: DeviceID
    /// The device's owner when the token was made; enrollment binds the device to them.
    public var owner: String?
    public var expiresAt: Date
    public var usedAt: Date?

    public init(secretHMAC: [UInt8], deviceID: DeviceID, owner: String?, expiresAt: Date, usedAt: Date? = nil) {
        self.secretHMAC = secretHMAC
        self.deviceID = deviceID
        self.owner = owner
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }
}

/// An enrollment group: a manufacturer CA whose devices are registered on first enrollment
/// (DESIGN: provisioning flow 4), active at once or `pending` until an operator approves them.
public struct EnrollmentGroup: Sendable, Equatable {
    public var id: String
    public var name: String
    /// The manufacturer CA certificate, DER.
    public var caCertificateDER: [UInt8]
    /// SHA-256 of `caCertificateDER`, lowercase hex.
    public var caSHA256: String
    public var autoApprove: Bool
    public var createdAt: Date
    /// The device IDs the group may register, as a pattern (`*` any run of characters, `?` one):
    /// `CAM-*`. Nil: any ID not yet registered.
    public var idPattern: String?

    public init(
        id: String, name: String, caCertificateDER: [UInt8], caSHA256: String, autoApprove: Bool, createdAt: Date,
        idPattern: String? = nil
    ) {
        self.idPattern = idPattern
        self.id = id
        self.name = name
        self.caCertificateDER = caCertificateDER
        self.caSHA256 = caSHA256
        self.autoApprove = autoApprove
        self.createdAt = createdAt
    }
}

/// Who may hand a device to whom: enforced in one place for every store.
public enum OwnershipRules {
    /// Checks that `actor` may transfer `device` to `newOwner`.
    ///
    /// The current owner's release is the transfer itself: only the device's owner (or an admin)
    /// may hand it on. Revoked and stolen devices cannot change hands.
    public static func checkTransfer(of device: Device, to newOwner: String, by actor: Actor) throws {
        switch actor.role {
        case .admin:
            break
        case .owner:
            guard let owner = actor.owner, owner == device.owner else {
                throw RegistryError(.forbidden, "only the device's owner may transfer it")
            }
        case .manufacturer, .operator, .metrics:
            throw RegistryError(.forbidden, "role \(actor.role) may not transfer a device")
        }
        guard device.state != .revoked, device.state != .stolen else {
            throw RegistryError(.illegalTransition, "a \(device.state) device cannot be transferred")
        }
        guard device.owner != newOwner else {
            throw RegistryError(.invalidInput, "device \(device.id) already belongs to \(newOwner)")
        }
    }

    /// Checks that `actor` may claim `device`: an owner token, a device nobody owns, not revoked or stolen.
    public static func checkClaim(of device: Device, by actor: Actor) throws -> String {
        guard actor.role == .owner, let owner = actor.owner else {
            throw RegistryError(.forbidden, "only an owner may claim a device")
        }
        guard device.state != .revoked, device.state != .stolen else {
            throw RegistryError(.illegalTransition, "a \(device.state) device cannot be claimed")
        }
        guard device.owner == nil else {
            throw RegistryError(.duplicate, "device \(device.id) is already claimed")
        }
        return owner
    }
}

extension EnrollmentGroup {
    /// Whether `pattern` is a well-formed ID pattern: 1 to 64 characters of device IDs, `*` and `?`.
    public static func isValidPattern(_ pattern: String) -> Bool {
        (1...64).contains(pattern.utf8.count)
            && pattern.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "*") || byte == UInt8(ascii: "?")
            }
    }

    /// Whether the group may register device `id`.
    public func admits(_ id: DeviceID) -> Bool {
        guard let idPattern else { return true }
        return Self.matches(Array(idPattern.utf8)[...], Array(id.rawValue.utf8)[...])
    }

    /// Glob matching with `*` and `?`, iterative (no backtracking blow-up).
    static func matches(_ pattern: ArraySlice<UInt8>, _ text: ArraySlice<UInt8>) -> Bool {
        var p = pattern.startIndex
        var t = text.startIndex
        var star: Int?
        var resume = t
        while t < text.endIndex {
            if p < pattern.endIndex, pattern[p] == UInt8(ascii: "?") || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") {
                star = p
                p += 1
                resume = t
            } else if let starAt = star {
                p = starAt + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.endIndex
    }
}
