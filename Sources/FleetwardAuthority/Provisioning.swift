public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import Crypto
import SwiftASN1
import X509

/// One-time enrollment tokens: `fwe_<secret>` handed to a device (EST Basic password, with the
/// device ID as user name); the registry keeps only the HMAC of the secret.
public enum EnrollmentTokens {
    /// The longest a token may live.
    public static let maximumLifetime: TimeInterval = 30 * 86_400
    public static let defaultLifetime: TimeInterval = 86_400

    public struct Created: Sendable {
        public let token: String
        public let record: EnrollmentTokenRecord
    }

    public static func make(
        for device: DeviceID, owner: String?, lifetime: TimeInterval = defaultLifetime, hasher: SecretHasher, now: Date = Date()
    ) throws -> Created {
        guard lifetime >= 60, lifetime <= maximumLifetime else {
            throw RegistryError(.invalidInput, "an enrollment token lives 60 seconds to 30 days")
        }
        let token = "fwe_" + RandomText.base64URL(bytes: 32)
        let record = EnrollmentTokenRecord(
            secretHMAC: hasher.hash(Array(token.utf8)), deviceID: device, owner: owner, expiresAt: now.addingTimeInterval(lifetime))
        return Created(token: token, record: record)
    }
}

/// Enrollment groups from a manufacturer CA certificate.
public enum EnrollmentGroups {
    /// A group for the CA certificate in `pem` (one PEM certificate, or DER).
    ///
    /// - Throws: ``RegistryError`` `invalidInput` when the name is empty or long, the input is
    ///   not one certificate, or the certificate is not a CA (basicConstraints cA).
    public static func make(name: String, caCertificate: [UInt8], autoApprove: Bool, now: Date = Date()) throws -> EnrollmentGroup {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.utf8.count <= 100, !trimmed.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw RegistryError(.invalidInput, "a group name is 1 to 100 printable characters")
        }
        let der: [UInt8]
        let certificate: Certificate
        do {
            der = try PEM.derFromDEROrPEM(caCertificate, label: "CERTIFICATE")
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw RegistryError(.invalidInput, "caCertificate is not a PEM or DER X.509 certificate")
        }
        guard case .isCertificateAuthority = try? certificate.extensions.basicConstraints else {
            throw RegistryError(.invalidInput, "caCertificate is not a CA certificate (basicConstraints cA is not set)")
        }
        return EnrollmentGroup(
            id: RandomText.hex(bytes: 8), name: trimmed, caCertificateDER: der,
            caSHA256: SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined(), autoApprove: autoApprove, createdAt: now)
    }
}

/// Random identifiers and secrets.
enum RandomText {
    static func bytes(_ count: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    static func hex(bytes count: Int) -> String { bytes(count).map { String(format: "%02x", $0) }.joined() }

    static func base64URL(bytes count: Int) -> String {
        Data(bytes(count)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
