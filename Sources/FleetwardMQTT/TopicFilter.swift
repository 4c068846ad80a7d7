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
    /// The levels as bytes, for matching topic names without splitting them (a topic is compared
    /// byte for byte, §4.7.3).
    private let byteLevels: [ByteLevel]

    private enum ByteLevel: Sendable, Hashable {
        case literal([UInt8])
        case single
        case rest
    }

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
        byteLevels = levels.map { level in
            switch level {
            case .literal(let text): .literal(Array(text.utf8))
            case .single: .single
            case .rest: .rest
            }
        }
    }

    public static func == (lhs: TopicFilter, rhs: TopicFilter) -> Bool { lhs.description == rhs.description }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }

    /// Whether `text` is a valid topic name for PUBLISH: non-empty, no wildcard, no U+0000.
    public static func isValidTopicName(_ text: String) -> Bool {
        !text.isEmpty && !text.utf8.contains { $0 == 0 || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }

    /// Whether the topic name `topic` matches this filter. Topics starting with `$` are not
    /// matched by a filter starting with a wildcard (§4.7.2).
    public func matches(_ topic: String) -> Bool {
        var topic = topic
        return topic.withUTF8 { matches(name: $0) }
    }

    /// Level by level over the name's bytes, allocating nothing (this runs for every message).
    private func matches(name: UnsafeBufferPointer<UInt8>) -> Bool {
        let slash = UInt8(ascii: "/")
        let dollar = name.first == UInt8(ascii: "$")
        // The start of the name's next level; past `name.count` once every level was taken.
        var position = 0
        for (index, level) in byteLevels.enumerated() {
            if case .rest = level { return !(index == 0 && dollar) }
            guard position <= name.count else { return false }
            var end = position
            while end < name.count, name[end] != slash { end += 1 }
            switch level {
            case .single:
                if index == 0, dollar { return false }
            case .literal(let bytes):
                guard end - position == bytes.count else { return false }
                for offset in 0..<bytes.count where name[position + offset] != bytes[offset] { return false }
            case .rest:
                return true
            }
            position = end + 1
        }
        return position == name.count + 1
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
            case (.literal(let mine), .literal(let theirs)): guard mine.utf8.elementsEqual(theirs.utf8) else { return false }
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
            case (.literal(let a), .literal(let b)): if !a.utf8.elementsEqual(b.utf8) { return false }
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
