public import Foundation
public import Logging
public import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Debian's `mosquitto`, run by `serve` as the broker behind the MQTT front door: listening only
/// on a unix socket in the data directory (`DIR/mqtt/broker.sock`, in a 0700 directory), with a
/// generated configuration, restarted if it exits, stopped with `serve`.
///
/// Only Fleetward reaches that socket, after it has checked each device's certificate and
/// policy, so the broker itself admits anonymous clients; the user name it sees is the device ID
/// (its own ACLs may add a second layer).
public struct MosquittoSupervisor: Service {
    public let directory: String
    public let executable: String
    public let logger: Logger

    /// - Parameter directory: `DIR/mqtt`, made 0700 if missing.
    public init(directory: String, executable: String, logger: Logger) {
        self.directory = directory
        self.executable = executable
        self.logger = logger
    }

    /// The broker's socket.
    public var endpoint: MQTTBrokerEndpoint { .unix(path: directory + "/broker.sock") }

    /// `mosquitto` on the PATH or in /usr/sbin; nil when it is not installed.
    public static func findExecutable() -> String? {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin"]
        return paths.map { $0 + "/mosquitto" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Writes the configuration; done before `serve` starts its listeners. A broker left running
    /// by an earlier `serve` that was killed (its pid file names a live mosquitto with this
    /// configuration) is stopped first.
    public func prepare() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        chmod(directory, 0o700)
        stopLeftover()
        let user = getpwuid(geteuid()).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "root"
        let configuration = """
            # Written by fleetward serve at each start; edits are lost.
            per_listener_settings false
            allow_anonymous true
            user \(user)
            persistence true
            persistence_location \(directory)/
            pid_file \(directory)/mosquitto.pid
            log_dest file \(directory)/mosquitto.log
            log_type error
            log_type warning
            max_keepalive 65535
            listener 0 \(directory)/broker.sock

            """
        try Data(configuration.utf8).write(to: URL(fileURLWithPath: directory + "/mosquitto.conf"), options: .atomic)
        try? FileManager.default.removeItem(atPath: directory + "/broker.sock")
    }

    private func stopLeftover() {
        guard let text = try? String(contentsOfFile: directory + "/mosquitto.pid", encoding: .utf8),
            let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1,
            let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))
        else { return }
        let arguments = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard arguments.first?.hasSuffix("mosquitto") == true, arguments.contains(directory + "/mosquitto.conf") else { return }
        logger.warning("stopping the MQTT broker an earlier serve left running", metadata: ["pid": "\(pid)"])
        kill(pid, SIGTERM)
        for _ in 0..<50 where kill(pid, 0) == 0 { usleep(20_000) }
    }

    public func run() async throws {
        var failures = 0
        while !Task.isCancelledOrShuttingDown {
            let started = ContinuousClock.now
            let child: SpawnedProcess
            do {
                child = try SpawnedProcess.spawn(executable, arguments: ["-c", directory + "/mosquitto.conf"])
            } catch {
                logger.error("cannot start the MQTT broker", metadata: ["executable": "\(executable)", "error": "\(error)"])
                throw error
            }
            let status: Int32? = await withTaskCancellationOrGracefulShutdownHandler {
                await child.exit()
            } onCancelOrGracefulShutdown: {
                child.signal(SIGTERM)
            }
            if Task.isCancelledOrShuttingDown {
                return
            }
            let log = (try? String(contentsOfFile: directory + "/mosquitto.log", encoding: .utf8)) ?? ""
            logger.error(
                "the MQTT broker exited; restarting it",
                metadata: ["status": "\(status ?? -1)", "log": "\(log.suffix(400).trimmingCharacters(in: .whitespacesAndNewlines))"])
            failures = ContinuousClock.now - started > .seconds(30) ? 1 : failures + 1
            try? await Task.sleep(for: .milliseconds(min(10_000, 200 << min(failures, 6))))
        }
    }
}

extension Task where Success == Never, Failure == Never {
    static var isCancelledOrShuttingDown: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}

/// A child process started with an empty signal mask and default signal handlers (a process
/// started from one of this process's threads would otherwise inherit that thread's blocked
/// SIGTERM and SIGINT, and never stop), its output discarded.
final class SpawnedProcess: Sendable {
    let pid: pid_t
    private let exited = Mutex<(status: Int32?, waiter: CheckedContinuation<Int32?, Never>?)>((nil, nil))

    private init(pid: pid_t) {
        self.pid = pid
    }

    static func spawn(_ executable: String, arguments: [String]) throws -> SpawnedProcess {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for descriptor in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] {
            posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
        }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EIO) }
        let process = SpawnedProcess(pid: pid)
        let child = pid
        let thread = Thread {
            var status: Int32 = 0
            while waitpid(child, &status, 0) == -1, errno == EINTR {}
            let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            let waiter = process.exited.withLock { state in
                state.status = code
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: code)
        }
        thread.name = "fleetward-child-\(child)"
        thread.start()
        return process
    }

    /// Sends `signal` unless the process has been reaped.
    func signal(_ signal: Int32) {
        exited.withLock { state in
            if state.status == nil { kill(pid, signal) }
        }
    }

    /// Waits for the process to end: its exit status, or 128 + the signal that ended it.
    func exit() async -> Int32? {
        await withCheckedContinuation { continuation in
            let status = exited.withLock { state -> Int32?? in
                if let status = state.status { return .some(status) }
                state.waiter = continuation
                return .none
            }
            if let status { continuation.resume(returning: status) }
        }
    }
}
