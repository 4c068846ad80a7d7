import Foundation
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A name a server certificate covers: a DNS name or an IP address (RFC 5280 §4.2.1.6).
public enum ServerName: Hashable, Sendable, CustomStringConvertible {
    case dns(String)
    /// 4 bytes for IPv4, 16 for IPv6, in network order.
    case ip([UInt8])

    /// Parses `127.0.0.1`, `::1`, `[::1]` or a DNS name such as `gateway.example.com` or `*.example.com`.
    ///
    /// - Throws: ``PKIError/Code-swift.struct/invalidIdentity`` for anything else.
    public init(_ text: String) throws {
        var candidate = text
        if candidate.hasPrefix("["), candidate.hasSuffix("]") { candidate = String(candidate.dropFirst().dropLast()) }
        if let v4 = Self.parseIP(candidate, family: AF_INET, length: 4) {
            self = .ip(v4)
            return
        }
        if candidate.contains(":") {
            guard let v6 = Self.parseIP(candidate, family: AF_INET6, length: 16) else {
                throw PKIError(.invalidIdentity, "'\(text)' is neither an IP address nor a DNS name")
            }
            self = .ip(v6)
            return
        }
        let name = candidate.lowercased()
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        let isValid =
            !name.isEmpty && name.utf8.count <= 253
            && labels.enumerated().allSatisfy { index, label in
                if label == "*" { return index == 0 && labels.count > 2 }
                return (1...63).contains(label.utf8.count)
                    && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
                    && label.first != "-" && label.last != "-"
            }
        guard isValid else {
            throw PKIError(.invalidIdentity, "'\(text)' is neither an IP address nor a valid DNS name")
        }
        self = .dns(name)
    }

    private static func parseIP(_ text: String, family: Int32, length: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 16)
        let ok = text.withCString { inet_pton(family, $0, &buffer) }
        return ok == 1 ? Array(buffer.prefix(length)) : nil
    }

    public var description: String {
        switch self {
        case .dns(let name): return name
        case .ip(let bytes):
            var buffer = [CChar](repeating: 0, count: 64)
            let family = bytes.count == 4 ? AF_INET : AF_INET6
            _ = inet_ntop(family, bytes, &buffer, socklen_t(buffer.count))
            return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
