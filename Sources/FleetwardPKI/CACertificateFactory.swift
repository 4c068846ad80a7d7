public import Foundation
public import X509
import Crypto
import SwiftASN1

/// Builds the CA certificates of a Fleetward hierarchy: a self-signed root, and issuing and
/// factory intermediates signed by it.
///
/// Root: basicConstraints CA, pathLen 1; intermediates: CA, pathLen 0. All carry a critical
/// keyUsage of keyCertSign and cRLSign, a subjectKeyIdentifier (SHA-1 of the key bits, RFC 5280
/// §4.2.1.2) and an authorityKeyIdentifier (the root's refers to itself).
public enum CACertificateFactory {
    /// The longest organization name accepted: "<org> Factory CA" must fit the 64-character CN limit.
    public static let maximumOrganizationLength = 48

    /// Checks an organization name for use in subjects.
    public static func validateOrganization(_ name: String) throws {
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw PKIError(.invalidIdentity, "the organization name cannot be empty")
        }
        guard name.count <= maximumOrganizationLength else {
            throw PKIError(
                .invalidIdentity, "the organization name has \(name.count) characters; the limit is \(maximumOrganizationLength)")
        }
        guard name.unicodeScalars.allSatisfy({ !CharacterSet.controlCharacters.contains($0) }) else {
            throw PKIError(.invalidIdentity, "the organization name contains control characters")
        }
    }

    /// The subject of the CA with `role` in `organization`'s hierarchy.
    public static func subject(for role: CARole, organization: String) throws -> DistinguishedName {
        let commonName: String
        switch role {
        case .root: commonName = "\(organization) Root CA"
        case .issuing: commonName = "\(organization) Issuing CA"
        case .factory: commonName = "\(organization) Factory CA"
        }
        return try DistinguishedName {
            OrganizationName(organization)
            CommonName(commonName)
        }
    }

    /// Makes the self-signed root certificate.
    public static func makeRoot(
        key: SigningKey,
        organization: String,
        days: Int,
        now: Date,
        using rng: inout some RandomNumberGenerator
    ) throws -> Certificate {
        try validateOrganization(organization)
        let name = try subject(for: .root, organization: organization)
        let keyID = keyIdentifier(of: key.publicKey)
        return try Certificate(
            version: .v3,
            serialNumber: SerialNumberGenerator.make(at: now, using: &rng),
            publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-60),
            notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: name,
            subject: name,
            signatureAlgorithm: key.signatureAlgorithm,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 1))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(keyIdentifier: keyID)
                AuthorityKeyIdentifier(keyIdentifier: keyID)
            },
            issuerPrivateKey: key.certificatePrivateKey
        )
    }

    /// Makes an intermediate (issuing or factory) certificate signed by the root.
    ///
    /// Its lifetime is capped at the root's own expiry.
    public static func makeIntermediate(
        role: CARole,
        key: SigningKey,
        organization: String,
        days: Int,
        root: Certificate,
        rootKey: SigningKey,
        now: Date,
        using rng: inout some RandomNumberGenerator
    ) throws -> Certificate {
        guard role != .root else {
            throw PKIError(.invalidRequest, "an intermediate cannot have the root role")
        }
        guard root.publicKey == rootKey.publicKey else {
            throw PKIError(.invalidRequest, "the root key does not match the root certificate")
        }
        return try Certificate(
            version: .v3,
            serialNumber: SerialNumberGenerator.make(at: now, using: &rng),
            publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-60),
            notValidAfter: min(now.addingTimeInterval(Double(days) * 86_400), root.notValidAfter),
            issuer: root.subject,
            subject: try subject(for: role, organization: organization),
            signatureAlgorithm: rootKey.signatureAlgorithm,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(keyIdentifier: keyIdentifier(of: key.publicKey))
                AuthorityKeyIdentifier(keyIdentifier: keyIdentifier(of: rootKey.publicKey))
            },
            issuerPrivateKey: rootKey.certificatePrivateKey
        )
    }

    /// SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1).
    public static func keyIdentifier(of key: Certificate.PublicKey) -> ArraySlice<UInt8> {
        ArraySlice(Insecure.SHA1.hash(data: key.subjectPublicKeyInfoBytes))
    }
}
