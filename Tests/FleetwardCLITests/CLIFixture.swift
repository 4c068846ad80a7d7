import FleetwardTestSupport
import Foundation
import Testing

/// Runs the real `fleetward` binary and the real `openssl` against one shared data directory.
struct CLI {
    static let passphrase = "correct horse battery"

    let fleetward: Tool
    let openssl: Tool

    init() throws {
        fleetward = try FleetwardBinary.tool()
        openssl = try Tool.openssl()
    }

    @discardableResult
    func run(_ arguments: [String], passphrase: String? = CLI.passphrase, in directory: String? = nil) throws -> Tool.Result {
        if let passphrase {
            return try fleetward.run(
                arguments, environment: ["FLEETWARD_PASSPHRASE": passphrase], currentDirectory: directory, timeout: 120)
        }
        return try fleetward.run(arguments, removingEnvironment: ["FLEETWARD_PASSPHRASE"], currentDirectory: directory, timeout: 120)
    }

    /// `openssl …`, which must succeed.
    @discardableResult
    func openssl(_ arguments: [String]) throws -> Tool.Result {
        let result = try openssl.run(arguments)
        #expect(result.succeeded, "openssl \(arguments.joined(separator: " ")) failed: \(result.stderr)")
        return result
    }

    /// Asserts the run failed with exactly one `fleetward: error:` line on stderr containing `fragment`.
    func expectOneLineError(_ result: Tool.Result, containing fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status != 0, "expected failure, got success: \(result.stdout)", sourceLocation: sourceLocation)
        #expect(result.stderrLines.count == 1, "stderr was not one line: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("fleetward: error: "), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(fragment), "'\(fragment)' not in: \(result.stderr)", sourceLocation: sourceLocation)
    }
}

/// One data directory made with `fleetward init` and the default settings, shared by the suites
/// that only read it (issuing writes only to per-test output files).
enum SharedAuthority {
    static let directory: Result<TemporaryDirectory, any Error> = Result {
        let dir = try TemporaryDirectory(prefix: "fleetward-cli")
        let result = try CLI().run(["init", "--data", dir.file("data")])
        guard result.succeeded else {
            throw Tool.Missing(description: "fleetward init failed: \(result)")
        }
        return dir
    }

    static func get() throws -> TemporaryDirectory { try directory.get() }
}

/// A snapshot of every file's bytes under a directory, to prove a failed command changed nothing.
func snapshot(_ path: String) throws -> [String: Data] {
    var files: [String: Data] = [:]
    let enumerator = FileManager.default.enumerator(atPath: path)
    while let relative = enumerator?.nextObject() as? String {
        var isDirectory: ObjCBool = false
        let full = path + "/" + relative
        if FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue {
            files[relative] = try Data(contentsOf: URL(fileURLWithPath: full))
        }
    }
    return files
}
