public import FleetwardMQTT
public import FleetwardRegistry
public import Foundation

/// MQTT policies as operators write them (JSON, in the manner of AWS IoT policies) and as the
/// registry stores them.
public enum MQTTPolicies {
    /// The largest policy document accepted: 64 KiB.
    public static let maximumDocumentSize = 64 * 1024

    /// A record for `scope` holding `document` (JSON: `{"statements": [...]}`), checked and
    /// written back in one normal form.
    ///
    /// - Throws: ``AuthorityError`` `invalidRequest` naming what is wrong with the scope or the
    ///   document (not JSON, an unknown action or effect, a topic that is not a filter, an
    ///   unknown `${…}` variable).
    public static func make(scope: String, document: [UInt8], now: Date = Date()) throws -> MQTTPolicyRecord {
        let parsedScope: MQTTPolicyScope
        do {
            parsedScope = try MQTTPolicyScope(parsing: scope)
        } catch let error as RegistryError {
            throw AuthorityError(.invalidRequest, error.message)
        }
        let policy = try parse(document)
        return MQTTPolicyRecord(scope: parsedScope, document: try normalForm(policy), updatedAt: now)
    }

    /// The policy in a stored document. - Throws: ``AuthorityError`` `invalidRequest`.
    public static func parse(_ document: [UInt8]) throws -> TopicPolicy {
        guard document.count <= maximumDocumentSize else {
            throw AuthorityError(.invalidRequest, "a policy document is at most \(maximumDocumentSize / 1024) KiB")
        }
        try checkFields(document)
        let policy: TopicPolicy
        do {
            policy = try JSONDecoder().decode(TopicPolicy.self, from: Data(document))
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            throw AuthorityError(.invalidRequest, "the policy is not JSON")
        } catch let error as DecodingError {
            throw AuthorityError(.invalidRequest, "the policy is not {\"statements\": [{\"effect\", \"actions\", \"topics\"}…]}: \(describe(error))")
        } catch {
            throw AuthorityError(.invalidRequest, "the policy is not JSON")
        }
        do {
            try policy.validate()
        } catch let error as MQTTError {
            throw AuthorityError(.invalidRequest, error.message)
        }
        return policy
    }

    /// Refuses fields the document format does not have, so a typo (`"Effect"`, `"topic"`) is
    /// an error rather than a statement that silently means something else.
    private static func checkFields(_ document: [UInt8]) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(document)) else {
            throw AuthorityError(.invalidRequest, "the policy is not JSON")
        }
        guard let top = object as? [String: Any] else { throw AuthorityError(.invalidRequest, "the policy is not a JSON object") }
        if let unknown = top.keys.sorted().first(where: { $0 != "statements" }) {
            throw AuthorityError(.invalidRequest, "unknown field '\(unknown.prefix(64))' (a policy has only statements)")
        }
        for (index, statement) in (top["statements"] as? [Any] ?? []).enumerated() {
            guard let fields = statement as? [String: Any] else {
                throw AuthorityError(.invalidRequest, "statement \(index + 1) is not a JSON object")
            }
            if let unknown = fields.keys.sorted().first(where: { !["effect", "actions", "topics"].contains($0) }) {
                throw AuthorityError(.invalidRequest, "statement \(index + 1) has an unknown field '\(unknown.prefix(64))' (effect, actions, topics)")
            }
            if let null = fields.keys.sorted().first(where: { fields[$0] is NSNull }) {
                throw AuthorityError(.invalidRequest, "statement \(index + 1) has '\(null)' null: leave it out instead")
            }
        }
    }

    /// The policy as the registry stores it and the API returns it.
    public static func normalForm(_ policy: TopicPolicy) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(policy), as: UTF8.self)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(path(context)).\(key.stringValue) is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)) is not valid"
        @unknown default: return "it does not decode"
        }
    }
}
