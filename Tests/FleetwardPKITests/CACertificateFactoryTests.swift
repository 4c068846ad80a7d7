import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Testing
import X509

@Suite struct CACertificateFactoryTests {
    @Test func rootAndIntermediatesHaveCAExtensions() throws {
        let pki = try TestPKI()
        #expect(try pki.root.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 1))
        #expect(try pki.issuing.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        #expect(try pki.factory.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        for certificate in [pki.root, pki.issuing, pki.factory] {
            let ku = try #require(try certificate.extensions.keyUsage)
            #expect(ku.keyCertSign && ku.cRLSign && !ku.digitalSignature)
            #expect(certificate.extensions.first { $0.oid == .X509ExtensionID.keyUsage }?.critical == true)
            #expect(certificate.extensions.first { $0.oid == .X509ExtensionID.basicConstraints }?.critical == true)
            #expect(
                try certificate.extensions.subjectKeyIdentifier?.keyIdentifier
                    == CACertificateFactory.keyIdentifier(of: certificate.publicKey))
            #expect(
                try certificate.extensions.authorityKeyIdentifier?.keyIdentifier
                    == CACertificateFactory.keyIdentifier(of: pki.root.publicKey))
        }
        #expect(pki.root.issuer == pki.root.subject)
        #expect(pki.root.publicKey.isValidSignature(pki.root.signature, for: pki.root))
        #expect(pki.root.publicKey.isValidSignature(pki.issuing.signature, for: pki.issuing))
        #expect(pki.root.signatureAlgorithm == .ecdsaWithSHA384)
        #expect(pki.issuing.signatureAlgorithm == .ecdsaWithSHA384)
    }

    @Test func intermediatesNeverOutliveTheRoot() throws {
        let pki = try TestPKI(rootDays: 100, intermediateDays: 1000)
        #expect(pki.issuing.notValidAfter == pki.root.notValidAfter)
    }

    @Test(arguments: ["", "   ", String(repeating: "x", count: 49), "bad\nname"])
    func rejectsBadOrganizationNames(_ name: String) {
        #expect(throws: PKIError.self) { try CACertificateFactory.validateOrganization(name) }
    }
}
