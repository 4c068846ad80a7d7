import Crypto
import FleetwardAuthority
import FleetwardKeyCustody
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Testing
import SwiftASN1
import X509

@Suite struct CAHierarchyTests {
    static let passphrase = Passphrase("correct horse battery")

    func create(_ dir: TemporaryDirectory, _ configuration: AuthorityConfiguration = .init(kdfIterations: 2000), force: Bool = false) throws
        -> CAHierarchy
    {
        try CAHierarchy.create(
            in: DataDirectory(path: dir.file("data")), configuration: configuration, passphrase: Self.passphrase,
            force: force, now: TestPKI.now
        )
    }

    @Test func defaultHierarchyHasTheDocumentedShape() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let created = try create(dir)
        let loaded = try CAHierarchy.load(from: DataDirectory(path: dir.file("data")))
        #expect(loaded.root.der == created.root.der)
        #expect(loaded.configuration == created.configuration)
        #expect(loaded.root.certificate.signatureAlgorithm == .ecdsaWithSHA384)
        #expect(P384.Signing.PublicKey(loaded.root.certificate.publicKey) != nil)
        #expect(P256.Signing.PublicKey(loaded.issuing.certificate.publicKey) != nil)
        #expect(P256.Signing.PublicKey(loaded.factory.certificate.publicKey) != nil)
        #expect(loaded.root.certificate.notValidAfter == TestPKI.now.addingTimeInterval(7305 * 86_400))
        #expect(loaded.issuing.certificate.notValidAfter == TestPKI.now.addingTimeInterval(1826 * 86_400))
        #expect(CertificateSummary.format(loaded.issuing.certificate.subject) == "O=Fleetward, CN=Fleetward Issuing CA")
        for mode in [dir.file("data"), dir.file("data/ca"), dir.file("data/tls")].map(AtomicFile.permissions(of:)) {
            #expect(mode == 0o700)
        }
        for name in ["ca/root.key", "ca/issuing.key", "ca/factory.key", "tls/gateway.key"] {
            #expect(AtomicFile.permissions(of: dir.file("data/" + name)) == 0o600, "\(name)")
        }
    }

    @Test func keyTypesOrganizationAndLifetimesFollowTheConfiguration() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let hierarchy = try create(
            dir,
            AuthorityConfiguration(
                organization: "Acme Sensors", hosts: ["gw.acme.example"], rootKeyType: .p256, issuingKeyType: .p384,
                factoryKeyType: .p256, rootDays: 3650, intermediateDays: 365, kdfIterations: 2000
            ))
        #expect(P256.Signing.PublicKey(hierarchy.root.certificate.publicKey) != nil)
        #expect(P384.Signing.PublicKey(hierarchy.issuing.certificate.publicKey) != nil)
        #expect(hierarchy.root.certificate.notValidAfter == TestPKI.now.addingTimeInterval(3650 * 86_400))
        #expect(hierarchy.factory.certificate.notValidAfter == TestPKI.now.addingTimeInterval(365 * 86_400))
        #expect(CertificateSummary.format(hierarchy.root.certificate.subject) == "O=Acme Sensors, CN=Acme Sensors Root CA")
        let gateway = try CertificateDecoder.certificates(from: try AtomicFile.read(dir.file("data/tls/gateway.pem")))
        #expect(gateway.count == 2, "gateway.pem holds the leaf and the issuing CA")
        #expect(try gateway[0].certificate.extensions.subjectAlternativeNames == SubjectAlternativeNames([.dnsName("gw.acme.example")]))
    }

    @Test func refusesAnExistingCAUnlessForcedAndChangesNothing() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let first = try create(dir)
        let rootKeyBefore = try AtomicFile.read(dir.file("data/ca/root.key"))
        let error = #expect(throws: AuthorityError.self) { try create(dir) }
        #expect(error?.code == .alreadyInitialized)
        #expect(try AtomicFile.read(dir.file("data/ca/root.key")) == rootKeyBefore)
        #expect(try CAHierarchy.load(from: DataDirectory(path: dir.file("data"))).root.der == first.root.der)

        let replaced = try create(dir, force: true)
        #expect(replaced.root.der != first.root.der)
        #expect(try CAHierarchy.load(from: DataDirectory(path: dir.file("data"))).root.der == replaced.root.der)
    }

    @Test func badConfigurationIsRefusedBeforeAnythingIsWritten() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let cases: [AuthorityConfiguration] = [
            .init(organization: String(repeating: "x", count: 49), kdfIterations: 2000),
            .init(hosts: [], kdfIterations: 2000),
            .init(hosts: ["not a host!"], kdfIterations: 2000),
            .init(rootDays: 100, intermediateDays: 200, kdfIterations: 2000),
            .init(rootDays: 0, kdfIterations: 2000),
            .init(kdfIterations: 10),
        ]
        for configuration in cases {
            #expect(throws: (any Error).self) { try create(dir, configuration) }
            #expect(!FileManager.default.fileExists(atPath: dir.file("data")), "\(configuration) wrote files")
        }
        let weak = #expect(throws: KeyCustodyError.self) {
            try CAHierarchy.create(in: DataDirectory(path: dir.file("data")), configuration: .init(), passphrase: Passphrase("short"))
        }
        #expect(weak?.code == .weakPassphrase)
    }

    @Test func loadingAnEmptyDirectorySaysToRunInit() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let error = #expect(throws: AuthorityError.self) { try CAHierarchy.load(from: DataDirectory(path: dir.path)) }
        #expect(error?.code == .notInitialized)
        #expect(error?.message.contains("fleetward init") == true)
    }

    @Test func anIntermediateFromAnotherRootIsRefused() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        _ = try create(dir)
        let other = try TestPKI()
        try AtomicFile.write(
            Array(PEM.encode(try TestPKI.derBytes(other.issuing), label: "CERTIFICATE").utf8),
            to: dir.file("data/ca/issuing.pem"), permissions: 0o644)
        let error = #expect(throws: AuthorityError.self) { try CAHierarchy.load(from: DataDirectory(path: dir.file("data"))) }
        #expect(error?.code == .invalidConfiguration)
    }

    @Test func authorityIssuesEachProfileFromTheRightCA() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let hierarchy = try create(dir)
        let authority = CertificateAuthority(
            hierarchy: hierarchy,
            custodian: EncryptedFileKeyCustodian(directory: dir.file("data"), passphrase: Self.passphrase)
        )
        let csr = try CertificateRequest(der: try TestPKI.csr(key: Certificate.PrivateKey(P256.Signing.PrivateKey())))
        let id = try DeviceID("D-1")
        let cases: [(CertificateProfile, CertificateIdentity, CARole?, CARole)] = [
            (.device, .device(id), nil, .issuing),
            (.birth, .device(id), nil, .factory),
            (.server, .server([try ServerName("localhost")]), nil, .issuing),
            (.ocsp, .ocspResponder, nil, .issuing),
            (.ocsp, .ocspResponder, .factory, .factory),
        ]
        for (profile, identity, requested, expected) in cases {
            let issued = try authority.issue(csr, profile: profile, identity: identity, issuerRole: requested, now: TestPKI.now)
            let certificate = try Certificate(derEncoded: issued.der)
            #expect(certificate.issuer == hierarchy.member(expected).certificate.subject, "\(profile)")
        }
        let wrongCA = #expect(throws: PKIError.self) {
            try authority.issue(csr, profile: .device, identity: .device(id), issuerRole: .factory, now: TestPKI.now)
        }
        #expect(wrongCA?.code == .invalidRequest)

        let wrongPassphrase = CertificateAuthority(
            hierarchy: hierarchy,
            custodian: EncryptedFileKeyCustodian(directory: dir.file("data"), passphrase: Passphrase("wrong wrong wrong"))
        )
        let error = #expect(throws: KeyCustodyError.self) {
            try wrongPassphrase.issue(csr, profile: .device, identity: .device(id), now: TestPKI.now)
        }
        #expect(error?.code == .wrongPassphrase)
    }
}
