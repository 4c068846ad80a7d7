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
        if let contentType = request.headers[.contentType], !contentType.lowercased().hasPrefix("application/json") {
            throw HTTPProblem(.unsupportedMediaType, "send the request body as application/json")
        }
        var request = request
        let buffer = try await request.collectBody(upTo: limit)
        let data = Data(buffer.readableBytesView)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data.isEmpty ? Data("{}".utf8) : data)
        } catch {
            throw HTTPProblem(.badRequest, "the request body is not valid JSON")
        }
        guard let dictionary = object as? [String: Any] else {
            throw HTTPProblem(.badRequest, "the request body must be a JSON object")
        }
        if let unknown = dictionary.keys.sorted().first(where: { !T.fields.contains($0) }) {
            throw HTTPProblem(.badRequest, "unknown field '\(unknown.prefix(64))'")
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
