import Foundation
public import FleetwardPKI

/// The layout of a Fleetward data directory.
///
/// ```
/// DIR/fleetward.json        configuration (written last by init: its presence marks a complete CA)
/// DIR/ca/root.pem  .key     self-signed root CA
/// DIR/ca/issuing.pem .key   issuing CA (devices, servers, OCSP)
/// DIR/ca/factory.pem .key   factory CA (birth certificates)
/// DIR/ca/chain.pem          issuing + root, for servers and clients that need the chain
/// DIR/tls/gateway.pem .key  the gateway's server certificate (with the issuing CA) and key
/// DIR/ca/registry.seal      the registry's secret-hashing key, sealed under the passphrase
/// DIR/registry.sqlite       the embedded registry (devices, tokens, certificates, audit log)
/// ```
/// Keys are PBES2-encrypted PKCS#8 PEM with mode 0600; directories are 0700.
public struct DataDirectory: Sendable {
    /// The directory's path.
    public let path: String

    public init(path: String) {
        // Keep relative paths relative to where the user ran the command, but normalise.
        self.path = URL(fileURLWithPath: path).standardizedFileURL.path
    }

    public var configurationPath: String { path + "/fleetward.json" }
    public var caDirectory: String { path + "/ca" }
    public var tlsDirectory: String { path + "/tls" }
    public var chainPath: String { caDirectory + "/chain.pem" }
    public var gatewayCertificatePath: String { tlsDirectory + "/gateway.pem" }
    /// The embedded registry database.
    public var registryDatabasePath: String { path + "/registry.sqlite" }
    /// The sealed key the registry hashes secrets with.
    public var registryKeyPath: String { caDirectory + "/registry.seal" }
    /// The root's CRL, signed where the root key is (`fleetward ca root-crl`) when it is kept off this host.
    public var offlineRootCRLPath: String { caDirectory + "/root.crl" }

    /// The certificate path of the CA with `role`.
    public func certificatePath(of role: CARole) -> String { caDirectory + "/\(role.rawValue).pem" }

    /// The key name (for an ``EncryptedFileKeyCustodian`` rooted at ``path``) of the CA with `role`.
    public static func keyName(of role: CARole) -> String { "ca/\(role.rawValue)" }

    /// The key name of the gateway's server key.
    public static let gatewayKeyName = "tls/gateway"

    /// Whether the directory already holds (part of) a Fleetward CA.
    public var holdsAuthority: Bool {
        FileManager.default.fileExists(atPath: configurationPath) || FileManager.default.fileExists(atPath: caDirectory)
    }
}
