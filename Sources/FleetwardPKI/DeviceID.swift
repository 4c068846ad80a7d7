import Foundation
public import X509
import SwiftASN1

/// A device's unique identifier, as it appears in its certificate's subject serialNumber and in
/// its URI SAN `urn:fleetward:device:<id>`.
///
/// 1 to 64 characters: ASCII letters, digits, `-` and `.`, starting with a letter or digit. The
/// set fits X.520's PrintableString (which serialNumber must use), a URN's specific string, a
/// URL path segment and the user-id of HTTP Basic authentication (RFC 7617 forbids `:` there).
public struct DeviceID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// The longest ID accepted.
    public static let maximumLength = 64

    /// The ID's text.
    public let rawValue: String

    /// Validates `text` as a device ID.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/invalidIdentity`` naming the first offending character.
    public init(_ text: String) throws {
        let bytes = text.utf8
        guard !bytes.isEmpty else {
            throw PKIError(.invalidIdentity, "a device ID cannot be empty")
        }
        guard bytes.count <= Self.maximumLength else {
            throw PKIError(.invalidIdentity, "device ID is \(bytes.count) bytes; the limit is \(Self.maximumLength)")
        }
        for (index, byte) in bytes.enumerated() {
            let isAlphanumeric = (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            let isAllowed = isAlphanumeric || (index > 0 && (byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")))
            guard isAllowed else {
                let shown = (0x20...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : String(format: "byte 0x%02X", byte)
                throw PKIError(
                    .invalidIdentity,
                    "device ID has \(shown) at position \(index + 1); IDs use letters, digits, '-' and '.', starting with a letter or digit"
                )
            }
        }
        self.rawValue = text
    }

    /// The URI SAN that names this device: `urn:fleetward:device:<id>`.
    public var uri: String { "urn:fleetward:device:" + rawValue }

    public var description: String { rawValue }

    public static func < (lhs: DeviceID, rhs: DeviceID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

extension DeviceID {
    /// The text a distinguished name names a device by: its serialNumber, else its commonName
    /// (check it with ``init(_:)``).
    public static func named(by name: DistinguishedName) -> String? {
        var serial: String?
        var common: String?
        for rdn in name {
            for attribute in rdn {
                if attribute.type == [2, 5, 4, 5] { serial = String(describing: attribute.value) }
                if attribute.type == .RDNAttributeType.commonName { common = String(describing: attribute.value) }
            }
        }
        return serial ?? common
    }
}
