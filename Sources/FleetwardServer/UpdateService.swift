public import FleetwardAuthority
import FleetwardDevice
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardRegistry
public import Foundation
public import Crypto
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization
import X509
import SwiftASN1

/// The releases the gateway offers: the data directory's release repository, read again whenever
/// `fleetward release publish|promote|halt` changed it (even while `serve` runs).
public final class UpdateCatalog: Sendable {
    public struct Snapshot: Sendable {
        public var releases: [PublishedRelease]
        /// The release signing certificate, PEM (nil before the first publish).
        public var signerPEM: String?
        /// Its serial number, lower-case hex.
        public var signerSerial: String?
    }

    let repository: ReleaseRepository
    private let cache = Mutex<(stamp: [Date?], snapshot: Snapshot)?>(nil)
    /// Opens the seal of content keys (encrypted images); nil: encrypted images are not served.
    let openContentKeySeal: (@Sendable () throws -> SymmetricKey)?
    /// Content keys opened so far, by the ciphertext's SHA-256.
    private let contentKeys = Mutex<[String: SymmetricKey]>([:])

    public init(repository: ReleaseRepository, openContentKeySeal: (@Sendable () throws -> SymmetricKey)? = nil) {
        self.repository = repository
        self.openContentKeySeal = openContentKeySeal
    }

    /// The content key of the encrypted image `sha256` (opened once, then kept in memory).
    func contentKey(of sha256: String) throws -> SymmetricKey {
        if let key = contentKeys.withLock({ $0[sha256] }) { return key }
        guard let openContentKeySeal else { throw HTTPProblem(.serviceUnavailable, "this gateway serves no encrypted images") }
        let key: SymmetricKey
        do {
            key = try repository.contentKey(of: sha256, seal: try openContentKeySeal())
        } catch {
            throw HTTPProblem(.serviceUnavailable, "the key of encrypted image \(sha256) cannot be opened here")
        }
        contentKeys.withLock { $0[sha256] = key }
        return key
    }

    /// The current releases (re-read when a manifest, the halted list or the signer changed).
    public func snapshot() throws -> Snapshot {
        let paths = [repository.manifestsDirectory, repository.haltedPath, repository.signingCertificatePath]
        let stamp = paths.map { (try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate]) as? Date }
        if let cached = cache.withLock({ $0 }), cached.stamp == stamp { return cached.snapshot }
        let pem = (try? AtomicFile.read(repository.signingCertificatePath, limit: 1 << 16)).map { String(decoding: $0, as: UTF8.self) }
        let serial = pem.flatMap { try? Certificate(pemEncoded: $0) }.map { $0.serialNumber.hexString.lowercased() }
        let snapshot = Snapshot(releases: try repository.list(), signerPEM: pem, signerSerial: serial)
        // A change within the file system's timestamp granularity of this read could leave the
        // stamp unchanged afterwards: only a listing older than that is kept.
        let settled = Date().addingTimeInterval(-1)
        if stamp.allSatisfy({ ($0 ?? .distantPast) < settled }) { cache.withLock { $0 = (stamp, snapshot) } }
        return snapshot
    }

    /// Whether `device` falls in the first `percent` of the fleet for release `version`: a fixed
    /// place from a hash of both, so raising the share keeps every device already in it.
    public static func inRollout(device: String, version: String, percent: Int) -> Bool {
        guard percent < 100 else { return true }
        guard percent > 0 else { return false }
        let digest = Array(SHA256.hash(data: Array("fleetward-rollout\n\(version)\n\(device)".utf8)))
        let place = digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } % 10_000
        return place < UInt64(percent) * 100
    }

    /// The newest release meant for this device: not halted, its channel, its model, unexpired,
    /// newer than `after` (the manifest version the device accepted last), and in its rollout.
    public func offer(device: String, model: String, channel: String, after: UInt64, now: Date) throws -> PublishedRelease? {
        try snapshot().releases
            .filter { release in
                let manifest = release.manifest
                return !release.halted && manifest.channel == channel && manifest.models.contains(model) && now < manifest.expires
                    && manifest.manifestVersion > after
                    && Self.inRollout(device: device, version: manifest.version, percent: manifest.rollout)
            }
            .max { $0.manifest.manifestVersion < $1.manifest.manifestVersion }
    }

    /// The offer a device is given for `release`: the same document on `GET /v1/updates` and on
    /// its MQTT topic `devices/{id}/updates`.
    static func document(for release: PublishedRelease, signerPEM: String) -> UpdateOffer {
        let manifest = release.manifest
        return UpdateOffer(
            version: manifest.version, manifestVersion: manifest.manifestVersion,
            manifest: Data(release.manifestBytes).base64EncodedString(), signature: Data(release.signature).base64EncodedString(),
            certificate: signerPEM, artifact: GatewayServer.updatesPath + "/" + manifest.artifact.sha256, size: manifest.artifact.size)
    }

    /// The stored artifact `sha256`, when a published release for `model` names it.
    public func artifact(sha256: String, model: String) throws -> (path: String, size: Int64, encrypted: Bool)? {
        guard
            let release = try snapshot().releases.last(where: {
                $0.manifest.artifact.sha256 == sha256 && $0.manifest.models.contains(model)
            })
        else { return nil }
        return (release.artifactPath, release.manifest.artifact.size, release.manifest.encryption != nil)
    }
}

/// A device's report to `POST /v1/updates/status`.
struct UpdateStatusReport: Decodable {
    var version: String
    var state: String
    var detail: String?
}

/// One byte range of an artifact, as `Range: bytes=…` asks (RFC 9110 §14).
enum ByteRange: Equatable {
    case whole
    case part(ClosedRange<Int64>)
    case unsatisfiable

    /// A single range is honoured; several ranges, or a header that does not parse, get the whole
    /// file (a server may ignore Range); a range starting past the end is unsatisfiable.
    static func parse(_ header: String?, size: Int64) -> ByteRange {
        guard let header, header.hasPrefix("bytes="), size > 0 else { return .whole }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash]
        let last = spec[spec.index(after: dash)...]
        if first.isEmpty {
            guard let suffix = Int64(last), suffix > 0 else { return last == "0" ? .unsatisfiable : .whole }
            return .part(max(0, size - suffix)...(size - 1))
        }
        guard let start = Int64(first), start >= 0 else { return .whole }
        let end: Int64
        if last.isEmpty {
            end = size - 1
        } else {
            guard let value = Int64(last), value >= start else { return .whole }
            end = min(value, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .part(start...end)
    }
}

extension GatewayServer {
    static let updatesPath = "/v1/updates"

    /// `GET /v1/updates`, `GET /v1/updates/{sha256}` (with Range) and `POST /v1/updates/status`.
    static func addUpdateRoutes(to v1: RouterGroup<GatewayRequestContext>, gateway: Gateway, catalog: UpdateCatalog) {
        let files = FileIO()

        /// The connection's device, read afresh: updates go to active devices only.
        @Sendable func activeDevice(_ context: GatewayRequestContext) async throws -> Device {
            guard let identity = gateway.identity(of: context.channel), let id = try? DeviceID(identity.device) else {
                throw HTTPProblem(.unauthorized, "this connection proved no device")
            }
            guard let device = try await gateway.store.device(id), device.state == .active else {
                throw HTTPProblem(.forbidden, "device \(id) is not active: no updates")
            }
            return device
        }

        /// The connection's device and the artifact the path names (one of its model's releases).
        @Sendable func requestedArtifact(_ context: GatewayRequestContext) async throws -> (
            device: Device, sha256: String, artifact: (path: String, size: Int64, encrypted: Bool)
        ) {
            let device = try await activeDevice(context)
            let sha256 = context.parameters.get("sha256") ?? ""
            guard sha256.utf8.count == 64, sha256.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
                throw HTTPProblem(.notFound, "an artifact is named by its lower-case hex SHA-256")
            }
            guard let artifact = try catalog.artifact(sha256: sha256, model: device.model) else {
                throw HTTPProblem(.notFound, "no release for model \(device.model) has artifact \(sha256)")
            }
            return (device, sha256, artifact)
        }

        v1.get("updates") { request, context -> Response in
            let device = try await activeDevice(context)
            let channel = request.uri.queryParameters["channel"].map(String.init) ?? "stable"
            guard channel.utf8.count <= 64 else { throw HTTPProblem(.badRequest, "channel is at most 64 characters") }
            var after: UInt64 = 0
            if let text = request.uri.queryParameters["after"] {
                guard let value = UInt64(text) else {
                    throw HTTPProblem(.badRequest, "after is the last manifest version accepted, a number")
                }
                after = value
            }
            guard
                let release = try catalog.offer(
                    device: device.id.rawValue, model: device.model, channel: channel, after: after, now: gateway.now())
            else { return Response(status: .noContent) }
            let snapshot = try catalog.snapshot()
            guard let signer = snapshot.signerPEM, let serial = snapshot.signerSerial else {
                throw HTTPProblem(.serviceUnavailable, "the release signing certificate is missing or unreadable")
            }
            // A revoked release key offers nothing, whatever it signed.
            if try await gateway.store.certificate(serial: serial)?.revocation != nil {
                throw HTTPProblem(
                    .serviceUnavailable,
                    "the release signing certificate \(serial) is revoked: no updates are offered until releases are re-signed")
            }
            try await gateway.registrar.recordUpdate(
                UpdateReport(device: device.id, version: release.manifest.version, state: .offered), at: gateway.now())
            return JSONResponse.make(UpdateCatalog.document(for: release, signerPEM: signer))
        }

        v1.get("updates/:sha256") { request, context -> Response in
            let (device, sha256, artifact) = try await requestedArtifact(context)
            var headers: HTTPFields = [
                .contentType: "application/octet-stream", .acceptRanges: "bytes", .eTag: "\"\(sha256)\"",
            ]
            let range: ClosedRange<Int64>
            let status: HTTPResponse.Status
            switch ByteRange.parse(request.headers[.range], size: artifact.size) {
            case .unsatisfiable:
                headers[.contentRange] = "bytes */\(artifact.size)"
                return Response(status: .rangeNotSatisfiable, headers: headers)
            case .whole:
                range = 0...(artifact.size - 1)
                status = .ok
            case .part(let part):
                range = part
                status = .partialContent
                headers[.contentRange] = "bytes \(part.lowerBound)-\(part.upperBound)/\(artifact.size)"
            }
            headers[.contentLength] = "\(range.count)"
            let body = try await files.loadFile(
                path: artifact.path, range: Int(range.lowerBound)...Int(range.upperBound), context: context, chunkLength: 256 * 1024)
            gateway.metrics.updateDownload()
            return Response(status: status, headers: headers, body: body)
        }

        // The content key of an encrypted image, wrapped (HPKE) to the key of the certificate this
        // connection proved, for this device and image only; the key never leaves in the clear.
        v1.get("updates/:sha256/key") { _, context -> Response in
            let (device, sha256, artifact) = try await requestedArtifact(context)
            guard artifact.encrypted else { throw HTTPProblem(.notFound, "artifact \(sha256) is not encrypted: it has no key") }
            guard let publicKey = await gateway.certificateKey(of: context.channel) else {
                throw HTTPProblem(.unauthorized, "this connection's certificate has no P-256 key to wrap the image key to")
            }
            let recipient = try P256.KeyAgreement.PublicKey(x963Representation: publicKey.x963Representation)
            let wrapped = try ImageEncryption.wrap(
                try catalog.contentKey(of: sha256), to: recipient,
                info: ImageEncryption.wrapInfo(artifact: sha256, device: device.id.rawValue))
            return JSONResponse.make(wrapped)
        }

        v1.post("updates/status") { request, context -> Response in
            let device = try await activeDevice(context)
            var request = request
            let buffer = try await request.collectBody(upTo: 4096)
            guard let report = try? JSONDecoder().decode(UpdateStatusReport.self, from: Data(buffer.readableBytesView)) else {
                throw HTTPProblem(.badRequest, "send {\"version\": …, \"state\": …, \"detail\": …} as JSON")
            }
            guard let state = UpdateState(rawValue: report.state), state != .offered else {
                let states = UpdateState.allCases.filter { $0 != .offered }.map(\.rawValue).joined(separator: ", ")
                throw HTTPProblem(.badRequest, "state is one of \(states)")
            }
            guard try catalog.snapshot().releases.contains(where: { $0.manifest.version == report.version }) else {
                throw HTTPProblem(.notFound, "no release \(report.version)")
            }
            try await gateway.registrar.recordUpdate(
                UpdateReport(device: device.id, version: report.version, state: state, detail: report.detail), at: gateway.now())
            gateway.metrics.updateReported(state)
            return Response(status: .noContent)
        }
    }
}
