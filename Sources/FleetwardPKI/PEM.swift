import Foundation

/// PEM encoding and decoding (RFC 7468).
///
/// Written here rather than taken from SwiftASN1's `PEMDocument`, whose `pemString` is
/// quadratic in the document size and omits the trailing newline that concatenated PEM
/// files need.
public enum PEM {
    /// One decoded PEM block.
    public struct Block: Sendable, Equatable {
        public var label: String
        public var der: [UInt8]
        public init(label: String, der: [UInt8]) {
            self.label = label
            self.der = der
        }
    }

    /// Encodes DER bytes as a PEM block with 64-character lines and a trailing newline.
    public static func encode(_ der: some Collection<UInt8>, label: String) -> String {
        let base64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        var out = "-----BEGIN \(label)-----\n"
        out.reserveCapacity(base64.utf8.count + 2 * label.utf8.count + 40)
        out += base64
        if !base64.isEmpty { out += "\n" }
        out += "-----END \(label)-----\n"
        return out
    }

    /// Decodes every PEM block in `text`, in order.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/malformedInput`` when there is no block, a block is not
    ///   closed, its END label differs from its BEGIN label, or its body is not base64.
    public static func decodeAll(_ text: String) throws -> [Block] {
        var blocks: [Block] = []
        var label: String?
        var body = ""
        var lineNumber = 0
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if let open = label {
                if line.hasPrefix("-----END "), line.hasSuffix("-----") {
                    let endLabel = String(line.dropFirst(9).dropLast(5))
                    guard endLabel == open else {
                        throw PKIError(.malformedInput, "PEM block \(open) ends with END \(endLabel) on line \(lineNumber)")
                    }
                    guard let der = Data(base64Encoded: body), !der.isEmpty else {
                        throw PKIError(.malformedInput, "PEM block \(open) is not valid base64")
                    }
                    blocks.append(Block(label: open, der: Array(der)))
                    label = nil
                    body = ""
                } else if line.contains(":") {
                    // RFC 1421 headers (Proc-Type, DEK-Info) mark legacy encrypted keys.
                    throw PKIError(
                        .unsupportedEncryption,
                        "PEM block \(open) carries legacy headers; only PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY) is read"
                    )
                } else {
                    body += line
                }
            } else if line.hasPrefix("-----BEGIN "), line.hasSuffix("-----") {
                label = String(line.dropFirst(11).dropLast(5))
            }
        }
        if let open = label {
            throw PKIError(.malformedInput, "PEM block \(open) has no END line")
        }
        guard !blocks.isEmpty else {
            throw PKIError(.malformedInput, "no PEM block found")
        }
        return blocks
    }

    /// Decodes the single block with `label`.
    public static func decode(_ text: String, label expected: String) throws -> [UInt8] {
        let blocks = try decodeAll(text)
        guard let block = blocks.first(where: { $0.label == expected }) else {
            let found = blocks.map(\.label).joined(separator: ", ")
            throw PKIError(.malformedInput, "expected a PEM \(expected) block, found \(found)")
        }
        return block.der
    }

    /// Returns DER bytes from input that is either DER or PEM with `label`.
    ///
    /// Input starting with an ASN.1 SEQUENCE tag is taken as DER; anything else must be PEM.
    public static func derFromDEROrPEM(_ bytes: some Collection<UInt8>, label: String) throws -> [UInt8] {
        if bytes.first == 0x30 { return Array(bytes) }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PKIError(.malformedInput, "input is neither DER nor PEM text")
        }
        return try decode(text, label: label)
    }
}
