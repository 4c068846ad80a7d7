import Crypto
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
public import X509

/// A signed statement of where the audit log stood: its last entry's number and hash at a
/// moment, signed by the issuing CA's key (which the database does not hold).
///
/// The MACs on entries (``AuditSealer``) stop anyone without the sealed key from rewriting the
/// log; they cannot show that entries were removed from its end. A checkpoint kept off the host
/// can: `fleetward audit verify --checkpoint FILE` fails when the log no longer holds the entry
/// the checkpoint names, or holds another one in its place. Anyone can check the signature with
/// the issuing CA's certificate alone (`openssl dgst -sha256 -verify`).
public struct AuditCheckpoint: Codable, Sendable, Equatable {
    public var sequence: Int64
    /// The entry's hash, lower-case hex.
    public var hash: String
    public var time: Date
    /// SHA-256 of the signing certificate (the issuing CA), lower-case hex.
    public var signer: String
    /// Base64 DER ECDSA signature over ``signedBytes``.
    public var signature: String

    /// What is signed: `fleetward-audit-checkpoint-v1\n<sequence>\n<hash>\n<milliseconds>\n`.
    public var signedBytes: [UInt8] {
        Array("fleetward-audit-checkpoint-v1\n\(sequence)\n\(hash)\n\(Int64((time.timeIntervalSince1970 * 1000).rounded(.down)))\n".utf8)
    }

    /// A checkpoint of `head` signed with `key`, whose certificate is `signer`; its time in whole
    /// seconds, as the JSON file keeps it.
    public static func make(head: AuditEntry, key: SigningKey, signer: Certificate, signerDER: [UInt8], at time: Date) throws
        -> AuditCheckpoint
    {
        var checkpoint = AuditCheckpoint(
            sequence: head.sequence, hash: head.hash.hexString, time: Date(timeIntervalSince1970: time.timeIntervalSince1970.rounded(.down)),
            signer: SHA256.hash(data: signerDER).hexString, signature: "")
        checkpoint.signature = Data(try key.signature(for: checkpoint.signedBytes)).base64EncodedString()
        return checkpoint
    }

    /// Whether the signature verifies with `signer`'s key.
    public func isSigned(by signer: Certificate) -> Bool {
        guard let der = Data(base64Encoded: signature) else { return false }
        let message = signedBytes
        if let key = P256.Signing.PublicKey(signer.publicKey), let signature = try? P256.Signing.ECDSASignature(derRepresentation: der) {
            return key.isValidSignature(signature, for: message)
        }
        if let key = P384.Signing.PublicKey(signer.publicKey), let signature = try? P384.Signing.ECDSASignature(derRepresentation: der) {
            return key.isValidSignature(signature, for: message)
        }
        return false
    }

    /// How the log compares with the checkpoint.
    public enum Comparison: Sendable, Equatable {
        /// The log holds the entry the checkpoint names (and possibly more after it).
        case holds
        /// The log ends before the checkpoint's entry: entries were removed from its end.
        case truncated(logEnds: Int64)
        /// The log holds another entry under the checkpoint's number: it was rewritten.
        case rewritten
    }

    /// Reads a checkpoint file.
    /// - Throws: ``AuthorityError`` `invalidRequest` when it is not one.
    public static func read(_ path: String) throws -> AuditCheckpoint {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let data = FileManager.default.contents(atPath: path), data.count < 64 * 1024,
            let checkpoint = try? decoder.decode(AuditCheckpoint.self, from: data)
        else {
            throw AuthorityError(.invalidRequest, "\(path) is not an audit checkpoint")
        }
        return checkpoint
    }

    /// Compares the log in `store` with this checkpoint.
    public func compare(with store: any RegistryStore) async throws -> Comparison {
        guard let entry = try await store.auditEntries(from: sequence, limit: 1).first, entry.sequence == sequence else {
            return .truncated(logEnds: try await store.auditHead())
        }
        return entry.hash.hexString == hash ? .holds : .rewritten
    }
}
