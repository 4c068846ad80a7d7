import Crypto
import FleetwardDevice
import FleetwardTestSupport
import Foundation
import Testing

/// The device's credential store: keys made on the device and kept only sealed, under a
/// device-unique key that lives elsewhere; tampering is a clear error, never a crash; and what the
/// custody signs checks out with openssl.
@Suite struct SealedStoreTests {
    let directory: TemporaryDirectory
    let openssl: Tool

    init() throws {
        directory = try TemporaryDirectory(prefix: "fleetward-sealed")
        openssl = try Tool.openssl()
    }

    func store(uniqueKeyPath: String? = nil) throws -> CredentialStore {
        let key = try DeviceUniqueKey.load(path: uniqueKeyPath ?? directory.file("partition/device.key"), createIfMissing: true)
        return CredentialStore(directory: directory.file("credentials"), uniqueKey: key)
    }

    func permissions(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
    }

    @Test func aKeyIsMadeSealedAndReopensWithTheSameUniqueKeyOnly() throws {
        let store = try store()
        let key = try store.custody.generateKey(purpose: .operational)
        let file = directory.file("credentials/keys/\(key.reference).sealed")
        let sealed = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect(try permissions(file) == 0o600)
        #expect(try permissions(directory.file("credentials/keys")) == 0o700)
        #expect(try permissions(directory.file("partition/device.key")) == 0o600)
        // Sealed: neither a PEM key nor the public key's bytes appear; it opens to the same key.
        #expect(!String(decoding: sealed, as: UTF8.self).contains("PRIVATE KEY"))
        #expect(sealed.count == 8 + 12 + 32 + 16, "magic, nonce, the 32-byte scalar, tag")
        let reopened = try store.custody.key(reference: key.reference)
        #expect(reopened.publicKey.rawRepresentation == key.publicKey.rawRepresentation)
        let message = Array("hello".utf8)
        #expect(key.publicKey.isValidSignature(try reopened.signature(for: message), for: message))
        #expect(try store.custody.references() == [key.reference])

        // Another device-unique key opens nothing.
        let other = try CredentialStore(directory: directory.file("credentials"), uniqueKey: DeviceUniqueKey.ephemeral())
        #expect(throws: DeviceError(.sealedStore, "")) { _ = try other.custody.key(reference: key.reference) }
    }

    @Test func everyFlippedByteAndEveryTruncationIsAClearErrorNotACrash() throws {
        let store = try store()
        let key = try store.custody.generateKey(purpose: .operational)
        let file = directory.file("credentials/keys/\(key.reference).sealed")
        let original = try Data(contentsOf: URL(fileURLWithPath: file))
        for index in 0..<original.count {
            var damaged = original
            damaged[index] ^= 0x01
            try damaged.write(to: URL(fileURLWithPath: file))
            do {
                _ = try store.custody.key(reference: key.reference)
                Issue.record("byte \(index) flipped and the key still opened")
            } catch let error as DeviceError {
                #expect(error.code == .sealedStore)
                #expect(error.message.contains("altered or truncated"), "\(error)")
            }
        }
        for length in [0, 1, 8, 20, original.count - 1] {
            try original.prefix(length).write(to: URL(fileURLWithPath: file))
            #expect(throws: DeviceError(.sealedStore, "")) { _ = try store.custody.key(reference: key.reference) }
        }
        // A sealed key renamed to another reference does not open as that key.
        try original.write(to: URL(fileURLWithPath: file))
        let second = try store.custody.generateKey(purpose: .operational)
        try original.write(to: URL(fileURLWithPath: directory.file("credentials/keys/\(second.reference).sealed")))
        #expect(throws: DeviceError(.sealedStore, "")) { _ = try store.custody.key(reference: second.reference) }
        #expect(try store.custody.key(reference: key.reference).publicKey.rawRepresentation == key.publicKey.rawRepresentation)
    }

    @Test func theCredentialIsOneSealedFileReplacedAtomically() throws {
        let store = try store()
        #expect(try store.load() == nil)
        let key = try store.custody.generateKey(purpose: .operational)
        let orphan = try store.custody.generateKey(purpose: .operational)
        var credential = DeviceCredential(
            deviceID: "dev-1",
            operational: .init(keyReference: key.reference, chain: [Data([1, 2, 3])], issuedAt: Date(timeIntervalSince1970: 1000)))
        try store.save(credential)
        #expect(try permissions(store.credentialPath) == 0o600)
        #expect(try store.load() == credential)
        credential.acceptedManifestVersion = 7
        try store.save(credential)
        #expect(try store.load()?.acceptedManifestVersion == 7)
        // No temporary files are left beside it.
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory.file("credentials")).sorted() == ["credential.sealed", "keys"])
        #expect(!String(decoding: try Data(contentsOf: URL(fileURLWithPath: store.credentialPath)), as: UTF8.self).contains("dev-1"))
        // A key no credential refers to (an interrupted renewal) is destroyed; the live one stays.
        try store.removeOrphanKeys(keeping: credential)
        #expect(try store.custody.references() == [key.reference])
        _ = orphan

        var sealed = try Data(contentsOf: URL(fileURLWithPath: store.credentialPath))
        sealed[sealed.count / 2] ^= 0x80
        try sealed.write(to: URL(fileURLWithPath: store.credentialPath))
        #expect(throws: DeviceError(.sealedStore, "")) { _ = try store.load() }
    }

    @Test func aDamagedOrMissingUniqueKeyIsNamed() throws {
        let path = directory.file("partition/short.key")
        try FileManager.default.createDirectory(atPath: directory.file("partition"), withIntermediateDirectories: true)
        try Data(repeating: 7, count: 31).write(to: URL(fileURLWithPath: path))
        #expect(throws: DeviceError(.sealedStore, "")) { _ = try DeviceUniqueKey.load(path: path) }
        #expect(throws: DeviceError(.sealedStore, "")) { _ = try DeviceUniqueKey.load(path: directory.file("nowhere/device.key")) }
    }

    @Test func theCustodyKeySignsCSRsAndMessagesThatOpenSSLVerifies() throws {
        let store = try store()
        let key = try store.custody.generateKey(purpose: .operational)
        let csr = try DeviceCSR.make(key: key, deviceID: "dev-csr")
        try Data(csr).write(to: URL(fileURLWithPath: directory.file("req.der")))
        let verified = try openssl.run(["req", "-inform", "DER", "-in", directory.file("req.der"), "-verify", "-noout", "-subject"])
        #expect(verified.succeeded, "\(verified)")
        #expect((verified.stdout + verified.stderr).contains("CN=dev-csr") || (verified.stdout + verified.stderr).contains("CN = dev-csr"))
        #expect((verified.stdout + verified.stderr).lowercased().contains("verify ok"), "\(verified)")

        // A signed telemetry message: openssl dgst -verify with the CSR's public key.
        let body = Array(#"{"t":21.5}"#.utf8)
        let headers = try SignedMessage.headers(for: body, device: "dev-csr", key: key)
        let value = { (name: String) in headers.first { $0.name == name }!.value }
        #expect(SignedMessage.isValidNonce(value(SignedMessage.nonceHeader)))
        let signed = SignedMessage.signedBytes(
            device: "dev-csr", timestamp: Int64(value(SignedMessage.timestampHeader))!, nonce: value(SignedMessage.nonceHeader), body: body)
        try Data(signed).write(to: URL(fileURLWithPath: directory.file("signed.bin")))
        try Data(base64Encoded: value(SignedMessage.signatureHeader))!.write(to: URL(fileURLWithPath: directory.file("sig.der")))
        let publicKey = try openssl.run(["req", "-inform", "DER", "-in", directory.file("req.der"), "-noout", "-pubkey"])
        try publicKey.stdout.write(toFile: directory.file("pub.pem"), atomically: true, encoding: .utf8)
        let check = try openssl.run([
            "dgst", "-sha256", "-verify", directory.file("pub.pem"), "-signature", directory.file("sig.der"), directory.file("signed.bin"),
        ])
        #expect(check.succeeded && check.stdout.contains("Verified OK"), "\(check)")
        // The same bytes with one more character do not verify.
        try Data(signed + [0x20]).write(to: URL(fileURLWithPath: directory.file("signed.bin")))
        #expect(
            !(try openssl.run([
                "dgst", "-sha256", "-verify", directory.file("pub.pem"), "-signature", directory.file("sig.der"),
                directory.file("signed.bin"),
            ]).succeeded))
    }

    @Test func renewalIsDueAtTwoThirdsAndBackoffGrowsWithJitterUpToItsCap() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        #expect(RenewalPolicy.renewalTime(notBefore: start, notAfter: start.addingTimeInterval(90)) == start.addingTimeInterval(60))
        var backoff = Backoff(base: 1, cap: 60)
        var waits: [Double] = []
        for _ in 0..<12 { waits.append(backoff.next()) }
        for (attempt, wait) in waits.enumerated() {
            let ceiling = min(60, pow(2, Double(attempt)))
            #expect(wait >= ceiling / 2 && wait <= ceiling, "attempt \(attempt): \(wait)")
        }
        #expect(Set(waits.suffix(6)).count > 1, "jittered, not lockstep")
        backoff.reset()
        #expect(backoff.next() <= 1)
    }
}
