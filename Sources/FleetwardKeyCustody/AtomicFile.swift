public import Foundation
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes files so that a reader sees the old content or the new, never a mix, even across a crash.
///
/// The bytes go to a new temporary file in the same directory (created with `O_EXCL` and the
/// final permissions, so a key is never readable by others even for an instant), are flushed with
/// `fsync`, and the file is renamed over the target; then the directory is fsynced so the rename
/// itself survives a power cut.
public enum AtomicFile {
    /// Replaces `path` with `bytes`.
    ///
    /// - Parameters:
    ///   - permissions: The file's mode, e.g. `0o600` for keys, `0o644` for certificates.
    /// - Throws: ``KeyCustodyError`` with code `io`, naming the path and the system error.
    public static func write(_ bytes: some Collection<UInt8>, to path: String, permissions: mode_t) throws {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/." + url.lastPathComponent + ".tmp-" + String(UInt64.random(in: .min ... .max), radix: 36)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, permissions)
        guard fd >= 0 else { throw systemError("create", temporary) }
        var succeeded = false
        defer {
            if !succeeded { unlink(temporary) }
        }
        do {
            defer { close(fd) }
            // The umask may have narrowed the mode; set exactly what was asked.
            guard fchmod(fd, permissions) == 0 else { throw systemError("chmod", temporary) }
            let data = Array(bytes)
            var offset = 0
            while offset < data.count {
                let written = data[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw systemError("write", temporary)
                }
                offset += written
            }
            guard fsync(fd) == 0 else { throw systemError("fsync", temporary) }
        }
        guard rename(temporary, path) == 0 else { throw systemError("rename", path) }
        succeeded = true
        try syncDirectory(directory)
    }

    /// Creates `path` and missing parents with `permissions`, then fsyncs the parent.
    public static func makeDirectory(_ path: String, permissions: mode_t = 0o700) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: Int(permissions)]
            )
        } catch {
            throw KeyCustodyError(.io, "cannot create directory \(path): \(error.localizedDescription)", underlying: error)
        }
        try syncDirectory(URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    /// Reads a whole file, refusing files larger than `limit` bytes.
    public static func read(_ path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw KeyCustodyError(.notFound, "\(path) does not exist") }
            throw systemError("open", path)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw systemError("stat", path) }
        guard Int(info.st_size) <= limit else {
            throw KeyCustodyError(.io, "\(path) is \(info.st_size) bytes; the limit is \(limit)")
        }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw systemError("read", path)
            }
            if count == 0 { break }
            result += buffer[0..<count]
            guard result.count <= limit else {
                throw KeyCustodyError(.io, "\(path) is larger than the limit of \(limit) bytes")
            }
        }
        return result
    }

    /// The file's permission bits, or nil when it does not exist.
    public static func permissions(of path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode & 0o777
    }

    static func syncDirectory(_ directory: String) throws {
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw systemError("open directory", directory) }
        defer { close(fd) }
        guard fsync(fd) == 0 || errno == EINVAL else { throw systemError("fsync directory", directory) }
    }

    static func systemError(_ operation: String, _ path: String) -> KeyCustodyError {
        let code = errno
        let reason = String(cString: strerror(code))
        return KeyCustodyError(.io, "cannot \(operation) \(path): \(reason)")
    }
}
