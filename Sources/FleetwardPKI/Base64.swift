/// Base64 (RFC 4648 §4) straight from bytes, for bodies and headers that arrive as bytes.
///
/// At least as strict as Foundation's `Data(base64Encoded:)`: the standard alphabet only, padding to a
/// multiple of four characters, `=` only at the end, and zero bits where padding leaves some
/// unused. Unlike it, it can skip ASCII whitespace (the line breaks of RFC 7030 bodies) while
/// decoding, without copying the text first.
public enum Base64 {
    /// The bytes `text` encodes, or nil if it is not valid base64.
    /// - Parameter skippingWhitespace: ignore space, tab, CR and LF anywhere.
    public static func decode(_ text: some Sequence<UInt8>, skippingWhitespace: Bool = false) -> [UInt8]? {
        if let decoded = text.withContiguousStorageIfAvailable({ decode(buffer: $0, skippingWhitespace: skippingWhitespace) }) {
            return decoded
        }
        return Array(text).withUnsafeBufferPointer { decode(buffer: $0, skippingWhitespace: skippingWhitespace) }
    }

    /// Table entries that are not a 6-bit value.
    private static let invalid: UInt8 = 0xFF
    private static let whitespace: UInt8 = 0xFE
    private static let pad: UInt8 = 0xFD

    /// Every byte's meaning: its 6-bit value, or one of the markers above.
    private static let table: [UInt8] = (0...255).map { byte -> UInt8 in
        let character = UInt8(byte)
        if let value = value(character) { return value }
        if isWhitespace(character) { return whitespace }
        return character == 0x3D ? pad : invalid
    }

    private static func decode(buffer text: UnsafeBufferPointer<UInt8>, skippingWhitespace: Bool) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var quantum: UInt32 = 0
        var count = 0  // characters in the current quantum
        var padding = 0
        var index = 0
        return table.withUnsafeBufferPointer { table -> [UInt8]? in
            while index < text.count {
                let code = table[Int(text[index])]
                index += 1
                if code < 64 {
                    guard padding == 0 else { return nil }
                    quantum = quantum << 6 | UInt32(code)
                    count += 1
                    if count == 4 {
                        out.append(UInt8(truncatingIfNeeded: quantum >> 16))
                        out.append(UInt8(truncatingIfNeeded: quantum >> 8))
                        out.append(UInt8(truncatingIfNeeded: quantum))
                        quantum = 0
                        count = 0
                    }
                } else if code == whitespace, skippingWhitespace {
                    continue
                } else if code == pad {
                    // "=" fills the third and fourth places only
                    guard count >= 2 else { return nil }
                    padding += 1
                    count += 1
                    if count == 4 { break }
                } else {
                    return nil
                }
            }
            guard padding > 0 else { return count == 0 ? out : nil }
            guard count == 4 else { return nil }
            // Nothing but allowed whitespace after the padding.
            while index < text.count {
                guard skippingWhitespace, table[Int(text[index])] == whitespace else { return nil }
                index += 1
            }
            if padding == 1 {
                // Three characters carry 18 bits: 16 of data, and the last 2 must be zero.
                guard quantum & 0x3 == 0 else { return nil }
                out.append(UInt8(truncatingIfNeeded: quantum >> 10))
                out.append(UInt8(truncatingIfNeeded: quantum >> 2))
            } else {
                // Two characters carry 12 bits: 8 of data, and the last 4 must be zero.
                guard quantum & 0xF == 0 else { return nil }
                out.append(UInt8(truncatingIfNeeded: quantum >> 4))
            }
            return out
        }
    }

    /// `bytes` in base64 with padding, as lines of at most `lineLength` characters, each ending
    /// in a line feed (the body of an RFC 7030 answer; what `openssl base64` writes).
    public static func encodeLines(_ bytes: some Collection<UInt8>, lineLength: Int = 64) -> [UInt8] {
        precondition(lineLength > 0 && lineLength % 4 == 0, "lines hold whole quanta")
        if let encoded = bytes.withContiguousStorageIfAvailable({ encodeLines(buffer: $0, lineLength: lineLength) }) {
            return encoded
        }
        return Array(bytes).withUnsafeBufferPointer { encodeLines(buffer: $0, lineLength: lineLength) }
    }

    private static func encodeLines(buffer input: UnsafeBufferPointer<UInt8>, lineLength: Int) -> [UInt8] {
        let characters = (input.count + 2) / 3 * 4
        let total = characters + (characters + lineLength - 1) / lineLength + (characters == 0 ? 1 : 0)
        return [UInt8](unsafeUninitializedCapacity: total) { out, written in
            alphabet.withUnsafeBufferPointer { alphabet in
                var at = 0
                var line = 0
                var index = 0
                func put(_ quantum: UInt32, _ significant: Int) {
                    out[at] = alphabet[Int(quantum >> 18)]
                    out[at + 1] = alphabet[Int(quantum >> 12 & 0x3F)]
                    out[at + 2] = significant > 1 ? alphabet[Int(quantum >> 6 & 0x3F)] : 0x3D
                    out[at + 3] = significant > 2 ? alphabet[Int(quantum & 0x3F)] : 0x3D
                    at += 4
                    line += 4
                    if line == lineLength {
                        out[at] = 0x0A
                        at += 1
                        line = 0
                    }
                }
                while index + 3 <= input.count {
                    put(UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2]), 3)
                    index += 3
                }
                switch input.count - index {
                case 1: put(UInt32(input[index]) << 16, 1)
                case 2: put(UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8, 2)
                default: break
                }
                if line > 0 || at == 0 {
                    out[at] = 0x0A
                    at += 1
                }
                written = at
            }
        }
    }

    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func isWhitespace(_ character: UInt8) -> Bool {
        character == 0x20 || character == 0x0A || character == 0x0D || character == 0x09
    }

    static func value(_ character: UInt8) -> UInt8? {
        switch character {
        case 0x41...0x5A: character - 0x41
        case 0x61...0x7A: character - 0x61 + 26
        case 0x30...0x39: character - 0x30 + 52
        case 0x2B: 62
        case 0x2F: 63
        default: nil
        }
    }
}
