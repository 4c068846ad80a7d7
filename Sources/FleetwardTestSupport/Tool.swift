public import Foundation

/// Runs real programs (openssl, curl, the `fleetward` binary) with a timeout and captures their output.
///
/// A program that is not installed is a failure that says how to install it, never a silent skip.
public struct Tool: Sendable {
    /// What a run produced.
    public struct Result: Sendable, CustomStringConvertible {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        public var stdoutBytes: [UInt8]

        public var succeeded: Bool { status == 0 }

        /// Non-empty stderr lines.
        public var stderrLines: [String] {
            stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        }

        public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
    }

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public struct TimedOut: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public let executable: String

    /// A program on PATH (or an absolute path).
    public init(_ name: String) throws {
        if name.hasPrefix("/") {
            guard FileManager.default.isExecutableFile(atPath: name) else {
                throw Missing(description: "\(name) does not exist or is not executable")
            }
            executable = name
            return
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) {
                executable = candidate
                return
            }
        }
        throw Missing(description: "\(name) is not installed; run scripts/test.sh (it installs it with apt-get) or apt-get install \(name)")
    }

    public static func openssl() throws -> Tool { try Tool("openssl") }

    /// Runs the program and waits at most `timeout` seconds.
    @discardableResult
    public func run(
        _ arguments: [String],
        stdin: [UInt8]? = nil,
        environment: [String: String]? = nil,
        removingEnvironment: [String] = [],
        currentDirectory: String? = nil,
        timeout: Double = 60
    ) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment ?? [:] { env[key] = value }
        for key in removingEnvironment { env[key] = nil }
        process.environment = env
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let outPipe = Pipe()
        let errPipe = Pipe()
        let inPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = inPipe
        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }
        try process.launchSerialized()
        // Drain both pipes concurrently so a chatty program cannot block on a full pipe.
        let outData = LockedData()
        let errData = LockedData()
        let group = DispatchGroup()
        for (pipe, sink) in [(outPipe, outData), (errPipe, errData)] {
            group.enter()
            DispatchQueue.global().async {
                sink.set(pipe.fileHandleForReading.readDataToEndOfFile())
                // Closed here, not whenever Foundation releases the Pipe: leaked descriptors above
                // 1023 corrupt memory in Foundation's select()-based process monitor.
                try? pipe.fileHandleForReading.close()
                group.leave()
            }
        }
        if let stdin { inPipe.fileHandleForWriting.write(Data(stdin)) }
        try? inPipe.fileHandleForWriting.close()
        if finished.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            _ = finished.wait(timeout: .now() + 5)
            throw TimedOut(description: "\(executable) \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        group.wait()
        let out = outData.get()
        return Result(
            status: process.terminationStatus,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: errData.get(), as: UTF8.self),
            stdoutBytes: Array(out)
        )
    }
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.withLock { data = value } }
    func get() -> Data { lock.withLock { data } }
}

extension Process {
    private static let launchLock = NSLock()

    /// `run()`, one launch at a time in this process. Foundation's `Process` on Linux watches each
    /// child through a socket that its CFSocket manager polls with select(): a descriptor above
    /// 1023 overflows the fd_set and corrupts memory (seen as crashes in `Process.run`), so tests
    /// close their pipes promptly and launch one program at a time.
    public func launchSerialized() throws {
        try Self.launchLock.withLock { try run() }
    }
}
