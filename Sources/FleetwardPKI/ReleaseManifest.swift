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

    /// How an encrypted artifact is encrypted (``ImageEncryption``); absent: the artifact is the image.
    public struct Encryption: Codable, Sendable, Equatable {
        /// ``ImageEncryption/scheme``.
        public var scheme: String
        public var chunkSize: Int
        /// How each device gets the content key: ``ImageEncryption/keyWrap``, to its certificate's key.
        public var keyWrap: String
        /// The image once decrypted.
        public var plaintext: Artifact

        public init(scheme: String = ImageEncryption.scheme, chunkSize: Int, keyWrap: String = ImageEncryption.keyWrap, plaintext: Artifact) {
            self.scheme = scheme
            self.chunkSize = chunkSize
            self.keyWrap = keyWrap
            self.plaintext = plaintext
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
    /// Signed as a downgrade: devices running a higher version take it all the same (absent: they
    /// refuse any release older than the one they run).
    public var downgrade: Bool?
    /// Set when ``artifact`` is the encrypted image (what the server stores and serves).
    public var encryption: Encryption?

    public init(
        manifestVersion: UInt64, version: String, models: [String], channel: String, rollout: Int, artifact: Artifact, issued: Date,
        expires: Date, downgrade: Bool? = nil, encryption: Encryption? = nil
    ) {
        self.downgrade = downgrade
        self.encryption = encryption
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

/// Orders release versions as people write them: `1.10.0` after `1.9.2`, `2.0.0-rc.1` before
/// `2.0.0`: dot-separated parts compared as numbers where both are numbers, else as text; a
/// pre-release (after `-`) comes before the release itself.
public enum ReleaseVersion {
    public static func isOlder(_ a: String, than b: String) -> Bool {
        compare(a, b) == .orderedAscending
    }

    static func compare(_ a: String, _ b: String) -> ComparisonResult {
        func split(_ version: String) -> (core: [Substring], pre: Substring?) {
            let parts = version.split(separator: "-", maxSplits: 1)
            return (parts.first?.split(separator: ".") ?? [], parts.count > 1 ? parts[1] : nil)
        }
        func parts(_ x: [Substring], _ y: [Substring]) -> ComparisonResult {
            for index in 0..<max(x.count, y.count) {
                let left = index < x.count ? x[index] : "0"
                let right = index < y.count ? y[index] : "0"
                if let l = Int(left), let r = Int(right) {
                    if l != r { return l < r ? .orderedAscending : .orderedDescending }
                } else if left != right {
                    return left < right ? .orderedAscending : .orderedDescending
                }
            }
            return .orderedSame
        }
        let (coreA, preA) = split(a)
        let (coreB, preB) = split(b)
        let core = parts(coreA, coreB)
        guard core == .orderedSame else { return core }
        switch (preA, preB) {
        case (nil, nil): return .orderedSame
        case (nil, _): return .orderedDescending
        case (_, nil): return .orderedAscending
        case (let x?, let y?): return parts(x.split(separator: "."), y.split(separator: "."))
        }
    }
}
