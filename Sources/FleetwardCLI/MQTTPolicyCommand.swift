import ArgumentParser
import FleetwardAuthority
import FleetwardMQTT
import FleetwardRegistry
import Foundation

/// `fleetward mqtt-policy set|show|list|delete`: the MQTT policies of device models and
/// enrollment groups (the same records as `/api/v1/mqtt/policies`).
struct MQTTPolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt-policy",
        abstract: "Set, show, list and delete the MQTT policies of device models and enrollment groups.",
        discussion: """
            A device's MQTT session is checked against its enrollment group's policy, else its \
            model's, else the standard policy (publish, subscribe and receive under \
            devices/${device.id}/# but no publishing on devices/${device.id}/updates, subscribe and receive under models/${device.model}/#). A change \
            re-checks the live sessions it applies to, on every node, within a second. Scopes are \
            model:NAME or group:ID.
            """,
        subcommands: [Set.self, Show.self, List.self, Delete.self]
    )

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store the policy in a JSON file for a model or group (replacing its previous one); audited.")

        @OptionGroup var dataOptions: DataOptions
        @Argument(help: ArgumentHelp("model:NAME or group:ID.", valueName: "scope")) var scope: String
        @Argument(help: ArgumentHelp("The policy: {\"statements\": [{\"effect\", \"actions\", \"topics\"}…]}; - for stdin.", valueName: "file"))
        var file: String

        func run() async throws {
            let bytes: [UInt8]
            if file == "-" {
                bytes = Array(FileHandle.standardInput.readDataToEndOfFile().prefix(MQTTPolicies.maximumDocumentSize + 1))
            } else {
                guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
                bytes = Array(data)
            }
            let record = try MQTTPolicies.make(scope: scope, document: bytes)
            let (registrar, _) = try await dataOptions.openRegistrar()
            try await registrar.setMQTTPolicy(record, by: .console, at: Date())
            print("MQTT policy for \(record.scope) set; live sessions it applies to are re-checked within a second.")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the policy of a model or group as JSON.")

        @OptionGroup var dataOptions: DataOptions
        @Argument(help: ArgumentHelp("model:NAME or group:ID.", valueName: "scope")) var scope: String

        func run() async throws {
            let parsed = try MQTTPolicyScope(parsing: scope)
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            guard let record = try await store.mqttPolicy(parsed) else {
                throw ValidationError("no MQTT policy for \(parsed) (its devices get the next one that applies, or the standard policy)")
            }
            print(record.document)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the stored policies by scope.")

        @OptionGroup var dataOptions: DataOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let store = try await RegistryAccess.openStore(dataOptions.directory, databaseURL: dataOptions.databaseURL)
            let records = try await store.mqttPolicies()
            if output.json {
                struct Row: Encodable {
                    var scope: String
                    var statements: Int
                    var updatedAt: Date
                }
                return try Output.printJSON(
                    try records.map {
                        Row(scope: $0.scope.description, statements: try MQTTPolicies.parse(Array($0.document.utf8)).statements.count, updatedAt: $0.updatedAt)
                    })
            }
            guard !records.isEmpty else {
                print("No MQTT policies stored: every device gets the standard policy.")
                return
            }
            let format = ISO8601DateFormatter()
            print("SCOPE\tSTATEMENTS\tUPDATED")
            for record in records {
                let count = (try? MQTTPolicies.parse(Array(record.document.utf8)).statements.count).map(String.init) ?? "?"
                print("\(record.scope)\t\(count)\t\(format.string(from: record.updatedAt))")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove the policy of a model or group; audited.")

        @OptionGroup var dataOptions: DataOptions
        @Argument(help: ArgumentHelp("model:NAME or group:ID.", valueName: "scope")) var scope: String

        func run() async throws {
            let parsed = try MQTTPolicyScope(parsing: scope)
            let (registrar, _) = try await dataOptions.openRegistrar()
            try await registrar.deleteMQTTPolicy(parsed, by: .console, at: Date())
            print("MQTT policy for \(parsed) removed.")
        }
    }
}
