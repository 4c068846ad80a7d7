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

    /// A token as handed to the device, and what the registry keeps of it.
    public struct Made: Sendable {
        public let token: String
        public let secretHMAC: [UInt8]
        public let expiresAt: Date
    }

    /// A new token living `lifetime` seconds.
    /// - Throws: ``AuthorityError`` `invalidRequest` for a lifetime outside 60 s to 30 days.
    public static func make(lifetime: TimeInterval = defaultLifetime, hasher: SecretHasher, now: Date = Date()) throws -> Made {
        guard lifetime >= 60, lifetime <= maximumLifetime else {
            throw AuthorityError(.invalidRequest, "an enrollment token lives 60 seconds to 30 days")
        }
        let token = "fwe_" + RandomText.base64URL(bytes: 32)
        return Made(token: token, secretHMAC: hasher.hash(Array(token.utf8)), expiresAt: now.addingTimeInterval(lifetime))
    }

    /// Makes a token for device `id` and stores it (bound to the device's owner); returns the
    /// token, shown once, and its record.
    public static func issue(
        for id: DeviceID, lifetime: TimeInterval = defaultLifetime, registrar: Registrar, hasher: SecretHasher, by actor: Actor,
        at time: Date
    ) async throws -> (token: String, record: EnrollmentTokenRecord) {
        let made = try make(lifetime: lifetime, hasher: hasher, now: time)
        let record = try await registrar.createEnrollmentToken(
            for: id, secretHMAC: made.secretHMAC, expiresAt: made.expiresAt, by: actor, at: time)
        return (made.token, record)
    }
}

/// Enrollment groups from a manufacturer CA certificate.
public enum EnrollmentGroups {
    /// A group for the CA certificate in `pem` (one PEM certificate, or DER).
    ///
    /// - Throws: ``RegistryError`` `invalidInput` when the name is empty or long, the input is
    ///   not one certificate, or the certificate is not a CA (basicConstraints cA).
    public static func make(
        name: String, caCertificate: [UInt8], autoApprove: Bool, idPattern: String? = nil, now: Date = Date()
    ) throws -> EnrollmentGroup {
        if let idPattern, !EnrollmentGroup.isValidPattern(idPattern) {
            throw AuthorityError(.invalidRequest, "an ID pattern is 1 to 64 letters, digits, '-', '.', '*' and '?'")
        }
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.unicodeScalars.count <= 100, !trimmed.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw AuthorityError(.invalidRequest, "a group name is 1 to 100 printable characters")
        }
        let der: [UInt8]
        let certificate: Certificate
        do {
            der = try PEM.derFromDEROrPEM(caCertificate, label: "CERTIFICATE")
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw AuthorityError(.invalidRequest, "caCertificate is not a PEM or DER X.509 certificate")
        }
        guard case .isCertificateAuthority = try? certificate.extensions.basicConstraints else {
            throw AuthorityError(.invalidRequest, "caCertificate is not a CA certificate (basicConstraints cA is not set)")
        }
        return EnrollmentGroup(
            id: RandomText.hex(bytes: 8), name: trimmed, caCertificateDER: der,
            caSHA256: SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined(), autoApprove: autoApprove, createdAt: now,
            idPattern: idPattern)
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

/// A device to register from what a manufacturer gives: an ID, a model, metadata, and exactly
/// one proof, a factory secret (kept only as its HMAC) or the SHA-256 of the device's public key.
public enum DeviceRegistrations {
    /// The device to register, its secret hashed.
    /// - Throws: ``AuthorityError`` `invalidRequest` naming the field that is out of range.
    public static func device(
        id: String, model: String, metadata: [String: String], secret: String?, keySHA256: String?, hasher: SecretHasher, at time: Date
    ) throws -> Device {
        let deviceID: DeviceID
        do {
            deviceID = try DeviceID(id)
        } catch {
            throw AuthorityError(.invalidRequest, "'id': \(error)", underlying: error)
        }
        // Lengths count characters (Unicode scalars), as the API's JSON Schema does.
        guard (1...100).contains(model.unicodeScalars.count), !model.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw AuthorityError(.invalidRequest, "'model' is 1 to 100 printable characters")
        }
        guard metadata.count <= 32, metadata.allSatisfy({ $0.key.unicodeScalars.count <= 64 && $0.value.unicodeScalars.count <= 1024 })
        else {
            throw AuthorityError(.invalidRequest, "'metadata' holds at most 32 entries, keys up to 64 and values up to 1024 characters")
        }
        let proof: EnrollmentProof
        switch (secret, keySHA256) {
        case (let secret?, nil):
            guard (SecretHasher.minimumSecretBytes...SecretHasher.maximumSecretBytes).contains(secret.unicodeScalars.count),
                secret.utf8.count >= SecretHasher.minimumSecretBytes
            else {
                throw AuthorityError(
                    .invalidRequest, "'secret' is \(SecretHasher.minimumSecretBytes) to \(SecretHasher.maximumSecretBytes) characters")
            }
            proof = .secret(hmac: hasher.hash(Array(secret.utf8)))
        case (nil, let fingerprint?):
            guard let bytes = Hex.bytes(Array(fingerprint.utf8)), bytes.count == 32 else {
                throw AuthorityError(.invalidRequest, "'keySHA256' is the 64 hex digits of the SHA-256 of the device's public key")
            }
            proof = .publicKey(sha256: bytes)
        default:
            throw AuthorityError(.invalidRequest, "give exactly one of 'secret' and 'keySHA256': an ID alone proves nothing")
        }
        return Device(id: deviceID, model: model, metadata: metadata, proof: proof, createdAt: time)
    }
}
