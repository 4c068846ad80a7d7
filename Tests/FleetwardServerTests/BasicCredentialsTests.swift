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
    }
}
