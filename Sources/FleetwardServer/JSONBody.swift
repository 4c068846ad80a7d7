import Foundation
import Hummingbird
import NIOCore

/// A request body the API accepts: JSON, at most `limit` bytes, only the fields the type names.
protocol JSONBody: Decodable, Sendable {
    /// Every field a client may send; any other is refused, so a typo is not silently ignored.
    static var fields: Set<String> { get }
}

enum JSONBodyReader {
    /// The largest JSON body the API reads.
    static let limit = 64 * 1024

    /// Reads and decodes the body as `T`, refusing other content types, oversized bodies,
    /// malformed JSON, unknown fields and wrongly typed values with a 4xx naming the problem.
    static func read<T: JSONBody>(_ type: T.Type, from request: Request, limit: Int = limit) async throws -> T {
        var request = request
        let buffer = try await request.collectBody(upTo: limit)
        let data = Data(buffer.readableBytesView)
        // An empty body stands for `{}` (every field optional) whatever its type; a body is JSON
        // only when it says so.
        if !data.isEmpty || request.headers[.contentType] != nil {
            guard MediaType.essence(request.headers[.contentType]) == "application/json" else {
                throw HTTPProblem(.unsupportedMediaType, "send the request body as application/json (Content-Type: application/json)")
            }
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data.isEmpty ? Data("{}".utf8) : data)
        } catch {
            throw HTTPProblem(.badRequest, "the request body is not valid JSON")
        }
        guard let dictionary = object as? [String: Any] else {
            throw HTTPProblem(.badRequest, "the request body must be a JSON object")
        }
        if let duplicate = JSONDuplicateKeys.first(in: Array(data)) {
            throw HTTPProblem(.badRequest, "field '\(duplicate.prefix(64))' appears more than once")
        }
        if let unknown = dictionary.keys.sorted().first(where: { !T.fields.contains($0) }) {
            throw HTTPProblem(.badRequest, "unknown field '\(unknown.prefix(64))'")
        }
        // No field is nullable: an optional one is left out, not sent as null.
        if let null = dictionary.keys.sorted().first(where: { dictionary[$0] is NSNull }) {
            throw HTTPProblem(.badRequest, "field '\(null)' is null: leave it out instead")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data.isEmpty ? Data("{}".utf8) : data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw HTTPProblem(.badRequest, "missing field '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw HTTPProblem(.badRequest, "field '\(path)' has the wrong type")
        } catch {
            throw HTTPProblem(.badRequest, "the request body does not match the expected shape")
        }
    }
}

/// A media type's essence (`type/subtype`, lowercased, parameters dropped): `application/json;
/// charset=utf-8` is `application/json`; `application/jsonx` is not.
enum MediaType {
    static func essence(_ value: String?) -> String? {
        guard let value else { return nil }
        let essence = value.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return essence.trimmingCharacters(in: .whitespaces).lowercased()
    }
}

/// Finds a key that appears twice in one JSON object, at any depth (JSONSerialization keeps one of
/// them silently). The bytes must already be valid JSON.
enum JSONDuplicateKeys {
    static func first(in bytes: [UInt8]) -> String? {
        var keys: [Set<String>?] = []  // one entry per open container: a set for objects, nil for arrays
        var index = 0
        var expectingKey = false
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "{"):
                keys.append([])
                expectingKey = true
                index += 1
            case UInt8(ascii: "["):
                keys.append(nil)
                expectingKey = false
                index += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = keys.popLast()
                expectingKey = false
                index += 1
            case UInt8(ascii: ","):
                expectingKey = keys.last.map { $0 != nil } ?? false
                index += 1
            case UInt8(ascii: "\""):
                let start = index
                index += 1
                while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                    index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                index += 1
                if expectingKey, var set = keys.last ?? nil {
                    let raw = Array(bytes[start..<min(index, bytes.count)])
                    // Decoded, so "a" and "\u0061" are the same key.
                    let key = (try? JSONDecoder().decode(String.self, from: Data(raw))) ?? String(decoding: raw, as: UTF8.self)
                    if set.contains(key) { return key }
                    set.insert(key)
                    keys[keys.count - 1] = set
                    expectingKey = false
                }
            default:
                index += 1
            }
        }
        return nil
    }
}
