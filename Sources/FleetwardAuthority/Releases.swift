public import FleetwardKeyCustody
public import FleetwardPKI
public import Foundation
public import Crypto
public import X509
import SwiftASN1

/// One published release as the operator sees it.
public struct PublishedRelease: Sendable {
    public var manifest: ReleaseManifest
    /// The exact signed bytes and their signature (DER ECDSA-SHA256).
    public var manifestBytes: [UInt8]
    public var signature: [UInt8]
    public var halted: Bool
    public var manifestPath: String
    public var signaturePath: String
    public var artifactPath: String
}

/// Releases in the data directory: the release signing key and certificate (`codesign`, issued
/// by the root, key encrypted like the CA keys), artifacts stored content-addressed under
/// `releases/artifacts/<sha256>`, and each manifest as `releases/manifests/<n>.json` with its
/// signature `<n>.sig`; halted releases are listed in `releases/halted.json`. Files are written
/// atomically.
public struct ReleaseRepository: Sendable {
    public static let signingKeyName = "releases/signing"

    public let directory: DataDirectory

    public init(directory: DataDirectory) { self.directory = directory }

    public var root: String { directory.path + "/releases" }
    public var artifactsDirectory: String { root + "/artifacts" }
    public var manifestsDirectory: String { root + "/manifests" }
    /// The release signing certificate (PEM), for devices and for `openssl`.
    public var signingCertificatePath: String { root + "/signing.pem" }
    public var haltedPath: String { root + "/halted.json" }
    /// The content keys of encrypted images, each sealed (AES-256-GCM) under ``contentKeySealPath``.
    public var contentKeysDirectory: String { root + "/keys" }
    /// The key that seals content keys: 256 bits, itself sealed under the passphrase (PBES2), 0600.
    public var contentKeySealPath: String { root + "/content-keys.key" }

    // MARK: The signing key

    /// The release signing key and certificate, made on first use: a P-256 key encrypted under the
    /// passphrase, certified by the root with the `codesign` profile (never the issuing CA's key).
    /// Returns whether it was made now.
    public func signer(authority: CertificateAuthority, custodian: any KeyCustodian, now: Date = Date()) throws
        -> (key: SigningKey, certificate: Certificate, made: Bool)
    {
        if let pem = try? AtomicFile.read(signingCertificatePath, limit: 1 << 16) {
            let certificate = try Certificate(pemEncoded: String(decoding: pem, as: UTF8.self))
            let key = try custodian.loadKey(named: Self.signingKeyName)
            guard key.publicKey == certificate.publicKey else {
                throw AuthorityError(.invalidConfiguration, "the release signing key does not match \(signingCertificatePath)")
            }
            guard now < certificate.notValidAfter else {
                throw AuthorityError(.invalidConfiguration, "the release signing certificate expired on \(certificate.notValidAfter)")
            }
            return (key, certificate, false)
        }
        try AtomicFile.makeDirectory(root)
        let key = try custodian.generateKey(named: Self.signingKeyName, type: .p256)
        var rng = SystemRandomNumberGenerator()
        let issued = try authority.issuer(for: .root).issue(
            publicKey: key.publicKey, profile: .codesign, identity: .releaseSigner, now: now, using: &rng)
        try AtomicFile.write(Array(issued.pem.utf8), to: signingCertificatePath, permissions: 0o644)
        return (key, try Certificate(derEncoded: issued.der), true)
    }

    // MARK: Publishing

    /// Stores `file` content-addressed (streamed, hashed as it is copied; `progress` gets bytes
    /// done and total) and writes its manifest, signed, with the next manifest version.
    ///
    /// With `encryptUnder` (the content-key seal, ``openContentKeySeal(passphrase:create:)``) the
    /// image is encrypted with a new random content key first (``ImageEncryption``): only the
    /// ciphertext is stored and served, the manifest says how to decrypt it, and the content key is
    /// kept sealed under the seal (`keys/<ciphertext sha256>.sealed`) for the gateway to wrap to
    /// each device that asks.
    public func publish(
        file: String, version: String, models: [String], channel: String, rollout: Int, lifetime: TimeInterval, downgrade: Bool = false,
        key: SigningKey, encryptUnder seal: SymmetricKey? = nil,
        now: Date = Date(), progress: (Int64, Int64) -> Void = { _, _ in }
    ) throws -> PublishedRelease {
        try Self.check(version: version, models: models, channel: channel, rollout: rollout, lifetime: lifetime)
        let existing = try list()
        if existing.contains(where: { $0.manifest.version == version }) {
            throw AuthorityError(.invalidConfiguration, "version \(version) is already published; publish a new version")
        }
        try AtomicFile.makeDirectory(artifactsDirectory)
        try AtomicFile.makeDirectory(manifestsDirectory)
        var encryption: ReleaseManifest.Encryption?
        let artifact: ReleaseManifest.Artifact
        if let seal {
            let contentKey = SymmetricKey(size: .bits256)
            let encrypted = try encryptArtifact(file, key: contentKey, progress: progress)
            artifact = encrypted.artifact
            encryption = encrypted.encryption
            try AtomicFile.makeDirectory(contentKeysDirectory)
            let sealed = try Self.sealContentKey(contentKey, artifact: artifact.sha256, under: seal)
            try AtomicFile.write(sealed, to: contentKeyPath(artifact.sha256), permissions: 0o600)
        } else {
            artifact = try storeArtifact(file, progress: progress)
        }
        let manifest = ReleaseManifest(
            manifestVersion: (existing.map(\.manifest.manifestVersion).max() ?? 0) + 1, version: version, models: models,
            channel: channel, rollout: rollout, artifact: artifact, issued: now, expires: now.addingTimeInterval(lifetime),
            downgrade: downgrade ? true : nil, encryption: encryption)
        return try write(manifest, key: key)
    }

    // MARK: Encrypted images

    /// The seal of content keys, made on first use when `create`.
    public func openContentKeySeal(passphrase: Passphrase, create: Bool) throws -> SymmetricKey {
        if create {
            try AtomicFile.makeDirectory(root)
            return try SealedSecretKey.openOrCreate(at: contentKeySealPath, passphrase: passphrase)
        }
        return try SealedSecretKey.open(at: contentKeySealPath, passphrase: passphrase)
    }

    func contentKeyPath(_ sha256: String) -> String { contentKeysDirectory + "/" + sha256 + ".sealed" }

    /// The content key of the encrypted image `sha256`, opened with `seal`.
    ///
    /// - Throws: ``AuthorityError`` when it is missing or does not open (another seal, or altered).
    public func contentKey(of sha256: String, seal: SymmetricKey) throws -> SymmetricKey {
        let sealed: [UInt8]
        do {
            sealed = try AtomicFile.read(contentKeyPath(sha256), limit: 4096)
        } catch {
            throw AuthorityError(.invalidConfiguration, "the content key of image \(sha256) is missing (\(contentKeyPath(sha256)))")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: sealed)
            return SymmetricKey(data: try AES.GCM.open(box, using: seal, authenticating: Array(sha256.utf8)))
        } catch {
            throw AuthorityError(.invalidConfiguration, "the content key of image \(sha256) does not open with \(contentKeySealPath)")
        }
    }

    static func sealContentKey(_ key: SymmetricKey, artifact sha256: String, under seal: SymmetricKey) throws -> [UInt8] {
        let plain = key.withUnsafeBytes { Array($0) }
        guard let combined = try AES.GCM.seal(plain, using: seal, authenticating: Array(sha256.utf8)).combined else {
            throw AuthorityError(.invalidConfiguration, "cannot seal the content key")
        }
        return Array(combined)
    }

    /// Encrypts `file` into the artifact store (streamed), stored under the ciphertext's SHA-256.
    func encryptArtifact(_ file: String, key: SymmetricKey, progress: (Int64, Int64) -> Void) throws
        -> (artifact: ReleaseManifest.Artifact, encryption: ReleaseManifest.Encryption)
    {
        let (input, total) = try Self.openImage(file)
        defer { try? input.close() }
        let (temporary, output) = try incomingFile()
        var kept = false
        defer { if !kept { try? FileManager.default.removeItem(atPath: temporary) } }
        let result: ImageEncryption.Result
        do {
            defer { try? output.close() }
            result = try ImageEncryption.encrypt(input, into: output, key: key) { done in progress(done, total) }
            try output.synchronize()
        }
        let path = artifactsDirectory + "/" + result.ciphertextSHA256
        guard rename(temporary, path) == 0 else { throw AuthorityError(.invalidConfiguration, "cannot store the artifact at \(path)") }
        kept = true
        return (
            ReleaseManifest.Artifact(sha256: result.ciphertextSHA256, size: result.ciphertextSize),
            ReleaseManifest.Encryption(
                chunkSize: ImageEncryption.defaultChunkSize,
                plaintext: ReleaseManifest.Artifact(sha256: result.plaintextSHA256, size: result.plaintextSize))
        )
    }

    /// Signs `manifest` and writes it (signature first, then the manifest, each atomically).
    func write(_ manifest: ReleaseManifest, key: SigningKey) throws -> PublishedRelease {
        let bytes = try manifest.encoded()
        let signature = try key.signature(for: bytes)
        let base = manifestsDirectory + "/\(manifest.manifestVersion)"
        try AtomicFile.write(signature, to: base + ".sig", permissions: 0o644)
        try AtomicFile.write(bytes, to: base + ".json", permissions: 0o644)
        return PublishedRelease(
            manifest: manifest, manifestBytes: bytes, signature: signature, halted: false, manifestPath: base + ".json",
            signaturePath: base + ".sig", artifactPath: artifactsDirectory + "/" + manifest.artifact.sha256)
    }

    /// Re-issues release `version` on `channel`, with a new rollout share when given (a new
    /// manifest version, newly signed).
    public func promote(version: String, to channel: String? = nil, rollout: Int? = nil, key: SigningKey, now: Date = Date()) throws
        -> PublishedRelease
    {
        try Self.check(version: version, models: ["x"], channel: channel ?? "stable", rollout: rollout ?? 0, lifetime: 86_400)
        let releases = try list()
        guard
            let latest = releases.filter({ $0.manifest.version == version }).max(by: {
                $0.manifest.manifestVersion < $1.manifest.manifestVersion
            })
        else { throw AuthorityError(.invalidConfiguration, "no release \(version)") }
        var manifest = latest.manifest
        manifest.manifestVersion = (releases.map(\.manifest.manifestVersion).max() ?? 0) + 1
        if let channel { manifest.channel = channel }
        if let rollout { manifest.rollout = rollout }
        manifest.issued = now
        manifest.expires = now.addingTimeInterval(max(86_400, latest.manifest.expires.timeIntervalSince(latest.manifest.issued)))
        return try write(manifest, key: key)
    }

    /// Stops release `version` from being offered to more devices.
    public func halt(version: String) throws {
        guard try list().contains(where: { $0.manifest.version == version }) else {
            throw AuthorityError(.invalidConfiguration, "no release \(version)")
        }
        var halted = try haltedVersions()
        halted.insert(version)
        try AtomicFile.write(try JSONEncoder().encode(halted.sorted()), to: haltedPath, permissions: 0o644)
    }

    /// Every manifest, oldest first.
    public func list() throws -> [PublishedRelease] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: manifestsDirectory)) ?? []
        let halted = try haltedVersions()
        var releases: [PublishedRelease] = []
        for name in names where name.hasSuffix(".json") {
            let base = manifestsDirectory + "/" + String(name.dropLast(5))
            let bytes = try AtomicFile.read(base + ".json", limit: 1 << 20)
            let manifest: ReleaseManifest
            do {
                manifest = try ReleaseManifest.decode(bytes)
            } catch {
                throw AuthorityError(.invalidConfiguration, "\(base).json is not a release manifest: \(error)")
            }
            releases.append(
                PublishedRelease(
                    manifest: manifest, manifestBytes: bytes, signature: try AtomicFile.read(base + ".sig", limit: 4096),
                    halted: halted.contains(manifest.version), manifestPath: base + ".json", signaturePath: base + ".sig",
                    artifactPath: artifactsDirectory + "/" + manifest.artifact.sha256))
        }
        return releases.sorted { $0.manifest.manifestVersion < $1.manifest.manifestVersion }
    }

    func haltedVersions() throws -> Set<String> {
        guard let bytes = try? AtomicFile.read(haltedPath, limit: 1 << 20) else { return [] }
        return Set(try JSONDecoder().decode([String].self, from: Data(bytes)))
    }

    /// The image `file`, open for reading, and its size (an empty or unreadable file is refused).
    static func openImage(_ file: String) throws -> (FileHandle, Int64) {
        guard let input = FileHandle(forReadingAtPath: file) else {
            throw AuthorityError(.invalidConfiguration, "cannot read \(file)")
        }
        let total = Int64((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.int64Value ?? 0)
        guard total > 0 else {
            try? input.close()
            throw AuthorityError(.invalidConfiguration, "\(file) is empty")
        }
        return (input, total)
    }

    /// A new file in the artifact store, named apart from every artifact, open for writing.
    func incomingFile() throws -> (path: String, handle: FileHandle) {
        let temporary = artifactsDirectory + "/.incoming-" + UUID().uuidString
        guard FileManager.default.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o644]),
            let output = FileHandle(forWritingAtPath: temporary)
        else { throw AuthorityError(.invalidConfiguration, "cannot write into \(artifactsDirectory)") }
        return (temporary, output)
    }

    /// Copies `file` into the artifact store under its SHA-256, streaming (the file is never held whole).
    func storeArtifact(_ file: String, progress: (Int64, Int64) -> Void) throws -> ReleaseManifest.Artifact {
        let (input, total) = try Self.openImage(file)
        defer { try? input.close() }
        let (temporary, output) = try incomingFile()
        var kept = false
        defer { if !kept { try? FileManager.default.removeItem(atPath: temporary) } }
        var hasher = SHA256()
        var done: Int64 = 0
        do {
            defer { try? output.close() }
            while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
                hasher.update(data: chunk)
                try output.write(contentsOf: chunk)
                done += Int64(chunk.count)
                progress(done, total)
            }
            try output.synchronize()
        }
        let sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let path = artifactsDirectory + "/" + sha256
        if FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.removeItem(atPath: temporary)
        } else {
            guard rename(temporary, path) == 0 else { throw AuthorityError(.invalidConfiguration, "cannot store the artifact at \(path)") }
        }
        kept = true
        return ReleaseManifest.Artifact(sha256: sha256, size: done)
    }

    static func check(version: String, models: [String], channel: String, rollout: Int, lifetime: TimeInterval) throws {
        let safe = { (text: String) in
            !text.isEmpty && text.utf8.count <= 64
                && text.utf8.allSatisfy { c in
                    (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || c == 0x2D || c == 0x2E
                        || c == 0x5F
                        || c == 0x2B
                }
        }
        guard safe(version) else {
            throw AuthorityError(.invalidConfiguration, "version must be 1 to 64 of A-Z a-z 0-9 . - _ +, not '\(version)'")
        }
        guard !models.isEmpty, models.allSatisfy(safe) else {
            throw AuthorityError(.invalidConfiguration, "give at least one model, each 1 to 64 of A-Z a-z 0-9 . - _ +")
        }
        guard safe(channel) else { throw AuthorityError(.invalidConfiguration, "channel must be 1 to 64 of A-Z a-z 0-9 . - _ +") }
        guard (0...100).contains(rollout) else { throw AuthorityError(.invalidConfiguration, "rollout is a percentage, 0 to 100") }
        guard (3600...(366 * 86_400)).contains(lifetime) else {
            throw AuthorityError(.invalidConfiguration, "a manifest lives 1 hour to 366 days (re-sign it with 'release promote' to extend)")
        }
    }
}
