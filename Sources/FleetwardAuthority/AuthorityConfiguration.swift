public import Foundation
public import FleetwardPKI

/// The settings `fleetward init` chose, kept in `DIR/fleetward.json`.
public struct AuthorityConfiguration: Codable, Sendable, Equatable {
    /// The format version of this file.
    public var version: Int = 1
    /// The organization name written into every subject.
    public var organization: String
    /// The names the gateway's server certificate covers.
    public var hosts: [String]
    public var rootKeyType: KeyType
    public var issuingKeyType: KeyType
    public var factoryKeyType: KeyType
    public var rootDays: Int
    public var intermediateDays: Int
    /// PBKDF2 iterations used for new key files.
    public var kdfIterations: Int
    public var createdAt: Date
    /// Where relying parties reach the CRLs and the OCSP responder (the management API listener):
    /// issued certificates carry `BASE/crl/<ca>.crl` and `BASE/ocsp`. Absent in directories made
    /// before it existed; then certificates carry neither.
    public var revocationBaseURL: String?
    /// The PKCS#11 token (an RFC 7512 URI, never a PIN) that holds the issuing, factory and
    /// release-signing keys; nil: they are encrypted files like the root's.
    public var keyStore: String?

    public init(
        organization: String = "Fleetward",
        hosts: [String] = ["localhost", "127.0.0.1", "::1"],
        rootKeyType: KeyType = .p384,
        issuingKeyType: KeyType = .p256,
        factoryKeyType: KeyType = .p256,
        rootDays: Int = 7305,
        intermediateDays: Int = 1826,
        kdfIterations: Int = PBES2.defaultIterations,
        createdAt: Date = Date(),
        revocationBaseURL: String? = "http://127.0.0.1:8080"
    ) {
        self.revocationBaseURL = revocationBaseURL
        self.organization = organization
        self.hosts = hosts
        self.rootKeyType = rootKeyType
        self.issuingKeyType = issuingKeyType
        self.factoryKeyType = factoryKeyType
        self.rootDays = rootDays
        self.intermediateDays = intermediateDays
        self.kdfIterations = kdfIterations
        self.createdAt = createdAt
    }

    /// Checks every setting, naming the first that is out of range.
    public func validate() throws {
        if let base = revocationBaseURL {
            guard let url = URL(string: base), ["http", "https"].contains(url.scheme ?? ""), url.host?.isEmpty == false, url.query == nil,
                base.utf8.count <= 200, base.allSatisfy({ $0.isASCII && !$0.isWhitespace })
            else {
                throw AuthorityError(.invalidConfiguration, "the revocation URL must be http(s)://HOST[:PORT][/PATH], not '\(base)'")
            }
        }
        try CACertificateFactory.validateOrganization(organization)
        guard !hosts.isEmpty else {
            throw AuthorityError(.invalidConfiguration, "the gateway certificate needs at least one host name or IP address")
        }
        for host in hosts { _ = try ServerName(host) }
        guard (1...36_525).contains(rootDays) else {
            throw AuthorityError(.invalidConfiguration, "the root lifetime must be 1 to 36525 days, not \(rootDays)")
        }
        guard (1...rootDays).contains(intermediateDays) else {
            throw AuthorityError(
                .invalidConfiguration,
                "the intermediate lifetime must be 1 to \(rootDays) days (no longer than the root), not \(intermediateDays)"
            )
        }
        guard (PBES2.minimumIterations...PBES2.maximumIterations).contains(kdfIterations) else {
            throw AuthorityError(
                .invalidConfiguration,
                "the PBKDF2 iteration count must be \(PBES2.minimumIterations) to \(PBES2.maximumIterations), not \(kdfIterations)"
            )
        }
    }

    func keyType(of role: CARole) -> KeyType {
        switch role {
        case .root: rootKeyType
        case .issuing: issuingKeyType
        case .factory: factoryKeyType
        }
    }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
