public import FleetwardPKI

/// One valid row of an allow-list CSV.
public struct AllowListRow: Sendable, Equatable {
    /// The 1-based line the row starts on.
    public var line: Int
    public var id: DeviceID
    public var proof: Proof
    public var model: String
    public var metadata: [String: String]

    public init(line: Int, id: DeviceID, proof: Proof, model: String, metadata: [String: String]) {
        self.line = line
        self.id = id
        self.proof = proof
        self.model = model
        self.metadata = metadata
    }

    /// The proof as read from the file: the factory secret itself (hashed before storage) or a key fingerprint.
    public enum Proof: Sendable, Equatable {
        case secret([UInt8])
        case publicKeySHA256([UInt8])
    }
}

/// A row that could not be read, with its line number. Messages name lines, columns and device
/// IDs, never a field's value (a value in the wrong column may be a factory secret).
public struct AllowListRowError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    /// The whole file is unreadable (no header, a wrong header, empty): no row can be imported,
    /// whatever `--skip-invalid` says.
    public var isFileLevel = false

    public init(line: Int, message: String, isFileLevel: Bool = false) {
        self.line = line
        self.message = message
        self.isFileLevel = isFileLevel
    }

    public var description: String { "line \(line): \(message)" }
}

/// Streams an allow-list CSV (RFC 4180: comma-separated, `"` quoting, CRLF or LF).
///
/// The first line is a header naming the columns, in any order: `id` and `model`, at least one
/// of `secret` and `key_sha256`, and optionally `metadata` (`id,secret,model` is a whole file's
/// header). Each row has an ID, exactly one of `secret` (the per-device factory secret, 16 to 256
/// bytes) or `key_sha256` (64 hex digits: SHA-256 of the device key's DER SubjectPublicKeyInfo), a
/// model, and optional metadata as `key=value;key=value`. A UTF-8 byte order mark (Excel writes
/// one) is skipped. An ID given twice in one file is an error naming both lines.
///
/// Feed bytes in any chunking with ``feed(_:_:)`` and call ``finish(_:)`` at the end; each row
/// reaches the handler as a value or an ``AllowListRowError``.
public struct AllowListParser: Sendable {
    /// The longest line accepted, so a file without newlines cannot exhaust memory.
    public static let maximumLineBytes = 8192
    public static let header = ["id", "secret", "key_sha256", "model", "metadata"]
    static let headerHelp = "the first line must be a header naming the columns: id, model, secret and/or key_sha256, optionally metadata"

    /// Where each column is, once the header is read.
    struct Columns: Sendable {
        var count: Int
        var id: Int
        var secret: Int?
        var keySHA256: Int?
        var model: Int
        var metadata: Int?
    }

    /// The current row's bytes (fields unquoted), reused from row to row.
    private var row: [UInt8] = []
    /// Where each completed field of the current row lies in ``row``.
    private var bounds: [Range<Int>] = []
    private var fieldStart = 0
    private var inQuotes = false
    private var quoteSeen = false  // the previous byte closed a quoted section
    private var line = 1
    private var rowStartLine = 1
    /// Nil until the header is read; a header that is wrong leaves `headerFailed` set.
    private var columns: Columns?
    private var headerFailed = false
    private var overlong = false
    private var started = false
    /// The line each ID was first seen on, by the ID's hash (64 bits: a collision in a million
    /// rows is about one in 30 million files, and would only report a duplicate that is not one).
    private var seen: [Int: Int] = [:]
    /// Whether an ID seen twice is reported. A second pass over a file whose first pass found no
    /// duplicate turns this off rather than remember a million IDs again.
    public var checksDuplicates = true

    public init() {
        row.reserveCapacity(512)
        bounds.reserveCapacity(8)
    }

    /// The number of lines started so far.
    public var linesRead: Int { line }

    /// Parses `bytes`, calling `handle` for each complete row.
    public mutating func feed(
        _ bytes: ArraySlice<UInt8>, _ handle: (Result<AllowListRow, AllowListRowError>) throws -> Void
    ) rethrows {
        var bytes = bytes
        if !started {
            started = true
            if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        }
        try bytes.withUnsafeBufferPointer { buffer in
            for byte in buffer {
                try consume(byte, handle)
            }
        }
    }

    @inline(__always)
    private mutating func consume(_ byte: UInt8, _ handle: (Result<AllowListRow, AllowListRowError>) throws -> Void) rethrows {
        if inQuotes {
            if byte == 0x22 {
                inQuotes = false
                quoteSeen = true
            } else {
                if byte == 0x0A { line += 1 }
                append(byte)
            }
            return
        }
        switch byte {
        case 0x22:  // "
            if quoteSeen {
                append(0x22)  // "" inside a quoted field is one quote
                quoteSeen = false
            }
            inQuotes = true
        case 0x2C:  // ,
            quoteSeen = false
            bounds.append(fieldStart..<row.count)
            fieldStart = row.count
        case 0x0A:  // LF ends a row (a CR before it is dropped)
            quoteSeen = false
            if row.count > fieldStart, row.last == 0x0D { row.removeLast() }
            bounds.append(fieldStart..<row.count)
            try endRow(handle)
            line += 1
            rowStartLine = line
        default:
            quoteSeen = false
            append(byte)
        }
    }

    @inline(__always)
    private mutating func append(_ byte: UInt8) {
        if row.count < Self.maximumLineBytes {
            row.append(byte)
        } else {
            overlong = true
        }
    }

    /// Ends the input, emitting a last row without a trailing newline.
    public mutating func finish(_ handle: (Result<AllowListRow, AllowListRowError>) throws -> Void) rethrows {
        if inQuotes {
            try handle(.failure(AllowListRowError(line: rowStartLine, message: "a quoted field is not closed")))
            return
        }
        if !row.isEmpty || !bounds.isEmpty {
            if row.count > fieldStart, row.last == 0x0D { row.removeLast() }
            bounds.append(fieldStart..<row.count)
            try endRow(handle)
        }
        if columns == nil, !headerFailed {
            try handle(.failure(AllowListRowError(line: 1, message: "the file is empty; \(Self.headerHelp)", isFileLevel: true)))
            headerFailed = true
        }
    }

    private mutating func endRow(_ handle: (Result<AllowListRow, AllowListRowError>) throws -> Void) rethrows {
        defer {
            row.removeAll(keepingCapacity: true)
            bounds.removeAll(keepingCapacity: true)
            fieldStart = 0
            overlong = false
        }
        let rowLine = rowStartLine
        if overlong {
            try handle(.failure(AllowListRowError(line: rowLine, message: "the line is longer than \(Self.maximumLineBytes) bytes")))
            return
        }
        if headerFailed { return }  // the header was wrong: nothing after it can be read
        guard let columns else {
            switch Self.readHeader(bounds.map { row[$0] }) {
            case .success(let read): self.columns = read
            case .failure(let message):
                headerFailed = true
                try handle(.failure(AllowListRowError(line: rowLine, message: message, isFileLevel: true)))
            }
            return
        }
        if bounds.count == 1 && bounds[0].isEmpty { return }  // blank line
        let parsed = Self.parse(bounds.map { row[$0] }, line: rowLine, columns: columns)
        if checksDuplicates, case .success(let device) = parsed {
            let key = device.id.rawValue.hashValue
            if let first = seen[key] {
                try handle(
                    .failure(
                        AllowListRowError(
                            line: rowLine, message: "device \(device.id) is on line \(first) already: an ID appears once per file")))
                return
            }
            seen[key] = rowLine
        }
        try handle(parsed)
    }

    enum HeaderOutcome {
        case success(Columns)
        case failure(String)
    }

    /// The columns a header names. An unknown name is reported only when it looks like a column
    /// name; a line of data taken for a header (no header at all) is never echoed, since its
    /// fields may be secrets.
    static func readHeader(_ fields: [ArraySlice<UInt8>]) -> HeaderOutcome {
        let names = fields.map { String(decoding: $0, as: UTF8.self).trimmingASCIIWhitespace().lowercased() }
        var indices: [String: Int] = [:]
        var unknown: [String] = []
        for (index, name) in names.enumerated() {
            if header.contains(name) {
                guard indices[name] == nil else { return .failure("the header names column '\(name)' twice; \(headerHelp)") }
                indices[name] = index
            } else {
                unknown.append(name)
            }
        }
        guard let id = indices["id"], let model = indices["model"], indices["secret"] != nil || indices["key_sha256"] != nil else {
            if indices.isEmpty {
                return .failure("the first line is not a header (it names no known column); \(headerHelp)")
            }
            let missing = ["id", "model"].filter { indices[$0] == nil } + (indices["secret"] == nil && indices["key_sha256"] == nil
                ? ["secret or key_sha256"] : [])
            return .failure("the header lacks \(missing.joined(separator: ", ")); \(headerHelp)")
        }
        guard unknown.isEmpty else {
            let nameLike = unknown.allSatisfy { name in
                (1...32).contains(name.utf8.count) && name.utf8.allSatisfy { (0x61...0x7A).contains($0) || $0 == 0x5F }
            }
            return .failure(
                nameLike
                    ? "the header names unknown column\(unknown.count == 1 ? "" : "s") \(unknown.map { "'\($0)'" }.joined(separator: ", ")); \(headerHelp)"
                    : "the header has \(unknown.count) column\(unknown.count == 1 ? "" : "s") that \(unknown.count == 1 ? "is" : "are") not known (not shown: they may be data); \(headerHelp)")
        }
        return .success(
            Columns(
                count: names.count, id: id, secret: indices["secret"], keySHA256: indices["key_sha256"], model: model,
                metadata: indices["metadata"]))
    }

    static func parse(_ fields: [ArraySlice<UInt8>], line: Int, columns: Columns) -> Result<AllowListRow, AllowListRowError> {
        func fail(_ message: String) -> Result<AllowListRow, AllowListRowError> {
            .failure(AllowListRowError(line: line, message: message))
        }
        guard fields.count == columns.count else {
            return fail("expected \(columns.count) columns, found \(fields.count)")
        }
        guard let idText = String(validating: fields[columns.id], as: UTF8.self) else { return fail("the ID is not UTF-8") }
        let id: DeviceID
        do {
            id = try DeviceID(idText)
        } catch {
            return fail("\(error)")
        }
        let secret = columns.secret.map { fields[$0] } ?? []
        let fingerprint = columns.keySHA256.map { fields[$0] } ?? []
        let proof: AllowListRow.Proof
        switch (secret.isEmpty, fingerprint.isEmpty) {
        case (false, true):
            guard (SecretHasher.minimumSecretBytes...SecretHasher.maximumSecretBytes).contains(secret.count) else {
                return fail(
                    "device \(id): the secret has \(secret.count) bytes; it needs \(SecretHasher.minimumSecretBytes) to \(SecretHasher.maximumSecretBytes)"
                )
            }
            proof = .secret(Array(secret))
        case (true, false):
            guard fingerprint.count == 64, let bytes = Hex.bytes(fingerprint) else {
                return fail("device \(id): key_sha256 must be 64 hexadecimal digits")
            }
            proof = .publicKeySHA256(bytes)
        case (false, false):
            return fail("device \(id): give a secret or a key_sha256, not both")
        case (true, true):
            return fail("device \(id): an ID alone proves nothing; give a secret or a key_sha256")
        }
        guard let model = String(validating: fields[columns.model], as: UTF8.self), !model.isEmpty, model.utf8.count <= 64,
            model.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else {
            return fail("device \(id): the model must be 1 to 64 printable characters")
        }
        var metadata: [String: String] = [:]
        if let column = columns.metadata, !fields[column].isEmpty {
            guard let text = String(validating: fields[column], as: UTF8.self) else { return fail("device \(id): metadata is not UTF-8") }
            for pair in text.split(separator: ";", omittingEmptySubsequences: true) {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 64, parts[1].utf8.count <= 256,
                    parts[0].utf8.allSatisfy({ isKeyByte($0) }),
                    parts[1].unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
                else {
                    return fail("device \(id): metadata must be key=value pairs separated by ';' (keys: letters, digits, '_', '-', '.')")
                }
                metadata[String(parts[0])] = String(parts[1])
            }
            guard metadata.count <= 32 else { return fail("device \(id): at most 32 metadata keys") }
        }
        return .success(AllowListRow(line: line, id: id, proof: proof, model: model, metadata: metadata))
    }

    private static func isKeyByte(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            || byte == 0x5F || byte == 0x2D || byte == 0x2E
    }
}

extension String {
    func trimmingASCIIWhitespace() -> String {
        String(self.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
