import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A secret typed on the controlling terminal with echo off (a passphrase, a token's PIN): never
/// on a command line, never in the environment of other processes.
public enum TerminalPrompt {
    /// Shows `text` on /dev/tty and reads one line without echo; nil when there is no terminal.
    public static func readSecret(_ text: String) -> [UInt8]? {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var original = termios()
        let hasTerminal = tcgetattr(fd, &original) == 0
        if hasTerminal {
            var silent = original
            silent.c_lflag &= ~tcflag_t(ECHO)
            silent.c_lflag |= tcflag_t(ECHONL)
            // TCSANOW, not TCSAFLUSH: flushing would drop a secret typed or pasted ahead of the prompt.
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
        return line
    }
}
