import FleetwardPKI
import Testing
import X509

@Suite struct IdentityTests {
    @Test(arguments: ["D-0042", "a", "SN.12345", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.", "0"])
    func acceptsDeviceIDs(_ text: String) throws {
        let id = try DeviceID(text)
        #expect(id.uri == "urn:fleetward:device:" + text)
    }

    @Test(arguments: [
        "", "-lead", ".lead", "has space", "has:colon", "under_score", "semi;colon", "quote'", "slash/", "ünïcode",
        "x' OR '1'='1", String(repeating: "a", count: 65), "tab\t", "nul\u{0}",
    ])
    func rejectsDeviceIDs(_ text: String) {
        let error = #expect(throws: PKIError.self) { try DeviceID(text) }
        #expect(error?.code == .invalidIdentity)
    }

    @Test func serverNamesParseDNSAndIPs() throws {
        #expect(try ServerName("127.0.0.1") == .ip([127, 0, 0, 1]))
        #expect(try ServerName("::1") == .ip([UInt8](repeating: 0, count: 15) + [1]))
        #expect(try ServerName("[::1]").description == "::1")
        #expect(try ServerName("Gateway.Example.COM") == .dns("gateway.example.com"))
        #expect(try ServerName("*.example.com") == .dns("*.example.com"))
        for bad in ["", "a..b", "-a.com", "a_b.com", "*.com", "x.*.com", "1::2::3", String(repeating: "a", count: 64) + ".com"] {
            #expect(throws: PKIError.self, "\(bad)") { try ServerName(bad) }
        }
    }

    @Test func keyTypesParseCommonSpellings() {
        #expect(KeyType(parsing: "P-256") == .p256)
        #expect(KeyType(parsing: "prime256v1") == .p256)
        #expect(KeyType(parsing: "p384") == .p384)
        #expect(KeyType(parsing: "secp384r1") == .p384)
        #expect(KeyType(parsing: "P-521") == nil)
        #expect(KeyType(parsing: "rsa") == nil)
    }

    @Test func profilesRoundTripTheirPolicyOIDs() {
        for profile in CertificateProfile.allCases {
            #expect(CertificateProfile(policyOID: profile.policyOID) == profile)
            #expect(profile.policyOID.hasPrefix(CertificateProfile.fleetwardArc))
        }
    }
}
