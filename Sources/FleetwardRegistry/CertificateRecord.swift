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
