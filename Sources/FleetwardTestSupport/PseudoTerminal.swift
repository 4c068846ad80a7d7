import Foundation

/// A program run on a pseudo-terminal (Python's pty), answered as a person would: each answer is
/// typed once its prompt has been shown (after the program turned echo off).
public enum PseudoTerminal {
    static let typist = """
        import json, os, pty, sys, time
        answers = json.loads(sys.argv[1])
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(sys.argv[2], sys.argv[2:])
        seen = b""
        def read_until(marker, limit=30):
            global seen
            deadline = time.time() + limit
            while marker not in seen and time.time() < deadline:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        for prompt, answer in answers:
            read_until(prompt.encode())
            os.write(fd, answer.encode() + b"\\n")
        read_until(b"\\0", 60)
        sys.stdout.write(seen.decode(errors="replace"))
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """

    /// Runs `executable arguments`; the result's stdout is everything the terminal showed.
    public static func run(
        _ executable: String, _ arguments: [String], answers: [(prompt: String, answer: String)], environment: [String: String] = [:],
        removingEnvironment: [String] = [], timeout: Double = 60
    ) throws -> Tool.Result {
        let json = try JSONSerialization.data(withJSONObject: answers.map { [$0.prompt, $0.answer] })
        return try Tool("python3").run(
            ["-c", typist, String(decoding: json, as: UTF8.self), executable] + arguments, environment: environment,
            removingEnvironment: removingEnvironment, timeout: timeout)
    }
}
