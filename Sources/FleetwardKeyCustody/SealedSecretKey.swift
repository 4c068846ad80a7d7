public import Crypto
public import FleetwardPKI
import Foundation
import SwiftASN1

/// A 256-bit symmetric key kept in the data directory, sealed under the passphrase with the same
/// PBES2 scheme as the CA keys (PEM label `FLEETWARD SEALED KEY`, mode 0600).
///
/// The registry hashes factory secrets and tokens with it (HMAC-SHA-256), so a copy of the
/// database alone reveals nothing.
public enum SealedSecretKey {
    public static let pemLabel = "FLEETWARD SEALED KEY"

    /// Opens the key at `path`, creating and sealing a new random one when the file does not exist.
    ///
    /// - Throws: ``KeyCustodyError`` with `wrongPassphrase`, `malformedKey` or `insecurePermissions`.
    public static func openOrCreate(at path: String, passphrase: Passphrase, iterations: Int = PBES2.defaultIterations) throws
        -> SymmetricKey
    {
        if FileManager.default.fileExists(atPath: path) {
            return try open(at: path, passphrase: passphrase)
        }
        let key = SymmetricKey(size: .bits256)
        var payload = DER.Serializer()
        try key.withUnsafeBytes { bytes in try payload.serialize(ASN1OctetString(contentBytes: ArraySlice(bytes))) }
        var rng = SystemRandomNumberGenerator()
        let sealed = try PBES2.encrypt(pkcs8: payload.serializedBytes, passphrase: passphrase.bytes, iterations: iterations, using: &rng)
        try AtomicFile.write(Array(PEM.encode(sealed, label: pemLabel).utf8), to: path, permissions: 0o600)
        return key
    }

    /// Opens an existing sealed key.
    public static func open(at path: String, passphrase: Passphrase) throws -> SymmetricKey {
        let bytes = try AtomicFile.read(path, limit: 64 * 1024)
        if let mode = AtomicFile.permissions(of: path), mode & 0o077 != 0 {
            throw KeyCustodyError(
                .insecurePermissions, "\(path) has mode \(String(mode, radix: 8)); sealed keys must be 600 (chmod 600 \(path))")
        }
        do {
            let der = try PEM.decode(String(decoding: bytes, as: UTF8.self), label: pemLabel)
            let payload = try PBES2.decrypt(der, passphrase: passphrase.bytes)
            let octets = try ASN1OctetString(derEncoded: payload)
            guard octets.bytes.count == 32 else { throw PKIError(.malformedInput, "sealed key is not 32 bytes") }
            return SymmetricKey(data: Array(octets.bytes))
        } catch let error as PKIError where error.code == .wrongPassphrase {
            throw KeyCustodyError(.wrongPassphrase, "wrong passphrase for \(path)", underlying: error)
        } catch {
            throw KeyCustodyError(.malformedKey, "\(path) is not a sealed key Fleetward can read: \(error)", underlying: error)
        }
    }
}
