import FleetwardPKI
public import FleetwardRegistry
public import Foundation
import FleetwardKeyCustody

/// Imports an allow-list CSV into the registry (DESIGN: provisioning flow 1).
///
/// Two passes over the file. The first reads every row and stops the import, changing nothing,
/// when any row is malformed (unless `skipInvalid`), naming each bad line. The second hashes the
/// factory secrets (HMAC-SHA-256 under the registry key) and writes the rows in batches: each
/// batch is one transaction with one audit entry, so a crash leaves whole batches, and running
/// the same file again only counts duplicates.
public struct AllowListImport: Sendable {
    /// What an import did.
    public struct Summary: Codable, Sendable, Equatable {
        public var file: String
        public var rows: Int
        public var inserted: Int
        public var duplicates: Int
        public var rejected: Int
        public var errors: [String]
        public var seconds: Double
        public var rowsPerSecond: Int
    }

    /// Progress of the second pass.
    public struct Progress: Sendable {
        public var rowsDone: Int
        public var rowsTotal: Int
        public var elapsed: Double
    }

    public static let defaultBatchSize = 10_000
    /// How many error lines a summary keeps.
    public static let maximumReportedErrors = 20

    public let path: String
    public var batchSize = defaultBatchSize
    public var skipInvalid = false

    public init(path: String) {
        self.path = path
    }

    /// Pass 1: counts the rows and collects the malformed ones.
    /// - Throws: ``AuthorityError`` `invalidRequest` when the file as a whole cannot be read (no
    ///   or a wrong header, empty), whatever ``skipInvalid`` says.
    public func validate() throws -> (rows: Int, errors: [AllowListRowError], rejected: Int) {
        var parser = AllowListParser()
        var rows = 0
        var rejected = 0
        var errors: [AllowListRowError] = []
        var fileError: AllowListRowError?
        func add(_ result: Result<AllowListRow, AllowListRowError>) {
            switch result {
            case .success: rows += 1
            case .failure(let error) where error.isFileLevel: fileError = error
            case .failure(let error):
                rejected += 1
                if errors.count < Self.maximumReportedErrors { errors.append(error) }
            }
        }
        try Self.stream(path) { chunk in parser.feed(chunk, add) }
        parser.finish(add)
        if let fileError { throw AuthorityError(.invalidRequest, "\(path) cannot be imported: \(fileError)") }
        return (rows, errors, rejected)
    }

    /// Runs both passes.
    ///
    /// - Throws: ``RegistryError`` `invalidInput` naming the bad lines when the file has malformed
    ///   rows and `skipInvalid` is false (nothing is written then).
    public func run(
        into registrar: Registrar, hasher: SecretHasher, by actor: Actor, now: @Sendable () -> Date = Date.init,
        progress: (Progress) -> Void = { _ in }
    ) async throws -> Summary {
        let started = Date()
        let (total, errors, rejected) = try validate()
        if rejected > 0 && !skipInvalid {
            let shown = errors.prefix(3).map(\.description).joined(separator: "; ")
            let more = rejected > 3 ? "; and \(rejected - 3) more" : ""
            throw AuthorityError(
                .invalidRequest,
                "\(path) has \(rejected) malformed row\(rejected == 1 ? "" : "s") (\(shown)\(more)); nothing was imported (--skip-invalid imports the rest)"
            )
        }
        let source = URL(fileURLWithPath: path).lastPathComponent
        let time = now()
        let clock = ContinuousClock()
        let start = clock.now

        // Pass 2: one task parses and hashes into batches, this one writes them; the queue holds
        // at most two batches so memory stays flat whatever the file size.
        struct Batch: Sendable {
            var devices: [Device]
            var lines: ClosedRange<Int>
        }
        let queue = BoundedQueue<Batch>(capacity: 2)
        let path = self.path
        let batchSize = self.batchSize
        let producer = Task {
            do {
                var parser = AllowListParser()
                // Pass 1 found no bad row (so no duplicate): no need to remember every ID again.
                parser.checksDuplicates = rejected > 0
                var devices: [Device] = []
                devices.reserveCapacity(batchSize)
                var firstLine = 0
                var lastLine = 0
                func add(_ result: Result<AllowListRow, AllowListRowError>) {
                    guard case .success(let row) = result else { return }
                    if devices.isEmpty { firstLine = row.line }
                    lastLine = row.line
                    devices.append(Self.device(from: row, hasher: hasher, at: time))
                }
                try await Self.streamAsync(path) { chunk in
                    var ready: [Batch] = []
                    parser.feed(chunk) { result in
                        add(result)
                        if devices.count == batchSize {
                            ready.append(Batch(devices: devices, lines: firstLine...lastLine))
                            devices.removeAll(keepingCapacity: true)
                        }
                    }
                    for batch in ready {
                        guard await queue.send(batch) else { return }
                    }
                }
                parser.finish(add)
                if !devices.isEmpty { await queue.send(Batch(devices: devices, lines: firstLine...lastLine)) }
                await queue.finish()
            } catch {
                await queue.finish(throwing: error)
            }
        }

        var done = 0
        var inserted = 0
        var duplicates = 0
        do {
            // Cancelled (Ctrl-C in the console) between batches: every batch written so far is
            // whole and committed, and the next run of the same file carries on (as duplicates).
            try Task.checkCancellation()
            while let batch = try await queue.next() {
                let result = try await registrar.importBatch(batch.devices, source: source, lines: batch.lines, by: actor, at: now())
                inserted += result.inserted
                duplicates += result.duplicates
                done += batch.devices.count
                // After every committed batch: `rowsDone` is exactly what is in the registry.
                progress(Progress(rowsDone: done, rowsTotal: total, elapsed: Self.seconds(clock.now - start)))
                try Task.checkCancellation()
            }
        } catch {
            await queue.finish(throwing: error)
            producer.cancel()
            throw error
        }
        let seconds = Date().timeIntervalSince(started)
        return Summary(
            file: path, rows: total + rejected, inserted: inserted, duplicates: duplicates, rejected: rejected,
            errors: errors.map(\.description), seconds: (seconds * 1000).rounded() / 1000,
            rowsPerSecond: seconds > 0 ? Int(Double(total) / seconds) : total
        )
    }

    /// Imports an allow-list held in memory (the management API's `POST /devices/import`):
    /// all rows are checked first and nothing is written when any is malformed; then batches
    /// of ``defaultBatchSize`` rows, each one transaction with its audit entry.
    public static func importCSV(
        _ bytes: [UInt8], source: String, into registrar: Registrar, hasher: SecretHasher, by actor: Actor,
        now: @Sendable () -> Date = Date.init
    ) async throws -> Summary {
        let started = Date()
        var parser = AllowListParser()
        var rows: [AllowListRow] = []
        var errors: [AllowListRowError] = []
        var rejected = 0
        var fileError: AllowListRowError?
        func add(_ result: Result<AllowListRow, AllowListRowError>) {
            switch result {
            case .success(let row): rows.append(row)
            case .failure(let error) where error.isFileLevel: fileError = error
            case .failure(let error):
                rejected += 1
                if errors.count < maximumReportedErrors { errors.append(error) }
            }
        }
        parser.feed(bytes[...], add)
        parser.finish(add)
        if let fileError { throw AuthorityError(.invalidRequest, "the allow-list cannot be imported: \(fileError)") }
        if rejected > 0 {
            let shown = errors.prefix(3).map(\.description).joined(separator: "; ")
            let more = rejected > 3 ? "; and \(rejected - 3) more" : ""
            throw AuthorityError(
                .invalidRequest,
                "the allow-list has \(rejected) malformed row\(rejected == 1 ? "" : "s") (\(shown)\(more)); nothing was imported")
        }
        guard !rows.isEmpty else { throw AuthorityError(.invalidRequest, "the allow-list has no rows") }
        let time = now()
        var inserted = 0
        var duplicates = 0
        var start = rows.startIndex
        while start < rows.endIndex {
            let end = min(start + defaultBatchSize, rows.endIndex)
            let batch = rows[start..<end].map { Self.device(from: $0, hasher: hasher, at: time) }
            let result = try await registrar.importBatch(
                batch, source: source, lines: rows[start].line...rows[end - 1].line, by: actor, at: now())
            inserted += result.inserted
            duplicates += result.duplicates
            start = end
        }
        let seconds = Date().timeIntervalSince(started)
        return Summary(
            file: source, rows: rows.count, inserted: inserted, duplicates: duplicates, rejected: 0, errors: [],
            seconds: (seconds * 1000).rounded() / 1000, rowsPerSecond: seconds > 0 ? Int(Double(rows.count) / seconds) : rows.count)
    }

    /// The device an allow-list row registers: its factory secret hashed, or its key fingerprint.
    static func device(from row: AllowListRow, hasher: SecretHasher, at time: Date) -> Device {
        let proof: EnrollmentProof
        switch row.proof {
        case .secret(let secret): proof = .secret(hmac: hasher.hash(secret))
        case .publicKeySHA256(let sha256): proof = .publicKey(sha256: sha256)
        }
        return Device(id: row.id, model: row.model, metadata: row.metadata, proof: proof, createdAt: time)
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static let chunkSize = 1 << 20

    private static func stream(_ path: String, _ body: (ArraySlice<UInt8>) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AuthorityError(.invalidRequest, "cannot read \(path): no such file or no permission")
        }
        defer { try? handle.close() }
        while let data = try handle.read(upToCount: chunkSize), !data.isEmpty {
            try body(Array(data)[...])
        }
    }

    private static func streamAsync(_ path: String, _ body: (ArraySlice<UInt8>) async throws -> Void) async throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AuthorityError(.invalidRequest, "cannot read \(path): no such file or no permission")
        }
        defer { try? handle.close() }
        while let data = try handle.read(upToCount: chunkSize), !data.isEmpty {
            try await body(Array(data)[...])
        }
    }
}
