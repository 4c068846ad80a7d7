import Crypto
@testable import FleetwardDevice
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Testing

/// The device's anti-rollback: a counter kept apart from the credential store, so restoring an
/// older `credential.sealed` does not let an older manifest back in; versions that only go up;
/// and a device-unique key others can read is refused.
@Suite struct AntiRollbackTests {
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory(prefix: "fleetward-rollback")
    }

    func agent() throws -> (DeviceAgent, SealedCounterFile) {
        let keyPath = directory.file("partition/device.key")
        let key = try DeviceUniqueKey.load(path: keyPath, createIfMissing: true)
        let store = CredentialStore(directory: directory.file("credentials"), uniqueKey: key)
        let root = try TestPKI().root
        let config = ProvisioningConfig(est: "127.0.0.1:1", gateway: "127.0.0.1:2", root: PEM.encode(try TestPKI.derBytes(root), label: "CERTIFICATE"))
        return (DeviceAgent(config: config, store: store), SealedCounterFile.beside(uniqueKeyPath: keyPath, uniqueKey: key))
    }

    @Test func restoringAnOlderCredentialStoreDoesNotRollTheCounterBack() throws {
        let (agent, counter) = try agent()
        try agent.store.save(DeviceCredential(deviceID: "RB-1", acceptedManifestVersion: 3))
        var updater = Updater(agent: agent, slots: SlotStore(directory: directory.file("slots")), model: "m")
        updater.counter = counter
        try updater.accept(3)
        let old = try Data(contentsOf: URL(fileURLWithPath: agent.store.credentialPath))
        try updater.accept(7, installed: "1.4.0")
        #expect(try updater.acceptedVersion() == 7)
        #expect(try counter.value() == 7)
        // Someone puts the old credential file back: the counter, elsewhere, still says 7.
        try old.write(to: URL(fileURLWithPath: agent.store.credentialPath))
        #expect(try agent.credential().acceptedManifestVersion == 3)
        #expect(try updater.acceptedVersion() == 7)
        // A counter file edited without the device-unique key does not open.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: counter.path))
        bytes[bytes.count - 1] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: counter.path))
        #expect(throws: DeviceError.self) { try counter.value() }
    }

    @Test func theCounterOnlyGrows() throws {
        let (_, counter) = try agent()
        #expect(try counter.value() == 0)
        try counter.advance(to: 5)
        try counter.advance(to: 2)
        #expect(try counter.value() == 5)
        for value in 6...60 { try counter.advance(to: UInt64(value)) }
        #expect(try counter.value() == 60)
    }

    @Test(arguments: [
        ("1.10.0", "1.9.2", false), ("1.9.2", "1.10.0", true), ("2.0.0-rc.1", "2.0.0", true), ("2.0.0", "2.0.0-rc.1", false),
        ("1.2", "1.2.0", false), ("1.2.0", "1.2.1", true), ("1.0.0-alpha", "1.0.0-beta", true),
    ])
    func versionsAreOrderedAsPeopleWriteThem(_ a: String, _ b: String, _ older: Bool) {
        #expect(ReleaseVersion.isOlder(a, than: b) == older, "\(a) vs \(b)")
    }

    @Test func aDeviceUniqueKeyOthersCanReadIsRefused() throws {
        let path = directory.file("partition/device.key")
        _ = try DeviceUniqueKey.load(path: path, createIfMissing: true)
        chmod(path, 0o644)
        let error = #expect(throws: DeviceError.self) { try DeviceUniqueKey.load(path: path) }
        #expect(error?.description.contains("chmod 600") == true, "\(String(describing: error))")
    }
}
