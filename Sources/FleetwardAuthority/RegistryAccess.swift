public import FleetwardKeyCustody
public import FleetwardRegistry
import FleetwardRegistryPostgres
import FleetwardRegistrySQLite
public import Foundation
import Crypto

/// Opens the registry of a data directory: the embedded SQLite store, migrated.
public enum RegistryAccess {
    /// The store for `directory`, with migrations applied: PostgreSQL at `databaseURL` when given,
    /// else SQLite at `DIR/registry.sqlite`.
    public static func openStore(_ directory: DataDirectory, databaseURL: String? = nil) async throws -> any RegistryStore {
        guard FileManager.default.fileExists(atPath: directory.configurationPath) else {
            throw AuthorityError(
                .notInitialized,
                "\(directory.path) holds no Fleetward CA; run 'fleetward init --data \(directory.path)' first"
            )
        }
        let store: any RegistryStore
        if let databaseURL {
            store = try PostgresRegistryStore(url: databaseURL)
        } else {
            store = try SQLiteRegistryStore(path: directory.registryDatabasePath)
        }
        _ = try await store.migrate()
        return store
    }

    /// The hasher for factory secrets and tokens, opening (or on first use creating) the sealed registry key.
    public static func openHasher(_ directory: DataDirectory, passphrase: Passphrase) throws -> SecretHasher {
        SecretHasher(key: try SealedSecretKey.openOrCreate(at: directory.registryKeyPath, passphrase: passphrase))
    }
}

/// Creates API tokens: `fwt_<id>_<secret>`, shown once; the registry keeps the ID and an HMAC of the secret.
public enum APITokens {
    /// A token as handed to its holder, and the record stored.
    public struct Created: Sendable {
        public let token: String
        public let record: APITokenRecord
    }

    /// - Parameter lifetime: how long the token is valid (nil: until revoked); 1 minute to 10 years.
    public static func make(role: Role, owner: String?, lifetime: TimeInterval? = nil, hasher: SecretHasher, now: Date = Date()) throws
        -> Created
    {
        if let lifetime, !(60...3650 * 86_400).contains(lifetime) {
            throw AuthorityError(.invalidRequest, "a token's lifetime is 1 minute to 10 years")
        }
        if role == .owner {
            guard let owner, Owner.isValidID(owner) else {
                throw AuthorityError(.invalidRequest, "an owner token needs an owner ID (1 to 64 letters, digits, '-', '_', '.', '@')")
            }
        } else if owner != nil {
            throw AuthorityError(.invalidRequest, "only owner tokens have an owner")
        }
        let id = RandomText.hex(bytes: 8)
        let secret = RandomText.base64URL(bytes: 32)
        let record = APITokenRecord(
            id: id, secretHMAC: hasher.hash(Array(secret.utf8)), role: role, owner: owner, createdAt: now,
            expiresAt: lifetime.map { now.addingTimeInterval($0) }
        )
        return Created(token: "fwt_\(id)_\(secret)", record: record)
    }

}
