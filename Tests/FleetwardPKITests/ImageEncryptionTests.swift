import Crypto
import FleetwardPKI
import FleetwardTestSupport
import Foundation
import Testing

/// Encrypted images: chunked AES-256-GCM that authenticates every chunk and its place, and the
/// content key wrapped with HPKE (RFC 9180) — sealed by swift-crypto's own HPKE sender and opened
/// by ours, which only needs ECDH from the key (so a token can do it).
@Suite struct ImageEncryptionTests {
    static func encrypt(_ plaintext: [UInt8], key: SymmetricKey, chunkSize: Int, in directory: TemporaryDirectory) throws -> (
        path: String, result: ImageEncryption.Result
    ) {
        let input = directory.file("plain-\(plaintext.count)-\(chunkSize)")
        let output = input + ".enc"
        try Data(plaintext).write(to: URL(fileURLWithPath: input))
        FileManager.default.createFile(atPath: output, contents: nil)
        let reader = try #require(FileHandle(forReadingAtPath: input))
        let writer = try #require(FileHandle(forWritingAtPath: output))
        defer {
            try? reader.close()
            try? writer.close()
        }
        return (output, try ImageEncryption.encrypt(reader, into: writer, key: key, chunkSize: chunkSize))
    }

    static func decrypt(_ path: String, key: SymmetricKey, chunkSize: Int) throws -> [UInt8] {
        let reader = try #require(FileHandle(forReadingAtPath: path))
        defer { try? reader.close() }
        let size = Int64(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0)
        var plaintext: [UInt8] = []
        _ = try ImageEncryption.decrypt(reader, ciphertextSize: size, key: key, chunkSize: chunkSize) { plaintext += $0 }
        return plaintext
    }

    @Test(arguments: [1, 1023, 1024, 1025, 4096, 5000])
    func imagesOfEverySizeRoundTripAndHashAsSigned(size: Int) throws {
        let directory = try TemporaryDirectory()
        let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let key = SymmetricKey(size: .bits256)
        let (path, result) = try Self.encrypt(plaintext, key: key, chunkSize: 1024, in: directory)
        let ciphertext = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(result.plaintextSize == Int64(size))
        #expect(result.plaintextSHA256 == SHA256.hash(data: plaintext).map { String(format: "%02x", $0) }.joined())
        #expect(result.ciphertextSHA256 == SHA256.hash(data: ciphertext).map { String(format: "%02x", $0) }.joined())
        #expect(Int64(ciphertext.count) == ImageEncryption.ciphertextSize(plaintextSize: Int64(size), chunkSize: 1024))
        #expect(result.ciphertextSize == Int64(ciphertext.count))
        #expect(try Self.decrypt(path, key: key, chunkSize: 1024) == plaintext)
    }

    @Test func aWrongKeyAFlippedByteReorderedChunksAndACutImageDecryptNothing() throws {
        let directory = try TemporaryDirectory()
        let plaintext = (0..<5000).map { UInt8(truncatingIfNeeded: $0) }
        let key = SymmetricKey(size: .bits256)
        let (path, _) = try Self.encrypt(plaintext, key: key, chunkSize: 1024, in: directory)
        let ciphertext = try Data(contentsOf: URL(fileURLWithPath: path))
        let sealedChunk = 1024 + 16

        func refused(_ bytes: Data, key: SymmetricKey = key, _ what: String) throws {
            let damaged = directory.file("damaged-\(what.hashValue)")
            try bytes.write(to: URL(fileURLWithPath: damaged))
            #expect(throws: PKIError.self, "\(what)") { _ = try Self.decrypt(damaged, key: key, chunkSize: 1024) }
        }
        try refused(ciphertext, key: SymmetricKey(size: .bits256), "another key")
        var flipped = ciphertext
        flipped[flipped.startIndex + 2000] ^= 0x01
        try refused(flipped, "a flipped byte")
        var swapped = Data(ciphertext.prefix(2 * sealedChunk))
        swapped = swapped.suffix(sealedChunk) + swapped.prefix(sealedChunk) + ciphertext.dropFirst(2 * sealedChunk)
        try refused(swapped, "two chunks swapped")
        // Cut at a chunk boundary: every remaining chunk is genuine, but the new last one was not
        // sealed as the last.
        try refused(ciphertext.prefix(2 * sealedChunk), "cut at a chunk boundary")
        try refused(ciphertext.prefix(2 * sealedChunk + 100), "cut inside a chunk")
        try refused(ciphertext.prefix(10), "shorter than a tag")
    }

    @Test func aKeyWrappedBySwiftCryptosHPKEOpensWithECDHAlone() throws {
        let device = P256.KeyAgreement.PrivateKey()
        let contentKey = SymmetricKey(size: .bits256)
        let info = ImageEncryption.wrapInfo(artifact: String(repeating: "ab", count: 32), device: "sensor-1")
        let wrapped = try ImageEncryption.wrap(contentKey, to: device.publicKey, info: info)
        let agree = { (peer: P256.KeyAgreement.PublicKey) in
            try device.sharedSecretFromKeyAgreement(with: peer).withUnsafeBytes { Array($0) }
        }
        let opened = try ImageEncryption.unwrap(wrapped, recipient: device.publicKey, info: info, agree: agree)
        #expect(opened == contentKey)

        // swift-crypto's own recipient agrees: the wrap is standard HPKE.
        var recipient = try HPKE.Recipient(
            privateKey: device, ciphersuite: .P256_SHA256_AES_GCM_256, info: Data(info),
            encapsulatedKey: try #require(Data(base64Encoded: wrapped.enc)))
        let plain = try recipient.open(try #require(Data(base64Encoded: wrapped.key)))
        #expect(SymmetricKey(data: plain) == contentKey)

        // Another device's key, a wrap for another device or image, an altered wrap: refused.
        let other = P256.KeyAgreement.PrivateKey()
        #expect(throws: PKIError.self) {
            try ImageEncryption.unwrap(wrapped, recipient: other.publicKey, info: info) { peer in
                try other.sharedSecretFromKeyAgreement(with: peer).withUnsafeBytes { Array($0) }
            }
        }
        let otherDevice = ImageEncryption.wrapInfo(artifact: String(repeating: "ab", count: 32), device: "sensor-2")
        #expect(throws: PKIError.self) { try ImageEncryption.unwrap(wrapped, recipient: device.publicKey, info: otherDevice, agree: agree) }
        let otherImage = ImageEncryption.wrapInfo(artifact: String(repeating: "cd", count: 32), device: "sensor-1")
        #expect(throws: PKIError.self) { try ImageEncryption.unwrap(wrapped, recipient: device.publicKey, info: otherImage, agree: agree) }
        var altered = wrapped
        var bytes = try #require(Data(base64Encoded: wrapped.key))
        bytes[bytes.startIndex] ^= 0x01
        altered.key = bytes.base64EncodedString()
        #expect(throws: PKIError.self) { try ImageEncryption.unwrap(altered, recipient: device.publicKey, info: info, agree: agree) }
        altered = wrapped
        altered.enc = Data(P256.KeyAgreement.PrivateKey().publicKey.x963Representation).base64EncodedString()
        #expect(throws: PKIError.self) { try ImageEncryption.unwrap(altered, recipient: device.publicKey, info: info, agree: agree) }
        altered.enc = "bm90IGEgcG9pbnQ="
        #expect(throws: PKIError.self) { try ImageEncryption.unwrap(altered, recipient: device.publicKey, info: info, agree: agree) }
    }
}
