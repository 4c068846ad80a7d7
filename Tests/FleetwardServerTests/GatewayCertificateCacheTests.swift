import Crypto
import FleetwardPKI
import FleetwardRegistry
import FleetwardRegistrySQLite
import FleetwardTestSupport
import Foundation
import Logging
import SwiftASN1
import Synchronization
import Testing
import X509

@testable import FleetwardServer

/// The gateway remembers certificates it verified, by their bytes, so a reconnecting device skips
/// the parse and the CA signature check; the time and the registry are still checked every time.
@Suite struct GatewayCertificateCacheTests {
    final class Clock: Sendable {
        let time = Mutex(TestPKI.now)
        func callAsFunction() -> Date { time.withLock { $0 } }
    }

    @Test func aRememberedCertificateIsStillRefusedOnceExpiredOrBeforeItsTime() throws {
        let pki = try TestPKI()
        let directory = try TemporaryDirectory(prefix: "fleetward-gateway-cache")
        defer { directory.remove() }
        let clock = Clock()
        let gateway = Gateway(
            registrar: Registrar(store: try SQLiteRegistryStore(path: directory.file("registry.sqlite"))), issuing: pki.issuing,
            logger: Logger(label: "test"), now: { clock() })
        var rng = SeededRandom(seed: 7)
        let key = P256.Signing.PrivateKey()
        let issued = try pki.issuer().issue(
            publicKey: Certificate.PublicKey(key.publicKey), profile: .device, identity: .device(try DeviceID("cache-1")), days: 30,
            now: TestPKI.now, using: &rng)
        let certificate = try Certificate(derEncoded: issued.der)

        let (id, first) = try gateway.checkCertificate(issued.der)
        #expect(id.rawValue == "cache-1")
        let (_, again) = try gateway.checkCertificate(issued.der)
        #expect(again.serial == first.serial && again.certificateSHA256 == first.certificateSHA256)

        clock.time.withLock { $0 = certificate.notValidAfter.addingTimeInterval(1) }
        #expect(throws: Gateway.Refusal.self) { try gateway.checkCertificate(issued.der) }
        clock.time.withLock { $0 = certificate.notValidBefore.addingTimeInterval(-1) }
        #expect(throws: Gateway.Refusal.self) { try gateway.checkCertificate(issued.der) }

        // The same bytes with one flipped in the signature: another digest, checked in full, refused.
        var forged = issued.der
        forged[forged.count - 3] ^= 0x01
        clock.time.withLock { $0 = TestPKI.now.addingTimeInterval(60) }
        #expect(throws: Gateway.Refusal.self) { try gateway.checkCertificate(forged) }
        #expect(try gateway.checkCertificate(issued.der).0 == id)
    }
}
