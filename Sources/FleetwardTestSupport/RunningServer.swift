public import Foundation

/// A `fleetward serve` started in the background for a test: waits (bounded) for its listener
/// lines, and stops it with SIGTERM, by its own PID only.
public final class RunningServer: @unchecked Sendable {
    public let process: Process
    public let stdoutPath: String
    public let stderrPath: String
    /// Listener name (the text before " listening on") → URL, e.g. "management API" → "http://127.0.0.1:41121".
    public private(set) var listeners: [String: String] = [:]

    /// Starts `executable arguments` and waits up to `timeout` seconds until `expectedListeners`
    /// listener lines have been printed.
    public init(
        executable: String, arguments: [String], environment: [String: String], logDirectory: String, expectedListeners: Int = 1,
        timeout: Double = 60
    ) throws {
        stdoutPath = logDirectory + "/serve-\(UUID().uuidString.prefix(8)).out"
        stderrPath = stdoutPath.replacingOccurrences(of: ".out", with: ".err")
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = FileHandle(forWritingAtPath: stdoutPath)
        let err = FileHandle(forWritingAtPath: stderrPath)
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.launchSerialized()
        // The child has its own copies; ours would only hold descriptors open.
        try? out?.close()
        try? err?.close()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            listeners = Self.parseListeners(stdout)
            if listeners.count >= expectedListeners { return }
            guard process.isRunning else { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let output = "stdout: \(stdout)\nstderr: \(stderr)"
        stop()
        throw Tool.TimedOut(description: "fleetward serve did not report \(expectedListeners) listener(s) in \(timeout) s\n\(output)")
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    static func parseListeners(_ text: String) -> [String: String] {
        var found: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let range = line.range(of: " listening on ") else { continue }
            let name = String(line[..<range.lowerBound])
            let url = line[range.upperBound...].split(separator: " ").first.map(String.init) ?? ""
            found[name] = url
        }
        return found
    }

    /// Sends SIGTERM and waits up to `timeout` seconds; SIGKILL after that. Returns the exit status
    /// (nil when it had to be killed).
    @discardableResult
    public func stop(timeout: Double = 15) -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
    }
}
