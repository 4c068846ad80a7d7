public import Foundation

/// A signed update manifest: what a release is, for whom, until when. Devices accept it only when
/// its signature chains to their pinned root through a `codesign` certificate, it has not expired,
/// its ``manifestVersion`` is higher than the last one they accepted, and their model is listed.
public struct ReleaseManifest: Codable, Sendable, Equatable {
    public struct Artifact: Codable, Sendable, Equatable {
        /// Lower-case hex SHA-256 of the artifact's bytes.
        public var sha256: String
        public var size: Int64

        public init(sha256: String, size: Int64) {
            self.sha256 = sha256
            self.size = size
        }
    }

    /// Grows by one with every manifest the fleet publishes (anti-rollback and anti-freeze counter).
    public var manifestVersion: UInt64
    /// The release's own version, as its makers name it.
    public var version: String
    public var models: [String]
    public var channel: String
    /// The share of the fleet offered it, 0 to 100 (a device's place is fixed by its ID).
    public var rollout: Int
    public var artifact: Artifact
    public var issued: Date
    public var expires: Date

    public init(
        manifestVersion: UInt64, version: String, models: [String], channel: String, rollout: Int, artifact: Artifact, issued: Date,
        expires: Date
    ) {
        self.manifestVersion = manifestVersion
        self.version = version
        self.models = models
        self.channel = channel
        self.rollout = rollout
        self.artifact = artifact
        self.issued = issued
        self.expires = expires
    }

    /// The canonical bytes that are signed: JSON with sorted keys, ISO 8601 dates, no spaces.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return Array(try encoder.encode(self))
    }

    public static func decode(_ bytes: [UInt8]) throws -> ReleaseManifest {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(ReleaseManifest.self, from: Data(bytes))
    }
}
