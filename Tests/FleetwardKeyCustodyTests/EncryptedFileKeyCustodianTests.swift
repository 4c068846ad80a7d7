import FleetwardKeyCustody
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Testing
import X509

@Suite struct EncryptedFileKeyCustodianTests {
    static let passphrase = "correct horse battery"

    func custodian(_ dir: TemporaryDirectory, passphrase: String = Self.passphrase) -> EncryptedFileKeyCustodian {
        EncryptedFileKeyCustodian(directory: dir.path, passphrase: Passphrase(passphrase), iterations: 2000)
    }

    @Test(arguments: KeyType.allCases)
    func storesAndReopensAKey(_ type: KeyType) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let key = try custodian(dir).generateKey(named: "ca", type: type)
        let reopened = try custodian(dir).loadKey(named: "ca")
        #expect(reopened.publicKey == key.publicKey)
        #expect(AtomicFile.permissions(of: dir.file("ca.key")) == 0o600)
        let text = String(decoding: try dir.read("ca.key"), as: UTF8.self)
        #expect(text.hasPrefix("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"))
        #expect(!text.contains("BEGIN PRIVATE KEY") && !text.contains("BEGIN EC PRIVATE KEY"))
    }

    @Test func wrongPassphraseIsOneClearError() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try custodian(dir).generateKey(named: "ca", type: .p256)
        let error = #expect(throws: KeyCustodyError.self) { try custodian(dir, passphrase: "not the passphrase").loadKey(named: "ca") }
        #expect(error?.code == .wrongPassphrase)
        #expect(error?.message == "wrong passphrase for \(dir.file("ca.key"))")
        #expect(error?.message.contains("not the passphrase") == false)
    }

    @Test func refusesKeyFilesOthersCanRead() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try custodian(dir).generateKey(named: "ca", type: .p256)
        chmod(dir.file("ca.key"), 0o644)
        let error = #expect(throws: KeyCustodyError.self) { try custodian(dir).loadKey(named: "ca") }
        #expect(error?.code == .insecurePermissions)
    }

    @Test func refusesAnUnencryptedKey() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let plain = PEM.encode(try SigningKey(generating: .p256).pkcs8DER, label: "PRIVATE KEY")
        try AtomicFile.write(Array(plain.utf8), to: dir.file("ca.key"), permissions: 0o600)
        let error = #expect(throws: KeyCustodyError.self) { try custodian(dir).loadKey(named: "ca") }
        #expect(error?.code == .malformedKey)
        #expect(error?.message.contains("unencrypted") == true)
    }

    @Test func everyDamagedKeyFileIsRefusedNeverUsed() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let original = try custodian(dir).generateKey(named: "ca", type: .p256)
        let pem = String(decoding: try dir.read("ca.key"), as: UTF8.self)
        let der = try PEM.decode(pem, label: PBES2.pemLabel)
        for index in stride(from: 0, to: der.count, by: 3) {
            var damaged = der
            damaged[index] ^= 0x10
            try AtomicFile.write(Array(PEM.encode(damaged, label: PBES2.pemLabel).utf8), to: dir.file("ca.key"), permissions: 0o600)
            do {
                let key = try custodian(dir).loadKey(named: "ca")
                #expect(key.publicKey != original.publicKey, "damage at \(index) went unnoticed")
            } catch let error as KeyCustodyError {
                #expect([.wrongPassphrase, .malformedKey].contains(error.code))
            }
        }
        try AtomicFile.write(Array("garbage".utf8), to: dir.file("ca.key"), permissions: 0o600)
        let error = #expect(throws: KeyCustodyError.self) { try custodian(dir).loadKey(named: "ca") }
        #expect(error?.code == .malformedKey)
    }

    @Test func openSSLOpensTheKeyWithThePassphraseAndOnlyWithIt() throws {
        let openssl = try Tool.openssl()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let key = try custodian(dir).generateKey(named: "ca", type: .p384)
        let good = try openssl.run(
            ["pkey", "-in", dir.file("ca.key"), "-passin", "env:FLEETWARD_PASSPHRASE", "-pubout", "-outform", "DER"],
            environment: ["FLEETWARD_PASSPHRASE": Self.passphrase])
        #expect(good.succeeded, "\(good)")
        #expect(Array(good.stdoutBytes.suffix(97)) == Array(key.publicKey.subjectPublicKeyInfoBytes))
        let bad = try openssl.run(["pkey", "-in", dir.file("ca.key"), "-passin", "pass:wrong passphrase", "-noout"])
        #expect(!bad.succeeded)
        let none = try openssl.run(["pkey", "-in", dir.file("ca.key"), "-passin", "pass:", "-noout"])
        #expect(!none.succeeded)
    }

    @Test func passphrasesNeverPrint() {
        let passphrase = Passphrase("hunter2hunter2\n")
        #expect("\(passphrase)" == "Passphrase(redacted)")
        #expect(String(reflecting: passphrase) == "Passphrase(redacted)")
        #expect(passphrase.bytes == Array("hunter2hunter2".utf8))
        #expect(throws: KeyCustodyError.self) { try Passphrase("short").validateForNewKeys() }
    }
}
