public import FleetwardPKI
public import Foundation

/// A certificate the CA issued, as the registry keeps it: enough to list a device's
/// certificates, revoke them, and answer CRL and OCSP questions, never the key.
public struct CertificateRecord: Sendable, Equatable {
    /// The serial number, lowercase hex without a sign byte (as `openssl x509 -serial` prints, lower-cased).
    public var serial: String
    /// The registered device it was issued to, if any.
    public var deviceID: DeviceID?
    /// `device`, `birth`, `server` or `ocsp`.
    public var profile: String
    /// The device's owner when it was issued.
    public var owner: String?
    public var notBefore: Date
    public var notAfter: Date
    /// SHA-256 of the DER certificate, lowercase hex.
    public var sha256: String
    public var issuedAt: Date
    /// Set once revoked.
    public var revocation: Revocation?

    /// When and why a certificate was revoked (RFC 5280 §5.3.1 reason code).
    public struct Revocation: Sendable, Equatable {
        public var reason: Int
        public var time: Date

        public init(reason: Int, time: Date) {
            self.reason = reason
            self.time = time
        }
    }

    public init(
        serial: String, deviceID: DeviceID?, profile: String, owner: String?, notBefore: Date, notAfter: Date, sha256: String,
        issuedAt: Date, revocation: Revocation? = nil
    ) {
        self.serial = serial
        self.deviceID = deviceID
        self.profile = profile
        self.owner = owner
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.sha256 = sha256
        self.issuedAt = issuedAt
        self.revocation = revocation
    }

    /// The JSON shape of a certificate record.
    public struct PublicView: Codable, Sendable, Equatable {
        public var serial: String
        public var device: String?
        public var profile: String
        public var owner: String?
        public var notBefore: Date
        public var notAfter: Date
        public var sha256: String
        public var issuedAt: Date
        public var revoked: Bool
        public var revocationReason: Int?
        public var revokedAt: Date?
    }

    public var publicView: PublicView {
        PublicView(
            serial: serial, device: deviceID?.rawValue, profile: profile, owner: owner, notBefore: notBefore, notAfter: notAfter,
            sha256: sha256, issuedAt: issuedAt, revoked: revocation != nil, revocationReason: revocation?.reason,
            revokedAt: revocation?.time)
    }
}

/// RFC 5280 §5.3.1 CRLReason codes, by name.
public enum RevocationReason: Int, Sendable, CaseIterable, CustomStringConvertible {
    case unspecified = 0
    case keyCompromise = 1
    case cACompromise = 2
    case affiliationChanged = 3
    case superseded = 4
    case cessationOfOperation = 5
    case certificateHold = 6
    case removeFromCRL = 8
    case privilegeWithdrawn = 9
    case aACompromise = 10

    public var description: String {
        switch self {
        case .unspecified: "unspecified"
        case .keyCompromise: "keyCompromise"
        case .cACompromise: "cACompromise"
        case .affiliationChanged: "affiliationChanged"
        case .superseded: "superseded"
        case .cessationOfOperation: "cessationOfOperation"
        case .certificateHold: "certificateHold"
        case .removeFromCRL: "removeFromCRL"
        case .privilegeWithdrawn: "privilegeWithdrawn"
        case .aACompromise: "aACompromise"
        }
    }

    /// The reason named `name` (as RFC 5280 spells it, case-insensitive). `removeFromCRL` and
    /// `certificateHold` are refused: a revocation here is final.
    public init(name: String) throws {
        guard let reason = Self.allCases.first(where: { $0.description.lowercased() == name.lowercased() }),
            reason != .removeFromCRL, reason != .certificateHold
        else {
            let names = Self.allCases.filter { $0 != .removeFromCRL && $0 != .certificateHold }.map(\.description)
            throw RegistryError(.invalidInput, "the revocation reason must be one of \(names.joined(separator: ", "))")
        }
        self = reason
    }
}
