import Foundation

/// The built `fleetward` executable, found beside the test bundle (SwiftPM puts every product of
/// a build in one directory) or at `$FLEETWARD_BIN`.
public enum FleetwardBinary {
    public static func tool(named name: String = "fleetward") throws -> Tool {
        if name == "fleetward", let explicit = ProcessInfo.processInfo.environment["FLEETWARD_BIN"] { return try Tool(explicit) }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return try Tool(candidate) }
            directory = directory.deletingLastPathComponent()
        }
        throw Tool.Missing(
            description:
                "the \(name) binary was not found beside \(CommandLine.arguments[0]); run 'swift build' first or set FLEETWARD_BIN")
    }
}
