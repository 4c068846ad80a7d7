public import Foundation
import Crypto
public import FleetwardPKI
import SwiftASN1
public import X509

/// What a device checks before it writes anything of an update: the manifest is genuinely the
/// fleet's (signed by a `codesign` certificate that a pinned root issued), current, newer than
/// anything it accepted before, and meant for its model. Everything else (the artifact's size and
/// hash) is checked against the manifest once downloaded.
public struct ReleaseVerifier: Sendable {
    /// The signed manifest (unknown fields ignored).
    public typealias Manifest = ReleaseManifest

    public var roots: [Certificate]

    public init(roots: [Certificate]) { self.roots = roots }

    /// Checks `manifest` (its exact bytes), `signature` (DER ECDSA) and the `signer` certificate.
    ///
    /// - Parameters:
    ///   - acceptedVersion: the highest manifest version this device accepted before.
    /// - Throws: ``DeviceError`` `.updateRejected` saying which check failed; nothing else happens.
    public func verify(
        manifest bytes: [UInt8], signature: [UInt8], signer: Certificate, model: String, acceptedVersion: UInt64, now: Date = Date()
    ) throws -> Manifest {
        func refuse(_ why: String) -> DeviceError { DeviceError(.updateRejected, "update refused: \(why)") }
        guard
            roots.contains(where: { root in
                root.subject == signer.issuer && root.publicKey.isValidSignature(signer.signature, for: signer)
            })
        else { throw refuse("the manifest's signer is not certified by the pinned root") }
        guard signer.notValidBefore <= now, now <= signer.notValidAfter else {
            throw refuse("the release signing certificate is not valid now")
        }
        let identity = try? CertificateSummary.fleetwardIdentity(of: signer)
        let usages = (try? signer.extensions.extendedKeyUsage).flatMap { $0 }
        guard identity?.profile == .codesign, usages?.contains(.codeSigning) == true else {
            throw refuse("the manifest is not signed by a release signing (codesign) certificate")
        }
        guard let publicKey = P256.Signing.PublicKey(signer.publicKey),
            let ecdsa = try? P256.Signing.ECDSASignature(derRepresentation: signature),
            publicKey.isValidSignature(ecdsa, for: bytes)
        else { throw refuse("the manifest's signature does not verify") }
        guard let manifest = try? ReleaseManifest.decode(bytes) else {
            throw refuse("the signed manifest is not readable")
        }
        guard manifest.artifact.sha256.utf8.count == 64,
            manifest.artifact.sha256.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
            manifest.artifact.size > 0
        else { throw refuse("the manifest does not name an artifact by its SHA-256 and size") }
        guard now < manifest.expires else { throw refuse("the manifest expired at \(manifest.expires)") }
        guard manifest.manifestVersion > acceptedVersion else {
            throw refuse(
                "manifest \(manifest.manifestVersion) is not newer than \(acceptedVersion), the last one accepted (a replay or a rollback)")
        }
        guard manifest.models.contains(model) else {
            throw refuse("release \(manifest.version) is for \(manifest.models.joined(separator: ", ")), not \(model)")
        }
        return manifest
    }

    /// Whether a downloaded artifact is the one the manifest names (size, then SHA-256).
    public static func artifactMatches(_ manifest: Manifest, size: Int64, sha256: String) -> Bool {
        size == manifest.artifact.size && sha256.lowercased() == manifest.artifact.sha256
    }
}
