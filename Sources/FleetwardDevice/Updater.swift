public import Foundation
import Crypto
import FleetwardKeyCustody
public import FleetwardPKI
import SwiftASN1
public import X509

/// The device's two install slots, A/B: `DIR/slot-a` and `DIR/slot-b` hold images, `DIR/current`
/// is a symbolic link naming the running one. An update is written whole into the inactive slot
/// (beside it, synced, renamed over it) and `current` is switched in one `rename`, so whenever the
/// agent stops, `current` names a complete image. `DIR/pending.json` records a switch whose health
/// check has not passed yet; `DIR/download/` holds interrupted downloads, resumed from where they stopped.
///
/// A directory without `current` starts with `slot-a` as the running slot.
public struct SlotStore: Sendable {
    public static let names = ["slot-a", "slot-b"]

    public let directory: String

    public init(directory: String) { self.directory = directory }

    var currentLink: String { directory + "/current" }
    var pendingPath: String { directory + "/pending.json" }
    var downloadDirectory: String { directory + "/download" }

    public func path(of slot: String) -> String { directory + "/" + slot }

    /// The manifest of the release a slot holds (written with the image), if any.
    func releasePath(of slot: String) -> String { directory + "/" + slot + ".release.json" }

    /// The running slot, `slot-a` or `slot-b`.
    public func current() throws -> String {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: currentLink) {
            let name = URL(fileURLWithPath: target).lastPathComponent
            guard Self.names.contains(name) else {
                throw DeviceError(.storage, "\(currentLink) names \(target), not slot-a or slot-b")
            }
            return name
        }
        try ensureDirectory()
        if !FileManager.default.fileExists(atPath: path(of: "slot-a")) {
            try write([], to: path(of: "slot-a"))
        }
        try switchTo("slot-a")
        return "slot-a"
    }

    public func inactive() throws -> String { try current() == "slot-a" ? "slot-b" : "slot-a" }

    /// Points `current` at `slot` in one step: a new link renamed over the old one, then the directory synced.
    public func switchTo(_ slot: String) throws {
        precondition(Self.names.contains(slot))
        let temporary = directory + "/.current-" + String(UInt64.random(in: .min ... .max), radix: 36)
        guard symlink(slot, temporary) == 0 else { throw Self.error("link", temporary) }
        guard rename(temporary, currentLink) == 0 else {
            unlink(temporary)
            throw Self.error("switch", currentLink)
        }
        try syncDirectory()
    }

    /// Copies `file` into `slot` (streamed into a file beside it, synced, renamed over it), with the
    /// release it is (`manifest`, kept as `<slot>.release.json`).
    ///
    /// With `decrypt` (an encrypted image: its content key and how it was encrypted) the file is
    /// decrypted chunk by chunk on the way; a chunk that does not authenticate, or a result that is
    /// not the signed image (size, SHA-256), leaves the slot as it was.
    func install(
        _ file: String, into slot: String, manifest: [UInt8],
        decrypt: (key: SymmetricKey, encryption: ReleaseManifest.Encryption, size: Int64)? = nil
    ) throws {
        // The old release note goes first: a slot never claims a release it does not hold.
        unlink(releasePath(of: slot))
        let target = path(of: slot)
        let temporary = target + ".incoming"
        unlink(temporary)
        guard let input = FileHandle(forReadingAtPath: file) else { throw Self.error("read", file) }
        defer { try? input.close() }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.error("create", temporary) }
        func put(_ bytes: some ContiguousBytes) throws {
            try bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw Self.error("write", temporary)
                    }
                    offset += written
                }
            }
        }
        do {
            defer { close(fd) }
            if let decrypt {
                let image: (sha256: String, size: Int64)
                do {
                    image = try ImageEncryption.decrypt(
                        input, ciphertextSize: decrypt.size, key: decrypt.key, chunkSize: decrypt.encryption.chunkSize, write: put)
                } catch let error as PKIError {
                    unlink(temporary)
                    throw DeviceError(.updateRejected, "update refused: \(error.message) (nothing installed)")
                }
                guard image.size == decrypt.encryption.plaintext.size, image.sha256 == decrypt.encryption.plaintext.sha256 else {
                    unlink(temporary)
                    throw DeviceError(
                        .updateRejected, "update refused: the decrypted image is not the one the manifest signs (nothing installed)")
                }
            } else {
                while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty { try put(chunk) }
            }
            guard fsync(fd) == 0 else { throw Self.error("sync", temporary) }
        }
        guard rename(temporary, target) == 0 else { throw Self.error("install", target) }
        try syncDirectory()
        try write(manifest, to: releasePath(of: slot))
    }

    /// The release the running slot holds (nil: the factory image or unknown).
    public func runningRelease() throws -> ReleaseVerifier.Manifest? {
        guard let bytes = try? AtomicFile.read(releasePath(of: try current()), limit: 1 << 20) else { return nil }
        return try? ReleaseManifest.decode(bytes)
    }

    // MARK: The pending switch

    /// A switch to `to` whose health check has not passed yet.
    struct Pending: Codable, Equatable {
        var from: String
        var to: String
        var version: String
        var manifestVersion: UInt64
    }

    func pending() throws -> Pending? {
        guard FileManager.default.fileExists(atPath: pendingPath) else { return nil }
        let bytes = try AtomicFile.read(pendingPath, limit: 1 << 16)
        guard let pending = try? JSONDecoder().decode(Pending.self, from: Data(bytes)), Self.names.contains(pending.from),
            Self.names.contains(pending.to)
        else { throw DeviceError(.storage, "\(pendingPath) is damaged; remove it after checking \(currentLink)") }
        return pending
    }

    func setPending(_ pending: Pending?) throws {
        if let pending {
            try write(Array(try JSONEncoder().encode(pending)), to: pendingPath)
        } else {
            unlink(pendingPath)
            try syncDirectory()
        }
    }

    // MARK: Files

    func ensureDirectory() throws {
        do {
            try AtomicFile.makeDirectory(directory, permissions: 0o755)
            try AtomicFile.makeDirectory(downloadDirectory, permissions: 0o700)
        } catch {
            throw DeviceError(.storage, "cannot create the slot directory \(directory): \(error)")
        }
    }

    func write(_ bytes: [UInt8], to path: String) throws {
        do {
            try AtomicFile.write(bytes, to: path, permissions: 0o644)
        } catch {
            throw DeviceError(.storage, "cannot write \(path): \(error)")
        }
    }

    func syncDirectory() throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error("open", directory) }
        defer { close(fd) }
        guard fsync(fd) == 0 || errno == EINVAL else { throw Self.error("sync", directory) }
    }

    static func error(_ operation: String, _ path: String) -> DeviceError {
        DeviceError(.storage, "cannot \(operation) \(path): \(String(cString: strerror(errno)))")
    }
}

/// What the gateway's `GET /v1/updates` offers (nothing in it is trusted until ``ReleaseVerifier`` checked it).
public struct UpdateOffer: Sendable, Codable {
    public var version: String
    public var manifestVersion: UInt64
    /// Base64 of the signed manifest bytes.
    public var manifest: String
    /// Base64 of the DER ECDSA-SHA256 signature.
    public var signature: String
    /// The release signing certificate, PEM.
    public var certificate: String
    /// The artifact's path on the gateway.
    public var artifact: String
    public var size: Int64

    public init(
        version: String, manifestVersion: UInt64, manifest: String, signature: String, certificate: String, artifact: String, size: Int64
    ) {
        self.version = version
        self.manifestVersion = manifestVersion
        self.manifest = manifest
        self.signature = signature
        self.certificate = certificate
        self.artifact = artifact
        self.size = size
    }
}

/// How an update run ended.
public enum UpdateOutcome: Sendable, Equatable {
    /// Nothing newer is offered to this device.
    case upToDate
    /// Installed, switched to, healthy: the device now runs `version`.
    case installed(version: String, slot: String)
}

/// What ``Updater`` reports as it goes.
public enum UpdateEvent: Sendable {
    case offered(version: String, manifestVersion: UInt64, size: Int64)
    /// A download interrupted before goes on from `from` bytes.
    case resuming(from: Int64)
    case downloading(done: Int64, total: Int64)
    case verified(sha256: String)
    case installing(slot: String)
    case switched(slot: String)
    case recovered(String)
    case reportFailed(String)
}

/// Takes signed updates for one device: asks the gateway, checks the manifest against the pinned
/// root (``ReleaseVerifier``) before anything is written, downloads the artifact (resuming an
/// interrupted download with Range), checks its size and hash, installs it into the inactive slot,
/// switches, runs the health check and switches back when it fails. The manifest version is kept
/// in the sealed credential store once the outcome is known, so an older or replayed manifest is
/// refused afterwards; the gateway hears each step (`POST /v1/updates/status`).
public struct Updater: Sendable {
    public let agent: DeviceAgent
    public let slots: SlotStore
    public var model: String
    public var channel: String
    /// A shell command run after the switch (`FLEETWARD_SLOT` names the new image,
    /// `FLEETWARD_VERSION` its release); exit status 0 means healthy. Nil: always healthy.
    public var healthCheck: String?
    public var healthTimeout: Duration
    /// The bytes asked for per Range request.
    public var chunkSize: Int64 = 2 << 20
    /// The anti-rollback counter kept apart from the credential store (nil: the store's alone).
    public var counter: (any MonotonicCounter)?

    public init(
        agent: DeviceAgent, slots: SlotStore, model: String, channel: String = "stable", healthCheck: String? = nil,
        healthTimeout: Duration = .seconds(60)
    ) {
        self.agent = agent
        self.slots = slots
        self.model = model
        self.channel = channel
        self.healthCheck = healthCheck
        self.healthTimeout = healthTimeout
    }

    var verifier: ReleaseVerifier {
        get throws { ReleaseVerifier(roots: try agent.config.roots) }
    }

    /// Asks the gateway for an update and verifies it; nil when none is offered.
    public func check(on connection: GatewayConnection, now: Date = Date()) async throws -> (
        offer: UpdateOffer, manifest: ReleaseVerifier.Manifest, bytes: [UInt8]
    )? {
        guard let offer = try await fetchOffer(on: connection) else { return nil }
        let (manifest, bytes) = try verify(offer, now: now)
        return (offer, manifest, bytes)
    }

    /// What the gateway offers this device, unverified; nil when nothing is newer than what it accepted.
    func fetchOffer(on connection: GatewayConnection) async throws -> UpdateOffer? {
        let accepted = try acceptedVersion()
        let query = "channel=\(channel.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? channel)&after=\(accepted)"
        let response = try await connection.send(HTTP1Request(method: "GET", path: "/v1/updates?" + query))
        if response.status == 204 { return nil }
        guard response.status == 200 else {
            throw DeviceError(
                .refused, "the gateway refused the update check (\(response.status)): \(Self.reason(response))", status: response.status)
        }
        guard let offer = try? JSONDecoder().decode(UpdateOffer.self, from: Data(response.body)) else {
            throw DeviceError(.malformedResponse, "the gateway's update offer is unreadable")
        }
        return offer
    }

    /// The checks made before anything is written (``ReleaseVerifier``), plus this device's channel.
    public func verify(_ offer: UpdateOffer, now: Date = Date()) throws -> (manifest: ReleaseVerifier.Manifest, bytes: [UInt8]) {
        guard let bytes = Data(base64Encoded: offer.manifest), let signature = Data(base64Encoded: offer.signature) else {
            throw DeviceError(.updateRejected, "update refused: the offered manifest or signature is not base64")
        }
        let signer: Certificate
        do {
            signer = try Certificate(pemEncoded: offer.certificate)
        } catch {
            throw DeviceError(.updateRejected, "update refused: the offered signing certificate does not parse")
        }
        let manifest = try verifier.verify(
            manifest: Array(bytes), signature: Array(signature), signer: signer, model: model,
            acceptedVersion: try acceptedVersion(), now: now)
        guard manifest.channel == channel else {
            throw DeviceError(
                .updateRejected, "update refused: release \(manifest.version) is on channel \(manifest.channel), not \(channel)")
        }
        // The firmware's own version only goes up too: a lower release needs a signed downgrade.
        if let installed = try agent.credential().installedVersion, ReleaseVersion.isOlder(manifest.version, than: installed),
            manifest.downgrade != true
        {
            throw DeviceError(
                .updateRejected,
                "update refused: release \(manifest.version) is older than the installed \(installed), and not signed as a downgrade")
        }
        return (manifest, Array(bytes))
    }

    /// The highest manifest version accepted: the credential store's, or the counter's when the
    /// store was restored from an older copy.
    func acceptedVersion() throws -> UInt64 {
        max(try agent.credential().acceptedManifestVersion, try counter?.value() ?? 0)
    }

    /// Finishes what an interrupted run left: a switch whose health check never ran is checked now
    /// (and switched back when it fails). Returns what happened, or nil when nothing was pending.
    public func recover(connection: GatewayConnection?, events: @Sendable (UpdateEvent) -> Void = { _ in }) async throws -> String? {
        guard let pending = try slots.pending() else { return nil }
        let current = try slots.current()
        if current == pending.from {
            // Stopped before the switch, or after switching back: the device runs what it ran.
            try slots.setPending(nil)
            events(.recovered("release \(pending.version) was not switched to; still on \(current)"))
            return "release \(pending.version) was not switched to; still on \(current)"
        }
        let outcome: String
        if let failure = await runHealthCheck(slot: pending.to, version: pending.version) {
            try accept(pending.manifestVersion)
            try slots.switchTo(pending.from)
            try slots.setPending(nil)
            await report(connection, version: pending.version, state: "rolled-back", detail: failure, events: events)
            outcome = "release \(pending.version) failed its health check (\(failure)); switched back to \(pending.from)"
        } else {
            try accept(pending.manifestVersion, installed: pending.version)
            try slots.setPending(nil)
            await report(connection, version: pending.version, state: "installed", detail: nil, events: events)
            outcome = "release \(pending.version) passed its health check on \(pending.to)"
        }
        events(.recovered(outcome))
        return outcome
    }

    /// Checks for an update and, when one is offered, downloads, verifies, installs, switches and
    /// health-checks it.
    ///
    /// - Throws: ``DeviceError`` `.updateRejected` (the manifest or the artifact is not genuine, current
    ///   and meant for this device: nothing was written to a slot), `.rolledBack` (installed but
    ///   unhealthy: the device is back on its previous slot), or a connection or storage error.
    public func apply(on connection: GatewayConnection, now: Date = Date(), events: @Sendable (UpdateEvent) -> Void = { _ in }) async throws
        -> UpdateOutcome
    {
        _ = try slots.current()
        _ = try await recover(connection: connection, events: events)
        guard let offer = try await fetchOffer(on: connection) else { return .upToDate }
        let manifest: ReleaseVerifier.Manifest
        let bytes: [UInt8]
        do {
            (manifest, bytes) = try verify(offer, now: now)
        } catch let error as DeviceError {
            // The device changed nothing; the operator hears why (under the version the offer named).
            await report(connection, version: offer.version, state: "failed", detail: error.message, events: events)
            throw error
        }
        // The same image re-signed (promoted, rollout widened): nothing to install.
        if try slots.runningRelease()?.artifact.sha256 == manifest.artifact.sha256 {
            try accept(manifest.manifestVersion)
            await report(connection, version: manifest.version, state: "installed", detail: nil, events: events)
            return .upToDate
        }
        events(.offered(version: manifest.version, manifestVersion: manifest.manifestVersion, size: manifest.artifact.size))
        // An encrypted image: its key first (no key for this device, nothing to download).
        var decrypt: (key: SymmetricKey, encryption: ReleaseManifest.Encryption, size: Int64)?
        if let encryption = manifest.encryption {
            do {
                decrypt = (try await contentKey(for: manifest, encryption: encryption, on: connection), encryption, manifest.artifact.size)
            } catch let error as DeviceError where error.code == .updateRejected {
                await report(connection, version: manifest.version, state: "failed", detail: error.message, events: events)
                throw error
            }
        }
        await report(connection, version: manifest.version, state: "downloading", detail: nil, events: events)
        let file: String
        do {
            file = try await download(manifest, on: connection, events: events)
        } catch let error as DeviceError where error.code == .updateRejected {
            await report(connection, version: manifest.version, state: "failed", detail: error.message, events: events)
            throw error
        }
        await report(connection, version: manifest.version, state: "downloaded", detail: nil, events: events)

        let from = try slots.current()
        let to = from == "slot-a" ? "slot-b" : "slot-a"
        events(.installing(slot: to))
        do {
            try slots.install(file, into: to, manifest: bytes, decrypt: decrypt)
        } catch let error as DeviceError where error.code == .updateRejected {
            unlink(file)
            await report(connection, version: manifest.version, state: "failed", detail: error.message, events: events)
            throw error
        }
        try slots.setPending(.init(from: from, to: to, version: manifest.version, manifestVersion: manifest.manifestVersion))
        try slots.switchTo(to)
        events(.switched(slot: to))
        unlink(file)
        if let failure = await runHealthCheck(slot: to, version: manifest.version) {
            // Not taken again: a release that failed here waits for a newer one.
            try accept(manifest.manifestVersion)
            try slots.switchTo(from)
            try slots.setPending(nil)
            await report(connection, version: manifest.version, state: "rolled-back", detail: failure, events: events)
            throw DeviceError(
                .rolledBack, "release \(manifest.version) failed its health check (\(failure)); switched back to \(from)")
        }
        try accept(manifest.manifestVersion, installed: manifest.version)
        try slots.setPending(nil)
        await report(connection, version: manifest.version, state: "installed", detail: nil, events: events)
        return .installed(version: manifest.version, slot: to)
    }

    /// The content key of an encrypted image: asked of the gateway (`GET /v1/updates/{sha256}/key`,
    /// wrapped to this device's operational key) and unwrapped where that key lives.
    ///
    /// - Throws: ``DeviceError`` `.updateRejected` when the scheme is unknown or the wrap does not
    ///   open (made for another device or image, or altered).
    func contentKey(for manifest: ReleaseVerifier.Manifest, encryption: ReleaseManifest.Encryption, on connection: GatewayConnection)
        async throws -> SymmetricKey
    {
        guard encryption.scheme == ImageEncryption.scheme, encryption.keyWrap == ImageEncryption.keyWrap,
            (1...(1 << 24)).contains(encryption.chunkSize), encryption.plaintext.size > 0
        else {
            throw DeviceError(
                .updateRejected,
                "update refused: the image is encrypted as \(encryption.scheme) with \(encryption.keyWrap), which this agent cannot decrypt")
        }
        let sha256 = manifest.artifact.sha256
        let response = try await connection.send(HTTP1Request(method: "GET", path: "/v1/updates/" + sha256 + "/key"))
        guard response.status == 200 else {
            throw DeviceError(
                .refused, "the gateway gave no key for the encrypted image (\(response.status)): \(Self.reason(response))",
                status: response.status)
        }
        guard let wrapped = try? JSONDecoder().decode(ImageEncryption.WrappedKey.self, from: Data(response.body)) else {
            throw DeviceError(.malformedResponse, "the gateway's wrapped image key is unreadable")
        }
        let (credential, _, key) = try agent.operationalIdentity()
        let recipient = try P256.KeyAgreement.PublicKey(x963Representation: key.publicKey.x963Representation)
        do {
            return try ImageEncryption.unwrap(
                wrapped, recipient: recipient, info: ImageEncryption.wrapInfo(artifact: sha256, device: credential.deviceID),
                agree: { try key.sharedSecret(with: $0) })
        } catch let error as PKIError {
            throw DeviceError(.updateRejected, "update refused: \(error.message)")
        } catch {
            // The key's custody cannot do ECDH (a token without C_DeriveKey): nothing to decrypt with.
            throw DeviceError(.updateRejected, "update refused: this device's key cannot unwrap the image key (\(error))")
        }
    }

    /// Downloads the artifact into `download/<sha256>.partial` in Range requests, continuing a
    /// partial file, and returns its path once its size and SHA-256 match the manifest.
    func download(
        _ manifest: ReleaseVerifier.Manifest, on connection: GatewayConnection, events: @Sendable (UpdateEvent) -> Void
    ) async throws -> String {
        try slots.ensureDirectory()
        let total = manifest.artifact.size
        let path = slots.downloadDirectory + "/" + manifest.artifact.sha256 + ".partial"
        var hasher = SHA256()
        var done: Int64 = 0
        // What an interrupted run wrote goes into the hash again; too much means start over.
        if let existing = FileHandle(forReadingAtPath: path) {
            defer { try? existing.close() }
            while let chunk = try existing.read(upToCount: 1 << 20), !chunk.isEmpty {
                hasher.update(data: chunk)
                done += Int64(chunk.count)
            }
            if done > total {
                unlink(path)
                hasher = SHA256()
                done = 0
            }
        }
        if done > 0 { events(.resuming(from: done)) }
        if done == 0, !FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) {
            throw SlotStore.error("create", path)
        }
        guard let output = FileHandle(forWritingAtPath: path) else { throw SlotStore.error("open", path) }
        defer { try? output.close() }
        try output.seekToEnd()
        while done < total {
            let last = min(total, done + chunkSize) - 1
            // The path comes from the verified manifest, not from the offer's unsigned fields.
            let response = try await connection.send(
                HTTP1Request(
                    method: "GET", path: "/v1/updates/" + manifest.artifact.sha256, headers: [("Range", "bytes=\(done)-\(last)")]))
            guard response.status == 206 else {
                throw DeviceError(
                    .refused, "the gateway refused the download (\(response.status)): \(Self.reason(response))", status: response.status)
            }
            guard response.header("Content-Range") == "bytes \(done)-\(last)/\(total)", Int64(response.body.count) == last - done + 1 else {
                unlink(path)
                throw DeviceError(
                    .updateRejected, "update refused: the artifact is not \(total) bytes as the manifest says (download discarded)")
            }
            try output.write(contentsOf: response.body)
            hasher.update(data: response.body)
            done += Int64(response.body.count)
            events(.downloading(done: done, total: total))
        }
        try output.synchronize()
        let sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard ReleaseVerifier.artifactMatches(manifest, size: done, sha256: sha256) else {
            unlink(path)
            throw DeviceError(
                .updateRejected,
                "update refused: the artifact's SHA-256 is \(sha256), not \(manifest.artifact.sha256) as signed (download discarded)")
        }
        events(.verified(sha256: sha256))
        return path
    }

    /// Keeps `manifestVersion` in the sealed store and the counter: nothing at or below it is
    /// accepted again. With `installed`, records that release's version as the installed one.
    func accept(_ manifestVersion: UInt64, installed version: String? = nil) throws {
        var credential = try agent.credential()
        try counter?.advance(to: manifestVersion)
        guard manifestVersion > credential.acceptedManifestVersion || version != nil else { return }
        credential.acceptedManifestVersion = max(credential.acceptedManifestVersion, manifestVersion)
        if let version { credential.installedVersion = version }
        try agent.store.save(credential)
    }

    /// Runs the health check against `slot`; nil when healthy, else why not.
    func runHealthCheck(slot: String, version: String) async -> String? {
        guard let healthCheck else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", healthCheck]
        var environment = ProcessInfo.processInfo.environment
        environment["FLEETWARD_SLOT"] = slots.path(of: slot)
        environment["FLEETWARD_VERSION"] = version
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        // What the check prints goes to a private temporary file, so a failure can say (the end of) it.
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("fleetward-health-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil, attributes: [.posixPermissions: 0o600])
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let output = FileHandle(forWritingAtPath: outputPath)
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = output ?? FileHandle.nullDevice
        do {
            try process.run()
            try? output?.close()
        } catch {
            try? output?.close()
            return "the health check could not start: \(error)"
        }
        func printed() -> String {
            guard let handle = FileHandle(forReadingAtPath: outputPath) else { return "" }
            defer { try? handle.close() }
            let size = (try? handle.seekToEnd()) ?? 0
            let limit: UInt64 = 600
            try? handle.seek(toOffset: size > limit ? size - limit : 0)
            let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
            let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !lines.isEmpty else { return "" }
            return "; it printed: " + (size > limit ? "… " : "") + lines.joined(separator: " | ")
        }
        let deadline = ContinuousClock.now + healthTimeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                process.terminate()
                try? await Task.sleep(for: .milliseconds(200))
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
                return "the health check did not finish within \(healthTimeout)\(printed())"
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus == 0 ? nil : "the health check exited with status \(process.terminationStatus)\(printed())"
    }

    /// Tells the gateway where the device stands; a report that cannot be sent is an event, not a failure.
    func report(
        _ connection: GatewayConnection?, version: String, state: String, detail: String?, events: @Sendable (UpdateEvent) -> Void
    ) async {
        guard let connection else { return }
        struct Body: Encodable {
            var version: String
            var state: String
            var detail: String?
        }
        do {
            let body = try JSONEncoder().encode(Body(version: version, state: state, detail: detail.map { String($0.prefix(500)) }))
            let response = try await connection.send(
                HTTP1Request(method: "POST", path: "/v1/updates/status", headers: [("Content-Type", "application/json")], body: Array(body))
            )
            if response.status != 204 { events(.reportFailed("the gateway answered \(response.status) to the \(state) report")) }
        } catch {
            events(.reportFailed("the \(state) report was not sent: \(error)"))
        }
    }

    static func reason(_ response: HTTP1Response) -> String {
        String(response.text.trimmingCharacters(in: .whitespacesAndNewlines).prefix(300))
    }
}
