public import Foundation

/// A PKCS#11 URI (RFC 7512) as Fleetward takes it: `pkcs11:token=LABEL;object=LABEL` with query
/// attributes `module-path=/path/to/module.so` and `pin-source=file:/path` (or a plain path).
/// Path attributes are percent-decoded; `pin-value` is refused: a PIN never goes on a command line.
public struct PKCS11URI: Sendable, Equatable, CustomStringConvertible {
    public var token: String
    public var object: String?
    public var modulePath: String?
    public var pinSource: String?

    public init(token: String, object: String? = nil, modulePath: String? = nil, pinSource: String? = nil) {
        self.token = token
        self.object = object
        self.modulePath = modulePath
        self.pinSource = pinSource
    }

    /// - Throws: ``PKCS11Error`` `.invalidURI` naming what is wrong.
    public init(parsing text: String) throws {
        guard text.hasPrefix("pkcs11:") else { throw PKCS11Error(.invalidURI, "'\(text.prefix(80))' is not a pkcs11: URI (RFC 7512)") }
        let rest = text.dropFirst("pkcs11:".count)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var path: [String: String] = [:]
        for attribute in parts[0].split(separator: ";") {
            let (name, value) = try Self.pair(attribute)
            guard path[name] == nil else { throw PKCS11Error(.invalidURI, "'\(name)' appears twice in the URI") }
            path[name] = value
        }
        var query: [String: String] = [:]
        if parts.count == 2 {
            for attribute in parts[1].split(separator: "&") {
                let (name, value) = try Self.pair(attribute)
                query[name] = value
            }
        }
        guard query["pin-value"] == nil, path["pin-value"] == nil else {
            throw PKCS11Error(.invalidURI, "pin-value is not accepted: give the PIN in FLEETWARD_PKCS11_PIN or a pin-source file")
        }
        guard let token = path["token"], !token.isEmpty else { throw PKCS11Error(.invalidURI, "the URI names no token (token=LABEL)") }
        let known: Set = ["token", "object", "type", "id", "manufacturer", "model", "serial", "library-description"]
        if let unknown = path.keys.first(where: { !known.contains($0) }) {
            throw PKCS11Error(.invalidURI, "unknown path attribute '\(unknown)' in the URI")
        }
        self.token = token
        object = path["object"]
        modulePath = query["module-path"]
        pinSource = query["pin-source"].map { $0.hasPrefix("file:") ? String($0.dropFirst(5)) : $0 }
    }

    public var description: String {
        var text = "pkcs11:token=" + Self.escape(token)
        if let object { text += ";object=" + Self.escape(object) }
        var query: [String] = []
        if let modulePath { query.append("module-path=" + Self.escape(modulePath)) }
        if let pinSource { query.append("pin-source=file:" + Self.escape(pinSource)) }
        return query.isEmpty ? text : text + "?" + query.joined(separator: "&")
    }

    static func pair(_ attribute: Substring) throws -> (String, String) {
        guard let equals = attribute.firstIndex(of: "=") else {
            throw PKCS11Error(.invalidURI, "'\(attribute.prefix(40))' is not NAME=VALUE")
        }
        return (String(attribute[..<equals]).lowercased(), try decode(attribute[attribute.index(after: equals)...]))
    }

    /// Percent-decoding (RFC 3986 §2.1) into UTF-8.
    static func decode(_ text: Substring) throws -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw PKCS11Error(.invalidURI, "a bad percent escape in '\(text.prefix(40))'")
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        guard let string = String(validating: bytes, as: UTF8.self) else { throw PKCS11Error(.invalidURI, "the URI is not UTF-8") }
        return string
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || "-._~/".unicodeScalars.contains(scalar) {
                out.unicodeScalars.append(scalar)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

extension PKCS11URI {
    /// The token's PIN: `FLEETWARD_PKCS11_PIN`, else the URI's pin-source file (first line), else
    /// typed at a prompt on the terminal (echo off). Never on a command line, never in the URI itself.
    public func pin(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let pin = environment["FLEETWARD_PKCS11_PIN"], !pin.isEmpty { return pin }
        if let source = pinSource {
            guard let data = FileManager.default.contents(atPath: source) else {
                throw PKCS11Error(.wrongPIN, "cannot read the token's pin-source file \(source)")
            }
            let pin = String(decoding: data.prefix { $0 != 0x0A && $0 != 0x0D }, as: UTF8.self)
            guard !pin.isEmpty else { throw PKCS11Error(.wrongPIN, "the pin-source file \(source) is empty") }
            return pin
        }
        if let typed = TerminalPrompt.readSecret("PIN for token '\(token)': "), !typed.isEmpty {
            return String(decoding: typed, as: UTF8.self)
        }
        throw PKCS11Error(
            .wrongPIN, "the token '\(token)' needs its PIN: set FLEETWARD_PKCS11_PIN, add pin-source=FILE to the URI, or run on a terminal")
    }
}
