public import FleetwardPKI
public import Foundation

/// What a device shows to prove it is the device on the allow-list (DESIGN: provisioning flow 1).
public enum EnrollmentProof: Sendable, Equatable {
    /// HMAC-SHA-256 of the per-device factory secret under the registry's secret key.
    case secret(hmac: [UInt8])
    /// SHA-256 of the device key's DER SubjectPublicKeyInfo, read at the factory.
    case publicKey(sha256: [UInt8])
    /// No proof recorded (e.g. registered by an enrollment group).
    case none

    /// `secret`, `public-key` or `none`: what an API or listing may show (never the HMAC).
    public var kind: String {
        switch self {
        case .secret: "secret"
        case .publicKey: "public-key"
        case .none: "none"
        }
    }
}

/// One device in the registry.
public struct Device: Sendable, Equatable {
    public var id: DeviceID
    public var state: DeviceState
    public var owner: String?
    public var model: String
    public var metadata: [String: String]
    public var proof: EnrollmentProof
    public var createdAt: Date
    public var updatedAt: Date
    /// While `stolen`: the state the device was reported stolen from, which ``LifecycleStateMachine``
    /// returns it to on recovery (so a theft report cannot lift a suspension or skip an approval).
    public var stateBeforeTheft: DeviceState?
    /// The enrollment group that registered the device on its first enrollment: only that
    /// group's manufacturer CA can enroll it again. Nil for devices registered any other way,
    /// which no group can enroll.
    public var group: String?
    /// Who registered the device (an API token's ID, `console`, `est:…`): a manufacturer's token
    /// acts only on the devices it registered.
    public var registeredBy: String?

    public init(
        id: DeviceID, state: DeviceState = .allowed, owner: String? = nil, model: String,
        metadata: [String: String] = [:], proof: EnrollmentProof, createdAt: Date, updatedAt: Date? = nil,
        stateBeforeTheft: DeviceState? = nil, group: String? = nil, registeredBy: String? = nil
    ) {
        self.stateBeforeTheft = stateBeforeTheft
        self.group = group
        self.registeredBy = registeredBy
        self.id = id
        self.state = state
        self.owner = owner
        self.model = model
        self.metadata = metadata
        self.proof = proof
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }

    /// The device as an API or `devices show --json` presents it: no secret material.
    public var publicView: PublicView {
        var fingerprint: String?
        if case .publicKey(let sha256) = proof { fingerprint = sha256.hexString }
        return PublicView(
            id: id.rawValue, state: state.rawValue, owner: owner, model: model, metadata: metadata,
            proof: proof.kind, keySHA256: fingerprint, group: group, createdAt: createdAt, updatedAt: updatedAt
        )
    }

    /// The JSON shape of a device.
    public struct PublicView: Codable, Sendable, Equatable {
        public var id: String
        public var state: String
        public var owner: String?
        public var model: String
        public var metadata: [String: String]
        public var proof: String
        public var keySHA256: String?
        /// The enrollment group that registered it, if one did.
        public var group: String?
        public var createdAt: Date
        public var updatedAt: Date
    }
}

/// Filters for listing devices.
public struct DeviceFilter: Sendable, Equatable {
    public var state: DeviceState?
    public var owner: String?
    public var model: String?

    public init(state: DeviceState? = nil, owner: String? = nil, model: String? = nil) {
        self.state = state
        self.owner = owner
        self.model = model
    }
}
