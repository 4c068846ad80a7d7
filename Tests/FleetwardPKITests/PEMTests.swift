import FleetwardPKI
import Testing
import X509

@Suite struct PEMTests {
    @Test func roundTripsWithTrailingNewlineAnd64CharacterLines() throws {
        let der = (0..<300).map { UInt8($0 % 256) }
        let pem = PEM.encode(der, label: "CERTIFICATE")
        #expect(pem.hasSuffix("-----END CERTIFICATE-----\n"))
        let bodyLines = pem.split(separator: "\n").dropFirst().dropLast()
        #expect(bodyLines.dropLast().allSatisfy { $0.count == 64 })
        #expect(try PEM.decode(pem, label: "CERTIFICATE") == der)
    }

    @Test func decodesConcatenatedBlocksInOrder() throws {
        let text = PEM.encode([0x30, 0x00], label: "CERTIFICATE") + PEM.encode([0x30, 0x01, 0x05], label: "CERTIFICATE")
        let blocks = try PEM.decodeAll(text)
        #expect(blocks.map(\.der) == [[0x30, 0x00], [0x30, 0x01, 0x05]])
    }

    @Test(arguments: [
        "",
        "not pem at all",
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ])
    func rejectsMalformedPEM(_ text: String) {
        let error = #expect(throws: PKIError.self) { try PEM.decodeAll(text) }
        #expect(error?.code == .malformedInput)
    }

    @Test func rejectsLegacyEncryptedPEMHeaders() {
        let text =
            "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n"
        let error = #expect(throws: PKIError.self) { try PEM.decodeAll(text) }
        #expect(error?.code == .unsupportedEncryption)
    }

    @Test func missingLabelNamesWhatWasFound() {
        let text = PEM.encode([0x30, 0x00], label: "PUBLIC KEY")
        let error = #expect(throws: PKIError.self) { try PEM.decode(text, label: "CERTIFICATE") }
        #expect(error?.message.contains("PUBLIC KEY") == true)
    }
}
