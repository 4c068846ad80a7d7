import FleetwardKeyCustody
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Where the passphrase comes from: `FLEETWARD_PASSPHRASE`, else a prompt on the terminal with echo off.
enum PassphraseSource {
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads the passphrase; when `confirm`, a prompt asks twice and the answers must match.
    static func read(purpose: String, confirm: Bool) throws -> Passphrase {
        if let value = ProcessInfo.processInfo.environment["FLEETWARD_PASSPHRASE"] {
            guard !value.isEmpty else {
                throw Unavailable(description: "FLEETWARD_PASSPHRASE is set but empty")
            }
            return Passphrase(value)
        }
        let first = try prompt("Passphrase \(purpose): ")
        if confirm {
            let second = try prompt("Repeat the passphrase: ")
            guard first.bytes == second.bytes else {
                throw Unavailable(description: "the two passphrases differ")
            }
        }
        return first
    }

    private static func prompt(_ text: String) throws -> Passphrase {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw Unavailable(description: "no passphrase: set FLEETWARD_PASSPHRASE or run on a terminal")
        }
        defer { close(fd) }
        var original = termios()
        let hasTerminal = tcgetattr(fd, &original) == 0
        if hasTerminal {
            var silent = original
            silent.c_lflag &= ~tcflag_t(ECHO)
            silent.c_lflag |= tcflag_t(ECHONL)
            // TCSANOW, not TCSAFLUSH: flushing would drop a passphrase typed or pasted ahead of the prompt.
            tcsetattr(fd, TCSANOW, &silent)
        }
        defer { if hasTerminal { tcsetattr(fd, TCSANOW, &original) } }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 4096 {
            let count = Glibc.read(fd, &byte, 1)
            if count < 0, errno == EINTR { continue }
            if count <= 0 || byte == 0x0A { break }
            line.append(byte)
        }
        return Passphrase(String(decoding: line, as: UTF8.self))
    }
}
