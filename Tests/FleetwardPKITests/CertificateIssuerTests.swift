import Crypto
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import SwiftASN1
import Testing
@_spi(FixedExpiryValidationTime) import X509

@Suite struct CertificateIssuerTests {
    let pki: TestPKI
    init() throws { pki = try TestPKI() }

    func request(_ subject: DistinguishedName = DistinguishedName(), key: Certificate.PrivateKey? = nil) throws -> CertificateRequest {
        try CertificateRequest(der: try TestPKI.csr(key: key ?? Certificate.PrivateKey(P256.Signing.PrivateKey()), subject: subject))
    }

    func issue(
        _ profile: CertificateProfile, _ identity: CertificateIdentity, role: CARole = .issuing, days: Int? = nil,
        now: Date = TestPKI.now, key: Certificate.PrivateKey? = nil
    ) throws -> (IssuedCertificate, Certificate) {
        var rng = SeededRandom(seed: 99)
        let issued = try pki.issuer(role).issue(
            try request(key: key), profile: profile, identity: identity, days: days, now: now, using: &rng)
        return (issued, try Certificate(derEncoded: issued.der))
    }

    @Test func deviceCertificateCarriesTheDeviceProfile() throws {
        let id = try DeviceID("D-0042")
        let (issued, certificate) = try issue(.device, .device(id))
        #expect(certificate.issuer == pki.issuing.subject)
        #expect(CertificateSummary.format(certificate.subject) == "O=Test Fleet, CN=D-0042, serialNumber=D-0042")
        #expect(try certificate.extensions.basicConstraints == .notCertificateAuthority)
        let ku = try #require(try certificate.extensions.keyUsage)
        #expect(ku.digitalSignature && !ku.keyCertSign && !ku.keyEncipherment)
        #expect(certificate.extensions.first { $0.oid == .X509ExtensionID.keyUsage }?.critical == true)
        #expect(certificate.extensions.first { $0.oid == .X509ExtensionID.basicConstraints }?.critical == true)
        #expect(try certificate.extensions.extendedKeyUsage == ExtendedKeyUsage([.clientAuth]))
        #expect(
            try certificate.extensions.subjectAlternativeNames
                == SubjectAlternativeNames([.uniformResourceIdentifier("urn:fleetward:device:D-0042")]))
        #expect(
            try certificate.extensions.subjectKeyIdentifier?.keyIdentifier == CACertificateFactory.keyIdentifier(of: certificate.publicKey))
        #expect(
            try certificate.extensions.authorityKeyIdentifier?.keyIdentifier
                == CACertificateFactory.keyIdentifier(of: pki.issuing.publicKey))
        let summary = try CertificateSummary(certificate: certificate, der: issued.der)
        #expect(summary.profile == "device")
        #expect(summary.deviceID == "D-0042")
        #expect(certificate.notValidAfter == TestPKI.now.addingTimeInterval(30 * 86_400))
        #expect(certificate.notValidBefore == TestPKI.now.addingTimeInterval(-60))
        #expect(certificate.serialNumber == issued.serialNumber)
    }

    @Test func encodingIsCanonicalDER() throws {
        for (profile, identity, role) in [
            (CertificateProfile.device, CertificateIdentity.device(try DeviceID("D-1")), CARole.issuing),
            (.birth, .device(try DeviceID("D-1")), .factory),
            (.server, .server([try ServerName("gw.example.com"), try ServerName("10.0.0.1"), try ServerName("::1")]), .issuing),
            (.ocsp, .ocspResponder, .factory),
        ] {
            let (issued, certificate) = try issue(profile, identity, role: role)
            // swift-certificates re-encodes what it parsed; any non-canonical byte of ours would differ.
            #expect(try TestPKI.derBytes(certificate) == issued.der, "\(profile)")
            #expect(try pki.issuer(role).caCertificate.publicKey.isValidSignature(certificate.signature, for: certificate))
        }
    }

    @Test func chainsValidateUnderRFC5280() async throws {
        let (_, device) = try issue(.device, .device(try DeviceID("D-9")))
        var verifier = Verifier(rootCertificates: CertificateStore([pki.root])) {
            RFC5280Policy(fixedExpiryValidationTime: TestPKI.now.addingTimeInterval(86_400))
        }
        let result = await verifier.validate(leaf: device, intermediates: CertificateStore([pki.issuing]))
        guard case .validCertificate(let chain) = result else {
            Issue.record("device chain did not validate: \(result)")
            return
        }
        #expect(chain.count == 3)

        // Anchored at the wrong intermediate it must fail.
        let wrong = await verifier.validate(leaf: device, intermediates: CertificateStore([pki.factory]))
        guard case .couldNotValidate = wrong else {
            Issue.record("device chain validated through the factory CA")
            return
        }
    }

    @Test func subjectAndExtensionsNeverComeFromTheCSR() throws {
        var rng = SeededRandom(seed: 3)
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let csr = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName {
                OrganizationName("Evil Corp")
                CommonName("D-5")
            },
            privateKey: key,
            attributes: try CertificateSigningRequest.Attributes([
                .init(
                    ExtensionRequest(
                        extensions: try Certificate.Extensions {
                            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                            SubjectAlternativeNames([.dnsName("evil.example")])
                        }))
            ]),
            signatureAlgorithm: .ecdsaWithSHA256
        )
        let request = try CertificateRequest(der: try TestPKI.derBytes(csr))
        let issued = try pki.issuer().issue(
            request, profile: .device, identity: .device(try DeviceID("D-5")), now: TestPKI.now, using: &rng)
        let certificate = try Certificate(derEncoded: issued.der)
        #expect(try certificate.extensions.basicConstraints == .notCertificateAuthority)
        #expect(
            try certificate.extensions.subjectAlternativeNames
                == SubjectAlternativeNames([.uniformResourceIdentifier("urn:fleetward:device:D-5")]))
        #expect(!CertificateSummary.format(certificate.subject).contains("Evil"))
    }

    @Test func birthCertificatesComeOnlyFromTheFactoryCA() throws {
        let (issued, certificate) = try issue(.birth, .device(try DeviceID("D-3")), role: .factory)
        #expect(certificate.issuer == pki.factory.subject)
        #expect(try CertificateSummary(certificate: certificate, der: issued.der).policies == [CertificateProfile.birth.policyOID])
        let error = #expect(throws: PKIError.self) { try issue(.birth, .device(try DeviceID("D-3")), role: .issuing) }
        #expect(error?.code == .invalidRequest)
        let deviceError = #expect(throws: PKIError.self) { try issue(.device, .device(try DeviceID("D-3")), role: .factory) }
        #expect(deviceError?.code == .invalidRequest)
    }

    @Test func lifetimeIsCappedAtTheCAsExpiry() throws {
        let (_, certificate) = try issue(.birth, .device(try DeviceID("D-3")), role: .factory, days: 36_500)
        #expect(certificate.notValidAfter == pki.factory.notValidAfter)
    }

    @Test(arguments: [0, -1, 826])
    func refusesLifetimesOutsideTheProfile(_ days: Int) throws {
        let error = #expect(throws: PKIError.self) { try issue(.device, .device(try DeviceID("D-3")), days: days) }
        #expect(error?.code == .invalidRequest)
    }

    @Test func refusesToIssueFromAnExpiredCA() throws {
        let error = #expect(throws: PKIError.self) {
            try issue(.device, .device(try DeviceID("D-3")), now: pki.issuing.notValidAfter.addingTimeInterval(1))
        }
        #expect(error?.code == .invalidRequest)
    }

    @Test func refusesAProfileWithTheWrongKindOfIdentity() throws {
        let error = #expect(throws: PKIError.self) { try issue(.device, .server([try ServerName("x.example")])) }
        #expect(error?.code == .invalidRequest)
        let serverError = #expect(throws: PKIError.self) { try issue(.server, .server([])) }
        #expect(serverError?.code == .invalidRequest)
    }

    @Test func ocspResponderHasOCSPSigningAndNoCheck() throws {
        let (_, certificate) = try issue(.ocsp, .ocspResponder)
        #expect(try certificate.extensions.extendedKeyUsage == ExtendedKeyUsage([.ocspSigning]))
        #expect(certificate.extensions.contains { $0.oid == [1, 3, 6, 1, 5, 5, 7, 48, 1, 5] })
    }

    @Test func serverCertificateNamesEveryHost() throws {
        let (_, certificate) = try issue(
            .server, .server([try ServerName("gw.example.com"), try ServerName("127.0.0.1"), try ServerName("::1")]))
        let names = try #require(try certificate.extensions.subjectAlternativeNames)
        #expect(
            Array(names) == [
                .dnsName("gw.example.com"),
                .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))),
            ])
        #expect(try certificate.extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth]))
    }

    @Test func datesFrom2050OnAreGeneralizedTime() throws {
        // A hierarchy that lives past 2050 so the cap does not hide the encoding.
        let longPKI = try TestPKI(rootDays: 36_500, intermediateDays: 36_500)
        var rng = SeededRandom(seed: 5)
        let issued = try longPKI.issuer(.factory).issue(
            try request(), profile: .birth, identity: .device(try DeviceID("D-2050")), days: 36_500, now: TestPKI.now, using: &rng
        )
        #expect(issued.der.firstIndex(ofSubsequence: [0x18, 0x0F]) != nil, "no GeneralizedTime in the certificate")
        let certificate = try Certificate(derEncoded: issued.der)
        #expect(certificate.notValidAfter == TestPKI.now.addingTimeInterval(36_500 * 86_400))
    }

    @Test func issuerRefusesAKeyThatDoesNotMatchItsCertificate() {
        let error = #expect(throws: PKIError.self) {
            try CertificateIssuer(caCertificate: pki.issuing, key: SigningKey(generating: .p256), role: .issuing, organization: "x")
        }
        #expect(error?.code == .invalidRequest)
    }
}
