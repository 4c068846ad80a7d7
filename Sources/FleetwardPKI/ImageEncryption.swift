public import Crypto
public import Foundation

/// Encrypted release images.
///
/// An image is encrypted once, with a random 256-bit content key, in chunks (AES-256-GCM, the
/// STREAM construction): chunk *i* of `chunkSize` plaintext bytes is sealed with the nonce
/// `00 00 00 ‖ i (8 bytes, big-endian) ‖ last` (`last` is 1 for the final chunk, else 0) and
/// stored as ciphertext ‖ 16-byte tag. Every chunk is authenticated on its own, so a device
/// decrypts a large image while streaming it, and a reordered, altered or truncated image fails
/// at the chunk where it differs (the final-chunk flag catches a cut at a chunk boundary).
///
/// The content key reaches each device wrapped with HPKE (RFC 9180, base mode,
/// DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) to the public key of the certificate the
/// device proved in its TLS handshake, with `info` binding the wrap to the image and the device
/// (``wrapInfo(artifact:device:)``): a wrap made for another device or another image does not open.
public enum ImageEncryption {
    /// The scheme name recorded in the signed manifest.
    public static let scheme = "aes-256-gcm-stream-v1"
    /// The key wrap recorded in the signed manifest.
    public static let keyWrap = "hpke-p256-sha256-aes256gcm"
    public static let defaultChunkSize = 1 << 16
    public static let tagSize = 16

    /// What encrypting an image produced.
    public struct Result: Sendable, Equatable {
        public var plaintextSHA256: String
        public var plaintextSize: Int64
        public var ciphertextSHA256: String
        public var ciphertextSize: Int64
    }

    static func nonce(_ index: UInt64, last: Bool) throws -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        for shift in 0..<8 { bytes[3 + shift] = UInt8(truncatingIfNeeded: index >> (56 - 8 * UInt64(shift))) }
        bytes[11] = last ? 1 : 0
        return try AES.GCM.Nonce(data: bytes)
    }

    /// The ciphertext size of a `plaintextSize`-byte image.
    public static func ciphertextSize(plaintextSize: Int64, chunkSize: Int = defaultChunkSize) -> Int64 {
        let chunks = max(1, (plaintextSize + Int64(chunkSize) - 1) / Int64(chunkSize))
        return plaintextSize + chunks * Int64(tagSize)
    }

    /// Encrypts `input` into `output` (streamed: one chunk in memory at a time); `progress` gets
    /// plaintext bytes done.
    public static func encrypt(
        _ input: FileHandle, into output: FileHandle, key: SymmetricKey, chunkSize: Int = defaultChunkSize,
        progress: (Int64) -> Void = { _ in }
    ) throws -> Result {
        precondition(chunkSize > 0 && chunkSize <= 1 << 24)
        var plainHash = SHA256()
        var cipherHash = SHA256()
        var plainSize: Int64 = 0
        var cipherSize: Int64 = 0
        var index: UInt64 = 0
        var current = try readFully(input, chunkSize)
        guard !current.isEmpty else { throw PKIError(.malformedInput, "the image is empty") }
        while true {
            let next = current.count == chunkSize ? try readFully(input, chunkSize) : []
            let last = next.isEmpty
            let sealed = try AES.GCM.seal(current, using: key, nonce: try nonce(index, last: last))
            let bytes = sealed.ciphertext + sealed.tag
            try output.write(contentsOf: bytes)
            plainHash.update(data: current)
            cipherHash.update(data: bytes)
            plainSize += Int64(current.count)
            cipherSize += Int64(bytes.count)
            progress(plainSize)
            if last { break }
            current = next
            index += 1
        }
        return Result(
            plaintextSHA256: plainHash.finalize().hexString, plaintextSize: plainSize,
            ciphertextSHA256: cipherHash.finalize().hexString, ciphertextSize: cipherSize)
    }

    /// Decrypts the `ciphertextSize`-byte image read from `input`, handing each authenticated
    /// plaintext chunk to `write` in order. Returns the plaintext's SHA-256 and size.
    ///
    /// - Throws: ``PKIError`` `.malformedInput` when a chunk does not authenticate under `key`
    ///   (another key, an altered, reordered or truncated image): what was handed to `write`
    ///   before must be thrown away.
    public static func decrypt(
        _ input: FileHandle, ciphertextSize: Int64, key: SymmetricKey, chunkSize: Int = defaultChunkSize,
        write: ([UInt8]) throws -> Void
    ) throws -> (sha256: String, size: Int64) {
        precondition(chunkSize > 0 && chunkSize <= 1 << 24)
        let sealedChunk = Int64(chunkSize + tagSize)
        guard ciphertextSize > Int64(tagSize) else { throw PKIError(.malformedInput, "the encrypted image is too short") }
        var hash = SHA256()
        var done: Int64 = 0
        var size: Int64 = 0
        var index: UInt64 = 0
        while done < ciphertextSize {
            let length = Int(min(sealedChunk, ciphertextSize - done))
            let last = done + Int64(length) == ciphertextSize
            let bytes = try readFully(input, length)
            guard bytes.count == length, length > tagSize else {
                throw PKIError(.malformedInput, "the encrypted image ends early (chunk \(index))")
            }
            let plaintext: Data
            do {
                let box = try AES.GCM.SealedBox(
                    nonce: try nonce(index, last: last), ciphertext: bytes.prefix(length - tagSize), tag: bytes.suffix(tagSize))
                plaintext = try AES.GCM.open(box, using: key)
            } catch {
                throw PKIError(.malformedInput, "chunk \(index) of the encrypted image does not authenticate (wrong key, or altered)")
            }
            let chunk = Array(plaintext)
            try write(chunk)
            hash.update(data: chunk)
            size += Int64(chunk.count)
            done += Int64(length)
            index += 1
        }
        return (hash.finalize().hexString, size)
    }

    /// Up to `count` bytes: fewer only at the end of the file.
    static func readFully(_ handle: FileHandle, _ count: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            guard let data = try handle.read(upToCount: count - bytes.count), !data.isEmpty else { break }
            bytes.append(contentsOf: data)
        }
        return bytes
    }

    // MARK: Key wrap (HPKE)

    /// The HPKE `info` of a wrap: the image (its ciphertext's SHA-256) and the device it is for.
    public static func wrapInfo(artifact sha256: String, device: String) -> [UInt8] {
        Array("fleetward image key v1\u{0}\(sha256)\u{0}\(device)".utf8)
    }

    /// A content key wrapped to one device.
    public struct WrappedKey: Codable, Sendable, Equatable {
        /// The HPKE encapsulated key (the sender's ephemeral P-256 point, uncompressed), base64.
        public var enc: String
        /// The content key sealed under the HPKE context, base64.
        public var key: String

        public init(enc: String, key: String) {
            self.enc = enc
            self.key = key
        }
    }

    /// Wraps `contentKey` to `recipient` (swift-crypto's HPKE sender).
    public static func wrap(_ contentKey: SymmetricKey, to recipient: P256.KeyAgreement.PublicKey, info: [UInt8]) throws -> WrappedKey {
        var sender = try HPKE.Sender(recipientKey: recipient, ciphersuite: .P256_SHA256_AES_GCM_256, info: Data(info))
        let sealed = contentKey.withUnsafeBytes { Data($0) }
        let ciphertext = try sender.seal(sealed)
        return WrappedKey(enc: sender.encapsulatedKey.base64EncodedString(), key: ciphertext.base64EncodedString())
    }

    /// Opens a wrap with the recipient's key, which only performs ECDH (`agree` takes the peer's
    /// point and returns the shared x-coordinate): the key may sit in a token (CKM_ECDH1_DERIVE).
    /// RFC 9180 §4.1 (DHKEM decapsulation) and §5.1 (base-mode key schedule), single message.
    ///
    /// - Throws: ``PKIError`` `.malformedInput` when the wrap does not open (made for another key,
    ///   device or image, or altered).
    public static func unwrap(
        _ wrapped: WrappedKey, recipient: P256.KeyAgreement.PublicKey, info: [UInt8],
        agree: (P256.KeyAgreement.PublicKey) throws -> [UInt8]
    ) throws -> SymmetricKey {
        guard let enc = Data(base64Encoded: wrapped.enc), let ciphertext = Data(base64Encoded: wrapped.key),
            let ephemeral = try? P256.KeyAgreement.PublicKey(x963Representation: enc)
        else { throw PKIError(.malformedInput, "the wrapped image key is not an HPKE P-256 encapsulation") }
        let dh = try agree(ephemeral)
        guard dh.count == 32 else { throw PKIError(.malformedInput, "the key agreement gave \(dh.count) bytes, not 32") }
        let kemContext = Array(enc) + Array(recipient.x963Representation)
        let kemSuite = Array("KEM".utf8) + [0x00, 0x10]
        let eaePRK = labeledExtract(salt: [], label: "eae_prk", ikm: dh, suite: kemSuite)
        let sharedSecret = labeledExpand(eaePRK, label: "shared_secret", info: kemContext, length: 32, suite: kemSuite)
        // kem 0x0010 (P-256), kdf 0x0001 (HKDF-SHA256), aead 0x0002 (AES-256-GCM)
        let suite = Array("HPKE".utf8) + [0x00, 0x10, 0x00, 0x01, 0x00, 0x02]
        let pskIDHash = labeledExtract(salt: [], label: "psk_id_hash", ikm: [], suite: suite)
        let infoHash = labeledExtract(salt: [], label: "info_hash", ikm: info, suite: suite)
        let context = [0x00] + pskIDHash + infoHash
        let secret = labeledExtract(salt: sharedSecret, label: "secret", ikm: [], suite: suite)
        let key = labeledExpand(secret, label: "key", info: context, length: 32, suite: suite)
        let nonce = labeledExpand(secret, label: "base_nonce", info: context, length: 12, suite: suite)
        do {
            let box = try AES.GCM.SealedBox(
                nonce: try AES.GCM.Nonce(data: nonce), ciphertext: ciphertext.dropLast(tagSize), tag: ciphertext.suffix(tagSize))
            let contentKey = try AES.GCM.open(box, using: SymmetricKey(data: key))
            guard contentKey.count == 32 else { throw PKIError(.malformedInput, "the wrapped image key is not 256 bits") }
            return SymmetricKey(data: contentKey)
        } catch {
            throw PKIError(.malformedInput, "the wrapped image key does not open with this device's key (made for another device or image, or altered)")
        }
    }

    static func labeledExtract(salt: [UInt8], label: String, ikm: [UInt8], suite: [UInt8]) -> [UInt8] {
        let labeled = Array("HPKE-v1".utf8) + suite + Array(label.utf8) + ikm
        let prk = HKDF<SHA256>.extract(inputKeyMaterial: SymmetricKey(data: labeled), salt: salt)
        return prk.withUnsafeBytes { Array($0) }
    }

    static func labeledExpand(_ prk: [UInt8], label: String, info: [UInt8], length: Int, suite: [UInt8]) -> [UInt8] {
        let labeled = [UInt8(length >> 8), UInt8(length & 0xff)] + Array("HPKE-v1".utf8) + suite + Array(label.utf8) + info
        let key = HKDF<SHA256>.expand(pseudoRandomKey: prk, info: labeled, outputByteCount: length)
        return key.withUnsafeBytes { Array($0) }
    }
}
