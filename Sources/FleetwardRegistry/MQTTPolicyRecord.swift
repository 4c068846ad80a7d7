public import Foundation

/// Which devices a stored MQTT policy is for: every device of a model, or every device an
/// enrollment group registered. A group's policy wins over its model's; a device with neither
/// gets the standard policy.
public enum MQTTPolicyScope: Sendable, Hashable, CustomStringConvertible {
    case model(String)
    case group(String)

    /// Parses `model:NAME` or `group:ID`.
    ///
    /// - Throws: ``RegistryError`` `invalidInput` naming the accepted forms.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, Self.isValidName(String(parts[1])) else {
            throw RegistryError(.invalidInput, "a policy scope is model:NAME or group:ID (1 to 64 letters, digits, '-', '_', '.')")
        }
        switch parts[0] {
        case "model": self = .model(String(parts[1]))
        case "group": self = .group(String(parts[1]))
        default: throw RegistryError(.invalidInput, "a policy scope is model:NAME or group:ID (1 to 64 letters, digits, '-', '_', '.')")
        }
    }

    public var description: String {
        switch self {
        case .model(let name): "model:\(name)"
        case .group(let id): "group:\(id)"
        }
    }

    /// The scopes whose policy applies to a device of `model` registered by `group`, the one that
    /// wins first.
    public static func candidates(model: String, group: String?) -> [MQTTPolicyScope] {
        (group.map { [.group($0)] } ?? []) + [.model(model)]
    }

    static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
            }
    }
}

/// A stored MQTT policy: its scope and its document (the policy's JSON, checked and normalised
/// before it is stored; see `MQTTPolicies` in FleetwardAuthority).
public struct MQTTPolicyRecord: Sendable, Equatable {
    public var scope: MQTTPolicyScope
    public var document: String
    public var updatedAt: Date

    public init(scope: MQTTPolicyScope, document: String, updatedAt: Date) {
        self.scope = scope
        self.document = document
        self.updatedAt = updatedAt
    }
}

extension RegistryStore {
    /// The stored policy that applies to `device` (its group's, else its model's), or nil when the
    /// standard policy applies.
    public func mqttPolicy(for device: Device) async throws -> MQTTPolicyRecord? {
        for scope in MQTTPolicyScope.candidates(model: device.model, group: device.group) {
            if let record = try await mqttPolicy(scope) { return record }
        }
        return nil
    }
}
