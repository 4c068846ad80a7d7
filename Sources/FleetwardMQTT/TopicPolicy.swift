/// What a device may do over MQTT: a document of allow and deny statements over `connect`,
/// `publish`, `subscribe` and `receive`, each with topic filters that may name the device
/// (`${device.id}`, `${device.owner}`, `${device.model}`, `${device.group}`), in the manner of
/// AWS IoT policies. A deny wins over an allow; what no statement allows is denied.
///
/// A policy is compiled once per session (``compile(for:)``) into filters with the device's
/// values in place, so a message is checked against parsed levels, never against text.
public struct TopicPolicy: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable, CaseIterable {
        case connect, publish, subscribe, receive
    }

    public enum Effect: String, Codable, Sendable {
        case allow, deny
    }

    public struct Statement: Codable, Sendable, Equatable {
        public var effect: Effect
        public var actions: [Action]
        /// Topic filters (`connect` needs none).
        public var topics: [String]

        public init(effect: Effect, actions: [Action], topics: [String] = []) {
            self.effect = effect
            self.actions = actions
            self.topics = topics
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            effect = try container.decode(Effect.self, forKey: .effect)
            actions = try container.decode([Action].self, forKey: .actions)
            topics = try container.decodeIfPresent([String].self, forKey: .topics) ?? []
        }
    }

    public var statements: [Statement]

    public init(statements: [Statement]) {
        self.statements = statements
    }

    /// Without a policy of its own, a device connects, publishes, subscribes and receives under
    /// `devices/<its ID>/…` (but publishes nothing on `devices/<its ID>/updates`, where Fleetward
    /// announces signed update offers), and subscribes to (and receives) `models/<its model>/…`.
    public static let standard = TopicPolicy(statements: [
        Statement(effect: .allow, actions: [.connect]),
        Statement(effect: .allow, actions: [.publish, .subscribe, .receive], topics: ["devices/${device.id}/#"]),
        Statement(effect: .allow, actions: [.subscribe, .receive], topics: ["models/${device.model}/#"]),
        // Update offers come from Fleetward alone (signed; a device could not forge one, nor
        // replace its own with junk).
        Statement(effect: .deny, actions: [.publish], topics: ["devices/${device.id}/updates"]),
    ])

    /// The variables a topic may name.
    public static let variables = ["device.id", "device.owner", "device.model", "device.group"]

    /// Checks the document: at least one statement, each with actions, topics for every action
    /// but `connect`, every topic a valid filter once variables are filled, only known variables.
    /// - Throws: ``MQTTError`` `.topicFilterInvalid` naming the first bad statement or topic.
    public func validate() throws {
        guard !statements.isEmpty, statements.count <= 100 else {
            throw MQTTError(.topicFilterInvalid, "a policy has 1 to 100 statements")
        }
        for (index, statement) in statements.enumerated() {
            guard !statement.actions.isEmpty else { throw MQTTError(.topicFilterInvalid, "statement \(index + 1) has no action") }
            if statement.actions.contains(where: { $0 != .connect }), statement.topics.isEmpty {
                throw MQTTError(.topicFilterInvalid, "statement \(index + 1) needs topics for \(statement.actions.map(\.rawValue).joined(separator: ", "))")
            }
            guard statement.topics.count <= 100 else { throw MQTTError(.topicFilterInvalid, "statement \(index + 1) has over 100 topics") }
            for topic in statement.topics {
                guard topic.utf8.count <= 1024 else { throw MQTTError(.topicFilterInvalid, "a topic over 1024 bytes") }
                // `$` only opens a variable: topics starting with `$` are the broker's own
                // (`$SYS/…`), never a device's.
                guard try Self.fill(topic, with: { _ in "" }, unknown: { _ in })?.contains("$") != true else {
                    throw MQTTError(.topicFilterInvalid, "'\(topic)' has a '$' that does not open a ${device.…} variable")
                }
                guard let filled = try Self.fill(topic, with: { _ in "x" }, unknown: { name in
                    throw MQTTError(.topicFilterInvalid, "'\(topic)' names an unknown variable '\(name)'; use \(Self.variables.map { "${\($0)}" }.joined(separator: ", "))")
                }), TopicFilter(filled) != nil else {
                    throw MQTTError(.topicFilterInvalid, "'\(topic)' is not a topic filter")
                }
            }
        }
    }

    /// The device a policy is compiled for.
    public struct Subject: Sendable, Equatable {
        public var id: String
        public var owner: String?
        public var model: String
        public var group: String?

        public init(id: String, owner: String?, model: String, group: String?) {
            self.id = id
            self.owner = owner
            self.model = model
            self.group = group
        }

        func value(of variable: String) -> String? {
            switch variable {
            case "device.id": id
            case "device.owner": owner
            case "device.model": model
            case "device.group": group
            default: nil
            }
        }
    }

    /// The policy with `subject`'s values in place. A topic naming a value the device does not
    /// have (no owner, no group), or a value that would change the filter's shape (holding `/`,
    /// `+`, `#`), is left out: it allows or denies nothing.
    public func compile(for subject: Subject) -> CompiledTopicPolicy {
        var compiled = CompiledTopicPolicy()
        for statement in statements {
            let filters = statement.topics.compactMap { topic -> TopicFilter? in
                let filled = try? Self.fill(
                    topic,
                    with: { name in
                        guard let value = subject.value(of: name), !value.isEmpty,
                            !value.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") || $0 == 0 })
                        else { return nil }
                        return value
                    }, unknown: { _ in })
                return filled.flatMap { $0 }.flatMap(TopicFilter.init)
            }
            for action in statement.actions {
                switch (statement.effect, action) {
                case (.allow, .connect): compiled.connectAllowed = true
                case (.deny, .connect): compiled.connectDenied = true
                case (.allow, _): compiled.allowed[action, default: []] += filters
                case (.deny, _): compiled.denied[action, default: []] += filters
                }
            }
        }
        return compiled
    }

    /// `text` with each `${name}` replaced by `value(name)`; nil when a value is missing.
    static func fill(_ text: String, with value: (String) throws -> String?, unknown: (String) throws -> Void) throws -> String? {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        while let start = rest.firstRange(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                try unknown(String(rest[start.upperBound...]))
                return nil
            }
            let name = String(rest[start.upperBound..<end])
            guard variables.contains(name) else {
                try unknown(name)
                return nil
            }
            guard let filled = try value(name) else { return nil }
            result += filled
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}

/// A ``TopicPolicy`` for one device: filters per action, ready to check messages against.
public struct CompiledTopicPolicy: Sendable {
    var connectAllowed = false
    var connectDenied = false
    var allowed: [TopicPolicy.Action: [TopicFilter]] = [:]
    var denied: [TopicPolicy.Action: [TopicFilter]] = [:]

    public var allowsConnect: Bool { connectAllowed && !connectDenied }

    /// Whether the device may publish to (`.publish`) or be sent (`.receive`) `topic`.
    public func allows(_ action: TopicPolicy.Action, topic: String) -> Bool {
        guard allowed[action]?.contains(where: { $0.matches(topic) }) == true else { return false }
        return !(denied[action]?.contains(where: { $0.matches(topic) }) ?? false)
    }

    /// Whether the device may subscribe to `filter`: an allowed filter covers everything it asks
    /// for, and no denied filter overlaps it.
    public func allowsSubscription(_ filter: TopicFilter) -> Bool {
        guard allowed[.subscribe]?.contains(where: { $0.covers(filter) }) == true else { return false }
        return !(denied[.subscribe]?.contains(where: { $0.overlaps(filter) }) ?? false)
    }
}
