/// What a leaf certificate is for: which CA issues it, for how long, with which extensions.
///
/// The profile, not the request, decides every extension (step-ca's `sign_options` work the
/// same way): a CSR contributes only its public key.
public enum CertificateProfile: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// A device's operational identity: TLS client, short-lived.
    case device
    /// A factory-issued identity usable only to enroll (its own policy OID marks it).
    case birth
    /// A TLS server (the gateway, the EST listener).
    case server
    /// A delegated OCSP responder (RFC 6960 §4.2.2.2).
    case ocsp
    /// The release signing key: codeSigning, issued by the root, signs update manifests only.
    case codesign

    public var description: String { rawValue }

    /// Lifetime when the caller gives none, in days.
    public var defaultDays: Int {
        switch self {
        case .device: 30
        case .birth: 3650  // capped at the factory CA's own expiry
        case .server: 90
        case .ocsp: 30
        case .codesign: 730
        }
    }

    /// The longest lifetime a caller may ask for, in days.
    public var maximumDays: Int {
        switch self {
        case .device: 825
        case .birth: 36_500
        case .server: 825
        case .ocsp: 365
        case .codesign: 1826
        }
    }

    /// Which CAs may sign this profile.
    public var allowedIssuers: Set<CARole> {
        switch self {
        case .device, .server: [.issuing]
        case .birth: [.factory]
        case .ocsp: [.issuing, .factory]
        case .codesign: [.root]
        }
    }

    /// The Fleetward certificate policy OID that marks this profile, as DER content bytes.
    ///
    /// Fleetward's arc is ``fleetwardArc``, derived from a random GUID under Microsoft's
    /// `1.2.840.113556.1.8000.2554` arc for unregistered OIDs, so every component fits in 32 bits
    /// (a `2.25.<UUID>` arc does not, and SwiftASN1 and older Go refuse to parse it).
    /// Under it: `.1.1` device, `.1.2` birth (enrollment only), `.1.3` server, `.1.4` OCSP responder,
    /// `.1.5` release signing.
    var policyOIDContent: [UInt8] {
        Self.arc + [0x01, policyArc]
    }

    private var policyArc: UInt8 {
        switch self {
        case .device: 1
        case .birth: 2
        case .server: 3
        case .ocsp: 4
        case .codesign: 5
        }
    }

    /// The dotted form of this profile's policy OID.
    public var policyOID: String { "\(Self.fleetwardArc).1.\(policyArc)" }

    /// The root of Fleetward's private OID arc.
    public static let fleetwardArc = "1.2.840.113556.1.8000.2554.41859.15517.20887.16429.36653.1713437.4589622"

    /// Finds the profile whose policy OID is `dotted`.
    public init?(policyOID dotted: String) {
        guard let match = Self.allCases.first(where: { $0.policyOID == dotted }) else { return nil }
        self = match
    }

    static let arc: [UInt8] = [
        0x2A, 0x86, 0x48, 0x86, 0xF7, 0x14, 0x01, 0xBE, 0x40, 0x93, 0x7A, 0x82, 0xC7, 0x03, 0xF9, 0x1D,
        0x81, 0xA3, 0x17, 0x81, 0x80, 0x2D, 0x82, 0x9E, 0x2D, 0xE8, 0xCA, 0x1D, 0x82, 0x98, 0x90, 0x36,
    ]
}

/// The role of a CA in the Fleetward hierarchy.
public enum CARole: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// The self-signed trust anchor.
    case root
    /// Signs operational device, server and OCSP certificates.
    case issuing
    /// Signs birth certificates at the factory.
    case factory

    public var description: String { rawValue }
}

/// Who a leaf certificate is for.
public enum CertificateIdentity: Sendable, Equatable {
    /// A device (profiles `device` and `birth`).
    case device(DeviceID)
    /// A server known by these names (profile `server`); the first is also its CN.
    case server([ServerName])
    /// The OCSP responder of the issuing CA (profile `ocsp`).
    case ocspResponder
    /// The fleet's release signer (profile `codesign`).
    case releaseSigner
}
