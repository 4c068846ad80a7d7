public import FleetwardAuthority
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import FleetwardKeyCustody
import HTTPTypes
import Synchronization

/// The CRLs Fleetward publishes (RFC 5280 §5): one per CA, DER, signed by that CA.
///
/// The issuing CA's lists revoked device, server and OCSP-responder certificates, the factory
/// CA's revoked birth certificates, and the root's the intermediates it revoked (none can be
/// revoked yet, so it is empty, but relying parties such as nginx's `ssl_crl` need one for
/// every level of the chain). A list is rebuilt when the number of revocations in the registry
/// changes (checked at most once a second, whichever process revoked) and at half its lifetime;
/// its cRLNumber is its thisUpdate in milliseconds, so it only grows, across restarts and nodes.
public final class RevocationPublisher: Sendable {
    /// How long a CRL is valid (nextUpdate − thisUpdate).
    public static let lifetime: TimeInterval = 24 * 3600
    /// The paths served, by CA.
    public static let paths: [CARole: String] = [.issuing: "/crl/issuing.crl", .factory: "/crl/factory.crl", .root: "/crl/root.crl"]

    struct Published: Sendable {
        var der: [UInt8]
        var revocations: Int
        /// The certificates on hold (suspended devices) it lists.
        var held: [RevokedEntry]
        var thisUpdate: Date
        var checked: Date
    }

    let authority: CertificateAuthority
    let store: any RegistryStore
    let now: @Sendable () -> Date
    private let published = Mutex<[CARole: Published]>([:])

    public init(authority: CertificateAuthority, store: any RegistryStore, now: @escaping @Sendable () -> Date = Date.init) {
        self.authority = authority
        self.store = store
        self.now = now
    }

    /// The profiles whose revoked certificates appear on `role`'s CRL.
    static func profiles(of role: CARole) -> [String] {
        switch role {
        // The root signs intermediates (not recorded) and the release signing certificate.
        case .root: [CertificateProfile.codesign.rawValue]
        case .issuing, .factory:
            // The registry does not record which CA signed an OCSP responder's certificate; revoked
            // responders are listed by the issuing CA.
            CertificateProfile.allCases.filter { profile in
                role == .issuing ? profile.allowedIssuers.contains(.issuing) : profile.allowedIssuers == [.factory]
            }.map(\.rawValue)
        }
    }

    /// The current DER CRL of `role`'s CA.
    ///
    /// The root's key may be kept off this host (`serve` needs only the issuing and factory
    /// keys): then the root CRL is the one `fleetward ca root-crl` signed ahead of time and left
    /// in `DIR/ca/root.crl`, served until its nextUpdate.
    public func crl(of role: CARole) async throws -> [UInt8] {
        let directory = authority.hierarchy.directory
        if role == .root, !FileManager.default.fileExists(atPath: directory.path + "/" + DataDirectory.keyName(of: .root) + ".key") {
            return try offlineRootCRL()
        }
        return try await onlineCRL(of: role)
    }

    /// The root CRL signed offline, while it is valid.
    private func offlineRootCRL() throws -> [UInt8] {
        let path = authority.hierarchy.directory.offlineRootCRLPath
        guard let der = try? AtomicFile.read(path, limit: 16 << 20), let nextUpdate = try? CRLReader.nextUpdate(der), nextUpdate > now()
        else {
            throw HTTPProblem(
                .serviceUnavailable,
                "the root CA's key is kept off this host and its signed CRL is missing or expired; run 'fleetward ca root-crl' where the key is")
        }
        return der
    }

    private func onlineCRL(of role: CARole) async throws -> [UInt8] {
        let time = now()
        if let current = published.withLock({ $0[role] }), time.timeIntervalSince(current.checked) < 1 {
            return current.der
        }
        let revocations = try await store.revocationCount()
        let profiles = Self.profiles(of: role)
        // Certificates of suspended devices are on hold: listed while the suspension lasts, gone
        // from the next list once it is lifted, so relying parties (nginx, mosquitto) refuse them too.
        let held = profiles.isEmpty ? [] : try await store.heldCertificates(profiles: profiles)
        if let current = published.withLock({ $0[role] }), current.revocations == revocations, current.held == held,
            time.timeIntervalSince(current.thisUpdate) < Self.lifetime / 2
        {
            published.withLock { $0[role]?.checked = time }
            return current.der
        }
        let revoked = profiles.isEmpty ? [] : try await store.revokedCertificates(profiles: profiles)
        let entries = (revoked + held).sorted { $0.serialHex < $1.serialHex }
        let issuer = try authority.issuer(for: role)
        let der = try issuer.revocationList(
            entries: entries, number: UInt64(max(0, time.timeIntervalSince1970 * 1000)), thisUpdate: time,
            nextUpdate: time.addingTimeInterval(Self.lifetime))
        published.withLock { $0[role] = Published(der: der, revocations: revocations, held: held, thisUpdate: time, checked: time) }
        return der
    }
}
