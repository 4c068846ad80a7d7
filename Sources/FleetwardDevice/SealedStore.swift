public import Crypto
public import Foundation
import FleetwardKeyCustody

/// The device-unique key: 32 random bytes that seal everything in the credential store. It lives
/// in a file of its own, meant for a separate partition (or to be replaced by a key the hardware
/// derives), never beside the sealed files, so a copy of the credential directory alone opens
/// nothing.
public struct DeviceUniqueKey: Sendable {
    public static let byteCount = 32
    let bytes: SymmetricKey

    /// Reads the key at `path`; with `createIfMissing`, makes a new one there first (0600, atomic).
    ///
    /// - Throws: ``DeviceError`` `.sealedStore` when the file is missing or not 32 bytes.
    public static func load(path: String, createIfMissing: Bool = false) throws -> DeviceUniqueKey {
        if createIfMissing, AtomicFile.permissions(of: path) == nil {
            try sealedStoreIO {
                try AtomicFile.makeDirectory(URL(fileURLWithPath: path).deletingLastPathComponent().path)
                var generator = SystemRandomNumberGenerator()
                let fresh = (0..<byteCount).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
                try AtomicFile.write(fresh, to: path, permissions: 0o600)
            }
        }
        // Like a CA key file: a key others can read is no secret.
        if let mode = AtomicFile.permissions(of: path), mode & 0o077 != 0 {
            throw DeviceError(
                .sealedStore,
                "the device-unique key \(path) can be read by others (mode \(String(mode, radix: 8))); make it 0600 (chmod 600 \(path))")
        }
        let bytes: [UInt8]
        do {
            bytes = try AtomicFile.read(path, limit: 4096)
        } catch let error as KeyCustodyError where error.code == .notFound {
            throw DeviceError(.sealedStore, "the device-unique key \(path) does not exist")
        } catch {
            throw DeviceError(.sealedStore, "cannot read the device-unique key: \(error)")
        }
        guard bytes.count == byteCount else {
            throw DeviceError(.sealedStore, "the device-unique key \(path) is damaged: \(bytes.count) bytes instead of \(byteCount)")
        }
        return DeviceUniqueKey(bytes: SymmetricKey(data: bytes))
    }

    /// A key for tests and simulated devices, never written anywhere.
    public static func ephemeral() -> DeviceUniqueKey { DeviceUniqueKey(bytes: SymmetricKey(size: .bits256)) }

    /// Seals `plaintext` as the file `name` of kind `kind` (ChaChaPoly under a key derived for
    /// that kind; kind and name are authenticated, so sealed files cannot be swapped).
    func seal(_ plaintext: some DataProtocol, kind: String, name: String) throws -> [UInt8] {
        let box = try ChaChaPoly.seal(plaintext, using: derived(kind), authenticating: Self.header(kind: kind, name: name))
        return Self.magic + Array(box.combined)
    }

    /// Opens what ``seal(_:kind:name:)`` made. Anything altered, truncated, renamed or sealed under
    /// another device-unique key is refused, without saying more.
    func open(_ sealed: [UInt8], kind: String, name: String, path: String) throws -> [UInt8] {
        let damaged = DeviceError(
            .sealedStore,
            "the sealed file \(path) cannot be opened: it was altered or truncated, or sealed under another device-unique key")
        guard sealed.count >= Self.magic.count + 12 + 16, sealed.starts(with: Self.magic) else { throw damaged }
        do {
            let box = try ChaChaPoly.SealedBox(combined: sealed.dropFirst(Self.magic.count))
            return Array(try ChaChaPoly.open(box, using: derived(kind), authenticating: Self.header(kind: kind, name: name)))
        } catch {
            throw damaged
        }
    }

    private func derived(_ kind: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: bytes, salt: Array("fleetward sealed store".utf8), info: Array("v1 \(kind)".utf8), outputByteCount: 32)
    }

    static let magic: [UInt8] = Array("FWSEAL1\n".utf8)

    static func header(kind: String, name: String) -> [UInt8] { magic + Array("\(kind)\u{0}\(name)".utf8) }
}

/// The software ``KeyCustody``: each P-256 key is made on the device and kept only sealed under
/// the device-unique key, one file per key (`<reference>.sealed`, 0600, written atomically with
/// fsync) in its own directory. The private key is never written in the clear and never returned.
public final class SealedKeyCustody: KeyCustody {
    public let directory: String
    private let uniqueKey: DeviceUniqueKey

    public init(directory: String, uniqueKey: DeviceUniqueKey) {
        self.directory = directory
        self.uniqueKey = uniqueKey
    }

    public func generateKey(purpose: KeyPurpose) throws -> any DeviceSigningKey {
        let key = EphemeralKey(P256.Signing.PrivateKey())
        let sealed = try uniqueKey.seal(key.privateKey.rawRepresentation, kind: "key", name: key.reference)
        try sealedStoreIO {
            try AtomicFile.makeDirectory(directory)
            try AtomicFile.write(sealed, to: path(key.reference), permissions: 0o600)
        }
        return key
    }

    public func key(reference: String) throws -> any DeviceSigningKey {
        guard KeyReference.isValid(reference) else { throw DeviceError(.sealedStore, "\(reference) is not a key reference") }
        let file = path(reference)
        let sealed: [UInt8]
        do {
            sealed = try AtomicFile.read(file, limit: 4096)
        } catch {
            throw DeviceError(.sealedStore, "the device key \(file) is missing or unreadable")
        }
        let raw = try uniqueKey.open(sealed, kind: "key", name: reference, path: file)
        guard let privateKey = try? P256.Signing.PrivateKey(rawRepresentation: raw) else {
            throw DeviceError(.sealedStore, "the sealed file \(file) holds no usable key")
        }
        let key = EphemeralKey(privateKey)
        guard key.reference == reference else { throw DeviceError(.sealedStore, "the sealed file \(file) holds another key") }
        return key
    }

    public func destroyKey(reference: String) throws {
        guard KeyReference.isValid(reference) else { return }
        if unlink(path(reference)) != 0, errno != ENOENT {
            throw DeviceError(.sealedStore, "cannot remove \(path(reference)): \(String(cString: strerror(errno)))")
        }
    }

    public func references() throws -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".sealed") }.map { String($0.dropLast(".sealed".count)) }.filter(KeyReference.isValid)
    }

    private func path(_ reference: String) -> String { directory + "/" + reference + ".sealed" }
}

/// What a device knows about itself, kept sealed in one file (`credential.sealed`) that is
/// replaced atomically: a renewal switches key and certificate together or not at all.
public struct DeviceCredential: Sendable, Codable, Equatable {
    /// The operational identity.
    public struct Operational: Sendable, Codable, Equatable {
        public var keyReference: String
        /// Leaf first, DER.
        public var chain: [Data]
        public var issuedAt: Date

        public init(keyReference: String, chain: [Data], issuedAt: Date) {
            self.keyReference = keyReference
            self.chain = chain
            self.issuedAt = issuedAt
        }
    }

    /// The factory identity: the key made on the device and, once the factory signed it, the birth certificate.
    public struct Birth: Sendable, Codable, Equatable {
        public var keyReference: String
        public var certificate: Data?

        public init(keyReference: String, certificate: Data? = nil) {
            self.keyReference = keyReference
            self.certificate = certificate
        }
    }

    public var deviceID: String
    public var operational: Operational?
    public var birth: Birth?
    /// The owner the gateway last named for this device.
    public var owner: String?
    /// The highest update manifest version this device accepted (anti-rollback).
    public var acceptedManifestVersion: UInt64
    /// The release version installed last (a lower one is refused unless signed as a downgrade).
    public var installedVersion: String?

    public init(
        deviceID: String, operational: Operational? = nil, birth: Birth? = nil, owner: String? = nil, acceptedManifestVersion: UInt64 = 0
    ) {
        self.deviceID = deviceID
        self.operational = operational
        self.birth = birth
        self.owner = owner
        self.acceptedManifestVersion = acceptedManifestVersion
    }
}

/// The device's credential directory: kept apart from anything a firmware update touches, 0700,
/// holding `credential.sealed` and the sealed keys under `keys/`. Nothing in it opens without the
/// device-unique key, which lives elsewhere.
public struct CredentialStore: Sendable {
    public let directory: String
    /// Where the device's keys live: sealed files under `keys/` by default, or a token
    /// (``TokenKeyCustody``: a secure element, a TPM, an HSM through PKCS#11).
    public let custody: any KeyCustody
    private let uniqueKey: DeviceUniqueKey

    public init(directory: String, uniqueKey: DeviceUniqueKey, custody: (any KeyCustody)? = nil) {
        self.directory = directory
        self.uniqueKey = uniqueKey
        self.custody = custody ?? SealedKeyCustody(directory: directory + "/keys", uniqueKey: uniqueKey)
    }

    public var credentialPath: String { directory + "/credential.sealed" }

    /// The stored credential, or nil when the device was never provisioned.
    public func load() throws -> DeviceCredential? {
        guard AtomicFile.permissions(of: credentialPath) != nil else { return nil }
        let sealed: [UInt8]
        do {
            sealed = try AtomicFile.read(credentialPath, limit: 1 << 20)
        } catch {
            throw DeviceError(.sealedStore, "cannot read \(credentialPath): \(error)")
        }
        let plain = try uniqueKey.open(sealed, kind: "credential", name: "credential", path: credentialPath)
        do {
            return try JSONDecoder().decode(DeviceCredential.self, from: Data(plain))
        } catch {
            throw DeviceError(.sealedStore, "\(credentialPath) opened but holds no credential")
        }
    }

    /// Replaces the stored credential (atomically, with fsync; 0600).
    public func save(_ credential: DeviceCredential) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let sealed = try uniqueKey.seal(try encoder.encode(credential), kind: "credential", name: "credential")
        try sealedStoreIO {
            try AtomicFile.makeDirectory(directory)
            try AtomicFile.write(sealed, to: credentialPath, permissions: 0o600)
        }
    }

    /// Destroys keys that no credential refers to (left by a renewal or enrollment that was
    /// interrupted before its certificate was stored).
    public func removeOrphanKeys(keeping credential: DeviceCredential?) throws {
        let kept = Set([credential?.operational?.keyReference, credential?.birth?.keyReference].compactMap { $0 })
        for reference in try custody.references() where !kept.contains(reference) {
            try custody.destroyKey(reference: reference)
        }
    }
}

/// Runs file work, naming failures as sealed-store errors.
func sealedStoreIO(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as DeviceError {
        throw error
    } catch {
        throw DeviceError(.sealedStore, "\(error)")
    }
}
