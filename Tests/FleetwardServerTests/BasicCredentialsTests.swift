import Foundation
import Testing

@testable import FleetwardServer

@Suite struct BasicCredentialsTests {
    func header(_ scheme: String, _ text: String) -> String { scheme + " " + Data(text.utf8).base64EncodedString() }

    @Test func readsUserAndPasswordWithAnyCaseOfTheScheme() throws {
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            let credentials = try #require(ESTService.basicCredentials(header(scheme, "SN-1:secret")))
            #expect(credentials.user == "SN-1" && credentials.password == "secret")
        }
        // The password may hold colons; only the first one splits; surrounding blanks are ignored.
        let withColons = try #require(ESTService.basicCredentials(header("Basic", "SN-1:a:b:") + "  "))
        #expect(withColons.user == "SN-1" && withColons.password == "a:b:")
        let empty = try #require(ESTService.basicCredentials(header("Basic", "SN-1:")))
        #expect(empty.password.isEmpty)
    }

    @Test func refusesWhatIsNotBasicCredentials() {
        for value in [
            "Bearer abc", "Basic", "Basic ", "Basic !!!", "Basic U04tMQ", header("Basic", "no-colon"),
            "Basic " + Data([0x53, 0x3A, 0xFF, 0xFE]).base64EncodedString(), "Basix " + Data("a:b".utf8).base64EncodedString(),
            header("Basic", String(repeating: "x", count: 900) + ":y"),
        ] {
            #expect(ESTService.basicCredentials(value) == nil, "\(value.prefix(40))")
        }
        #expect(
            ESTService.isBasic("basic x") && ESTService.isBasic("Basic x") && !ESTService.isBasic("Basi") && !ESTService.isBasic("Bearer x")
        )
        // Only letters fold: a control byte is not a space, "BASIC" with a NUL is not the scheme.
        #expect(!ESTService.isBasic("Basic\u{0}x") && !ESTService.isBasic("B\u{1}sic x") && ESTService.isBasic("BASIC x"))
        #expect(
            ESTService.hasPrefix("Application/PKCS10; charset=x", ignoringCase: "application/pkcs10")
                && !ESTService.hasPrefix("application\u{F}pkcs10", ignoringCase: "application/pkcs10")
                && !ESTService.hasPrefix("application/pkcs", ignoringCase: "application/pkcs10"))
    }
}
