public import Foundation
public import FleetwardPKI
public import FleetwardKeyCustody
import Synchronization

/// Issues certificates under a loaded hierarchy: picks the CA for the profile, checks that the
/// CSR names no one but the identity given, and signs.
///
/// CA keys are opened on first use and kept in memory for the authority's lifetime.
public final class CertificateAuthority: Sendable {
    public let hierarchy: CAHierarchy
    private let custodian: any KeyCustodian
    private let issuers = Mutex<[CARole: CertificateIssuer]>([:])

    public init(hierarchy: CAHierarchy, custodian: any KeyCustodian) {
        self.hierarchy = hierarchy
        self.custodian = custodian
    }

    /// The issuer for `role`, opening its key the first time.
    public func issuer(for role: CARole) throws -> CertificateIssuer {
        if let cached = issuers.withLock({ $0[role] }) { return cached }
        let issuer = try hierarchy.makeIssuer(for: role, custodian: custodian)
        issuers.withLock { $0[role] = issuer }
        return issuer
    }

    /// Issues a certificate of `profile` for `identity` from a checked CSR.
    ///
    /// - Parameters:
    ///   - issuerRole: For the `ocsp` profile, which CA the responder answers for (default issuing).
    ///     Other profiles have exactly one CA.
    /// - Throws: ``PKIError`` (`identityMismatch`, `invalidRequest`), ``KeyCustodyError`` when the key will not open.
    public func issue(
        _ request: CertificateRequest,
        profile: CertificateProfile,
        identity: CertificateIdentity,
        issuerRole: CARole? = nil,
        days: Int? = nil,
        lifetime: TimeInterval? = nil,
        now: Date = Date()
    ) throws -> IssuedCertificate {
        try request.requireSubject(matching: identity)
        let role: CARole
        if let issuerRole {
            guard profile.allowedIssuers.contains(issuerRole) else {
                throw PKIError(.invalidRequest, "profile \(profile) cannot be issued by the \(issuerRole) CA")
            }
            role = issuerRole
        } else {
            role = profile.allowedIssuers.contains(.issuing) ? .issuing : .factory
        }
        var rng = SerialRandomSource()
        return try issuer(for: role).issue(
            request, profile: profile, identity: identity, days: days, lifetime: lifetime, now: now, using: &rng)
    }
}
