import FleetwardPKI
import Foundation
import Testing

@Suite struct Base64Tests {
    @Test func decodesWhatFoundationEncodesForEveryLengthAndSkipsLineBreaks() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<200 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Data(bytes).base64EncodedString()
            #expect(Base64.decode(Array(text.utf8)) == bytes, "length \(length)")
            let wrapped = Data(bytes).base64EncodedString(options: [.lineLength64Characters, .endLineWithCarriageReturn])
            #expect(Base64.decode(Array((wrapped + "\n").utf8), skippingWhitespace: true) == bytes, "wrapped length \(length)")
        }
    }

    @Test func refusesWhatIsNotBase64() {
        for text in [
            "QQ", "QQ=", "Q===", "=QQQ", "QQ=Q", "QQ==QQ==", "QUJD!", "QUJDRA=", "QUJD\n", " QUJD", "QR==", "QUF=", "QUJD-_",
        ] {
            #expect(Base64.decode(Array(text.utf8)) == nil, "\(text.debugDescription)")
        }
        // Whitespace only where it is allowed, and never inside the alphabet's place of padding.
        #expect(Base64.decode(Array("QU\nJD".utf8), skippingWhitespace: true) == Array("ABC".utf8))
        #expect(Base64.decode(Array("QQ==\r\n".utf8), skippingWhitespace: true) == Array("A".utf8))
        #expect(Base64.decode(Array("QQ==x".utf8), skippingWhitespace: true) == nil)
        #expect(Base64.decode(Array("QUJD".utf8)) == Array("ABC".utf8))
        #expect(Base64.decode([UInt8]()) == [])
    }
}
