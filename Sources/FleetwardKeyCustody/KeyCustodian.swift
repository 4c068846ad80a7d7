public import FleetwardPKI

/// Holds a CA's private keys and hands them out for signing.
///
/// The software implementation, ``EncryptedFileKeyCustodian``, keeps each key in an encrypted
/// PKCS#8 file; a PKCS#11 token (HSM) can implement the same protocol later.
public protocol KeyCustodian: Sendable {
    /// Generates a key of `type`, stores it under `name`, and returns it.
    ///
    /// - Throws: ``KeyCustodyError`` when the key cannot be stored.
    func generateKey(named name: String, type: KeyType) throws -> SigningKey

    /// Returns the key stored under `name`.
    ///
    /// - Throws: ``KeyCustodyError`` with `notFound`, `wrongPassphrase`, `malformedKey` or `insecurePermissions`.
    func loadKey(named name: String) throws -> SigningKey
}

/// Keeps keys as PBES2-encrypted PKCS#8 PEM files (`<directory>/<name>.key`, mode 0600).
///
/// OpenSSL opens these files with the same passphrase (`openssl pkey -in F -passin env:VAR`);
/// nothing opens them without it. A file readable by group or others is refused on load.
public struct EncryptedFileKeyCustodian: KeyCustodian {
    public let directory: String
    private let passphrase: Passphrase
    private let iterations: Int

    /// - Parameters:
    ///   - directory: Where the key files live.
    ///   - passphrase: Encrypts new keys and opens existing ones.
    ///   - iterations: PBKDF2 iterations for new keys.
    public init(directory: String, passphrase: Passphrase, iterations: Int = PBES2.defaultIterations) {
        self.directory = directory
        self.passphrase = passphrase
        self.iterations = iterations
    }

    /// The path of the key file for `name`.
    public func path(of name: String) -> String { directory + "/" + name + ".key" }

    public func generateKey(named name: String, type: KeyType) throws -> SigningKey {
        let key = SigningKey(generating: type)
        try store(key, named: name)
        return key
    }

    /// Encrypts `key` and writes it atomically under `name` with mode 0600.
    public func store(_ key: SigningKey, named name: String) throws {
        var rng = SystemRandomNumberGenerator()
        let encrypted: [UInt8]
        do {
            encrypted = try PBES2.encrypt(pkcs8: key.pkcs8DER, passphrase: passphrase.bytes, iterations: iterations, using: &rng)
        } catch {
            throw KeyCustodyError(.io, "cannot encrypt the \(name) key: \(error)", underlying: error)
        }
        try AtomicFile.write(Array(PEM.encode(encrypted, label: PBES2.pemLabel).utf8), to: path(of: name), permissions: 0o600)
    }

    public func loadKey(named name: String) throws -> SigningKey {
        let file = path(of: name)
        let bytes = try AtomicFile.read(file, limit: 64 * 1024)
        if let mode = AtomicFile.permissions(of: file), mode & 0o077 != 0 {
            throw KeyCustodyError(
                .insecurePermissions,
                "\(file) has mode \(String(mode, radix: 8)); private keys must be 600 (chmod 600 \(file))"
            )
        }
        do {
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw PKIError(.malformedInput, "not PEM text")
            }
            let blocks = try PEM.decodeAll(text)
            guard let block = blocks.first(where: { $0.label == PBES2.pemLabel }) else {
                if blocks.contains(where: { $0.label.hasSuffix("PRIVATE KEY") }) {
                    throw KeyCustodyError(.malformedKey, "\(file) holds an unencrypted private key; Fleetward only reads encrypted keys")
                }
                throw PKIError(.malformedInput, "no ENCRYPTED PRIVATE KEY block")
            }
            let pkcs8 = try PBES2.decrypt(block.der, passphrase: passphrase.bytes)
            return try SigningKey(pkcs8DER: pkcs8)
        } catch let error as KeyCustodyError {
            throw error
        } catch let error as PKIError where error.code == .wrongPassphrase {
            throw KeyCustodyError(.wrongPassphrase, "wrong passphrase for \(file)", underlying: error)
        } catch {
            throw KeyCustodyError(.malformedKey, "\(file) is not an encrypted key Fleetward can read: \(error)", underlying: error)
        }
    }
}
