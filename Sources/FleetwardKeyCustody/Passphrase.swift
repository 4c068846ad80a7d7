/// A passphrase that protects private keys at rest.
///
/// Prints as `Passphrase(redacted)` so it cannot reach a log or an error message by accident.
public struct Passphrase: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The fewest characters accepted when creating new keys.
    public static let minimumLength = 8

    /// The passphrase's UTF-8 bytes.
    public let bytes: [UInt8]

    /// Wraps `text`, which may be empty (to open keys); ``validateForNewKeys()`` checks strength.
    public init(_ text: String) {
        // A trailing newline from `echo pass > file` or a pasted line is never part of a passphrase.
        var trimmed = Substring(text)
        while let last = trimmed.last, last == "\n" || last == "\r" { trimmed = trimmed.dropLast() }
        bytes = Array(trimmed.utf8)
    }

    /// Refuses a passphrase too short to protect CA keys.
    public func validateForNewKeys() throws {
        guard String(decoding: bytes, as: UTF8.self).count >= Self.minimumLength else {
            throw KeyCustodyError(
                .weakPassphrase,
                "the passphrase must have at least \(Self.minimumLength) characters"
            )
        }
    }

    public var description: String { "Passphrase(redacted)" }
    public var debugDescription: String { description }
}
