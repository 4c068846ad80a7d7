/// MQTT topic names and filters (§4.7): `/`-separated levels, `+` one level, `#` the rest
/// (last level only). Parsed once into levels and compared level by level.
public struct TopicFilter: Sendable, Hashable, CustomStringConvertible {
    public enum Level: Sendable, Hashable {
        case literal(Substring)
        case single  // +
        case rest  // #
    }

    public let levels: [Level]
    public let description: String

    /// Parses a filter; nil when it is not one (a `#` not last or not alone in its level, a `+`
    /// sharing a level, empty, or holding U+0000).
    public init?(_ text: String) {
        guard !text.isEmpty, !text.utf8.contains(0) else { return nil }
        var levels: [Level] = []
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        for (index, part) in parts.enumerated() {
            if part == "#" {
                guard index == parts.count - 1 else { return nil }
                levels.append(.rest)
            } else if part == "+" {
                levels.append(.single)
            } else {
                guard !part.contains("#"), !part.contains("+") else { return nil }
                levels.append(.literal(part))
            }
        }
        self.levels = levels
        description = text
    }

    /// Whether `text` is a valid topic name for PUBLISH: non-empty, no wildcard, no U+0000.
    public static func isValidTopicName(_ text: String) -> Bool {
        !text.isEmpty && !text.utf8.contains { $0 == 0 || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }

    /// Whether the topic name `topic` matches this filter. Topics starting with `$` are not
    /// matched by a filter starting with a wildcard (§4.7.2).
    public func matches(_ topic: String) -> Bool {
        let names = topic.split(separator: "/", omittingEmptySubsequences: false)
        if topic.hasPrefix("$"), let first = levels.first, first != .literal(names[0]) { return false }
        var index = 0
        for level in levels {
            switch level {
            case .rest: return true
            case .single:
                guard index < names.count else { return false }
            case .literal(let text):
                guard index < names.count, names[index] == text else { return false }
            }
            index += 1
        }
        return index == names.count
    }

    /// Whether every topic `other` can match, this filter matches too (a subscription to `other`
    /// asks for nothing this one does not allow).
    public func covers(_ other: TopicFilter) -> Bool {
        // A wildcard first level never reaches `$` topics, so it does not allow subscribing to them.
        if case .literal(let first)? = other.levels.first, first.hasPrefix("$"), levels.first.map({ $0 != .literal(first) }) ?? true {
            return false
        }
        var index = 0
        for level in levels {
            if level == .rest {
                // `a/#` also matches `a` itself (§4.7.1.2), so it covers `a`.
                return true
            }
            guard index < other.levels.count else { return false }
            switch (level, other.levels[index]) {
            case (.single, .rest): return false
            case (.single, _): break
            case (.literal(let mine), .literal(let theirs)): guard mine == theirs else { return false }
            case (.literal, _): return false
            case (.rest, _): return true
            }
            index += 1
        }
        return index == other.levels.count
    }

    /// Whether some topic matches both filters.
    public func overlaps(_ other: TopicFilter) -> Bool {
        var index = 0
        while index < levels.count, index < other.levels.count {
            switch (levels[index], other.levels[index]) {
            case (.rest, _), (_, .rest): return true
            case (.literal(let a), .literal(let b)): if a != b { return false }
            default: break
            }
            index += 1
        }
        if levels.count == other.levels.count { return true }
        // One is longer: it overlaps only if the longer continues with `#` right there (`a` and `a/#`).
        let longer = levels.count > other.levels.count ? levels : other.levels
        return longer[index] == .rest && index == longer.count - 1
    }
}
