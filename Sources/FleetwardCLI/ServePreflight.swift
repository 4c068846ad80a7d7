import ArgumentParser
import FleetwardAuthority
import FleetwardServer
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What `serve` checks before it asks for the passphrase or prints its banner: that each
/// listener's address is free (a one-line error naming the listener otherwise), and that no
/// other `serve` runs on the same data directory with the embedded SQLite registry.
enum ServePreflight {
    /// Binds and releases `address` as the listener will (SO_REUSEADDR), so a port in use is
    /// reported before anything else happens. Port 0 (any free port) is not checked.
    static func checkFree(_ address: ListenAddress, listener: String) throws {
        guard address.port != 0 else { return }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address.host, String(address.port), &hints, &found) == 0, let first = found else {
            throw ValidationError("the \(listener) cannot listen on \(address): the host is not an address of this machine")
        }
        defer { freeaddrinfo(first) }
        let descriptor = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        var one: Int32 = 1
        _ = setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if bind(descriptor, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 {
            let reason =
                switch errno {
                case EADDRINUSE: "the address is in use (another fleetward serve, or another program; choose another port)"
                case EACCES: "permission denied (ports below 1024 need privileges)"
                case EADDRNOTAVAIL: "the host is not an address of this machine"
                default: String(cString: strerror(errno))
                }
            throw ValidationError("the \(listener) cannot listen on \(address): \(reason)")
        }
    }

    /// Holds `DIR/serve.lock` for the life of the process. With SQLite a second `serve` on the
    /// same data directory is refused (two writers, two gateways polling one file); with
    /// PostgreSQL several nodes may share the directory's CA, so the lock is only taken as a hint.
    static func lock(_ directory: DataDirectory, sharedDatabase: Bool) throws {
        let path = directory.path + "/serve.lock"
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { return }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            if sharedDatabase { return }
            throw ValidationError(
                "another fleetward serve\(holder.isEmpty ? "" : " (pid \(holder))") is running on \(directory.path): "
                    + "with the embedded SQLite registry only one may (use --database postgres://… to run several)")
        }
        _ = ftruncate(descriptor, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { write(descriptor, $0, strlen($0)) }
        // Kept open (and locked) until the process exits.
    }
}

/// Whether certificates' CRL and OCSP pointers reach the management API `serve` runs.
enum RevocationPointerCheck {
    /// A one-line warning when `base` (the data directory's revocation URL) cannot be the API
    /// listening on `bound`: another port, or another specific address. A DNS name other than
    /// localhost may well be this host (or a proxy), so it is not second-guessed.
    static func warning(base: String?, bound: ListenAddress, directory: String) -> String? {
        guard let base, let url = URLComponents(string: base), let host = url.host?.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        else { return nil }
        let port = url.port ?? (url.scheme == "https" ? 443 : 80)
        let loopback: Set<String> = ["127.0.0.1", "::1", "localhost"]
        let unspecified: Set<String> = ["0.0.0.0", "::"]
        let isAddress = host.allSatisfy { $0.isHexDigit || $0 == "." || $0 == ":" } || host == "localhost"
        var differs = port != bound.port
        if !differs, isAddress, !unspecified.contains(bound.host) {
            differs = host != bound.host && !(loopback.contains(host) && loopback.contains(bound.host))
        }
        guard differs else { return nil }
        return "issued certificates point relying parties to \(base) for CRLs and OCSP, but the management API listens on "
            + "\(bound): set the URL they reach it by with 'fleetward ca revocation-url --data \(directory) URL' (or serve the API there)"
    }
}
