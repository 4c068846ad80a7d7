import ArgumentParser
import FleetwardAuthority

/// `fleetward ca …`: the CA hierarchy.
struct CACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Look at the CA hierarchy.",
        subcommands: [Show.self]
    )

    /// `fleetward ca show`: each CA's subject, key type, expiry and fingerprint.
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the hierarchy: subjects, key types, expiry and SHA-256 fingerprints (no passphrase needed)."
        )

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let report = try HierarchyReport(hierarchy: try CAHierarchy.load(from: dataOptions.directory))
            if output.json {
                try Output.printJSON(report)
            } else {
                print(report.text)
            }
        }
    }
}
