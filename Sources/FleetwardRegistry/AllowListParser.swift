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

/// A row that could not be read, with its line number.
public struct AllowListRowError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// Streams an allow-list CSV (RFC 4180: comma-separated, `"` quoting, CRLF or LF).
///
/// The first line must be the header `id,secret,key_sha256,model` with an optional fifth column
/// `metadata`. Each row has an ID, exactly one of `secret` (the per-device factory secret, 16 to
/// 256 bytes) or `key_sha256` (64 hex digits: SHA-256 of the device key's DER
/// SubjectPublicKeyInfo), a model, and optional metadata as `key=value;key=value`.
///
/// Feed bytes in any chunking with ``feed(_:_:)`` and call ``finish(_:)`` at the end; each row
/// reaches the handler as a value or an ``AllowListRowError``.
public struct AllowListParser: Sendable {
    /// The longest line accepted, so a file without newlines cannot exhaust memory.
    public static let maximumLineBytes = 8192
    public static let header = ["id", "secret", "key_sha256", "model", "metadata"]

    /// The current row's bytes (fields unquoted), reused from row to row.
    private var row: [UInt8] = []
    /// Where each completed field of the current row lies in ``row``.
    private var bounds: [Range<Int>] = []
    private var fieldStart = 0
    private var inQuotes = false
    private var quoteSeen = false  // the previous byte closed a quoted section
    private var line = 1
    private var rowStartLine = 1
    private var columns: Int?
    private var overlong = false

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
        if columns == nil {
            try handle(
                .failure(
                    AllowListRowError(
                        line: 1,
                        message:
                            "the file is empty; the first line must be the header \(Self.header.prefix(4).joined(separator: ","))[,metadata]"
                    )))
            columns = 0
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
        guard let columns else {
            let names = bounds.map { String(decoding: row[$0], as: UTF8.self).trimmingASCIIWhitespace().lowercased() }
            if names == Array(Self.header.prefix(4)) || names == Self.header {
                self.columns = names.count
            } else {
                self.columns = 0
                try handle(
                    .failure(
                        AllowListRowError(
                            line: rowLine,
                            message:
                                "the header must be \(Self.header.prefix(4).joined(separator: ","))[,metadata], not \(names.joined(separator: ",").prefix(80))"
                        )))
            }
            return
        }
        guard columns > 0 else { return }  // header was wrong: everything after is unreadable
        if bounds.count == 1 && bounds[0].isEmpty { return }  // blank line
        try handle(Self.parse(bounds.map { row[$0] }, line: rowLine, columns: columns))
    }

    static func parse(_ fields: [ArraySlice<UInt8>], line: Int, columns: Int) -> Result<AllowListRow, AllowListRowError> {
        func fail(_ message: String) -> Result<AllowListRow, AllowListRowError> {
            .failure(AllowListRowError(line: line, message: message))
        }
        guard fields.count == columns else {
            return fail("expected \(columns) columns, found \(fields.count)")
        }
        guard let idText = String(validating: fields[0], as: UTF8.self) else { return fail("the ID is not UTF-8") }
        let id: DeviceID
        do {
            id = try DeviceID(idText)
        } catch {
            return fail("\(error)")
        }
        let secret = fields[1]
        let fingerprint = fields[2]
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
        guard let model = String(validating: fields[3], as: UTF8.self), !model.isEmpty, model.utf8.count <= 64,
            model.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else {
            return fail("device \(id): the model must be 1 to 64 printable characters")
        }
        var metadata: [String: String] = [:]
        if columns == 5, !fields[4].isEmpty {
            guard let text = String(validating: fields[4], as: UTF8.self) else { return fail("device \(id): metadata is not UTF-8") }
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
