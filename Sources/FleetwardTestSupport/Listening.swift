public import Foundation

/// Which process listens where, read from /proc: a test that starts a server on a port it picked
/// itself must know that its own server holds that port, not another test's server that happened
/// to be on it (a probe that connects proves only that something listens).
public enum Listening {
    /// Ports outside Linux's ephemeral range (32768–60999), so servers bound to port 0 by
    /// other tests running at the same time never sit on them.
    public static func candidatePort() -> Int { Int.random(in: 20_000...32_000) }

    /// Launches the server `make` describes for a port it is given (output discarded) and waits
    /// until that process holds the port; a busy port (the process exits or retries) means another
    /// port, five times at most.
    public static func start(_ what: String, _ make: (Int) throws -> (executable: String, arguments: [String])) throws -> (Process, Int) {
        for _ in 0..<5 {
            let candidate = candidatePort()
            let (executable, arguments) = try make(candidate)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            try process.launchSerialized()
            for _ in 0..<200 where process.isRunning {
                if Self.process(process.processIdentifier, listensOn: candidate) { return (process, candidate) }
                Thread.sleep(forTimeInterval: 0.05)
            }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        throw Tool.TimedOut(description: "\(what) did not start")
    }

    /// True when process `pid` holds a TCP socket listening on `port` (IPv4 or IPv6).
    public static func process(_ pid: Int32, listensOn port: Int) -> Bool {
        let wanted = String(format: ":%04X", port)
        var inodes: Set<Substring> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                // local address, state 0A (LISTEN), inode in column 10
                if fields.count > 9, fields[1].hasSuffix(wanted), fields[3] == "0A" { inodes.insert(fields[9]) }
            }
        }
        guard !inodes.isEmpty, let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return false }
        for fd in fds {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                target.hasPrefix("socket:[")
            else { continue }
            if inodes.contains(target.dropFirst("socket:[".count).dropLast()) { return true }
        }
        return false
    }
}
