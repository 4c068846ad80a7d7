import FleetwardAuthority
import FleetwardMQTT
import FleetwardRegistry
import Foundation
import Testing

@Suite struct MQTTPoliciesTests {
    @Test func aPolicyIsStoredInOneNormalForm() throws {
        let record = try MQTTPolicies.make(
            scope: "model:cam-2",
            document: Array(
                #"{ "statements": [ {"topics": ["fleet/${device.id}/#"], "actions": ["publish"], "effect": "allow"}, {"effect": "allow", "actions": ["connect"]} ] }"#
                    .utf8))
        #expect(record.scope == .model("cam-2"))
        #expect(
            record.document
                == #"{"statements":[{"actions":["publish"],"effect":"allow","topics":["fleet/${device.id}/#"]},{"actions":["connect"],"effect":"allow","topics":[]}]}"#)
        #expect(try MQTTPolicies.parse(Array(record.document.utf8)).statements.count == 2)
    }

    @Test(arguments: [
        ("model:cam", "not json", "not JSON"),
        ("model:cam", "[1]", "not a JSON object"),
        ("model:cam", #"{"statements": [], "extra": 1}"#, "unknown field 'extra'"),
        ("model:cam", #"{"statements": [{"Effect": "allow", "actions": ["connect"]}]}"#, "unknown field 'Effect'"),
        ("model:cam", #"{"statements": []}"#, "1 to 100 statements"),
        ("model:cam", #"{"statements": [{"effect": "maybe", "actions": ["connect"]}]}"#, "is not valid"),
        ("model:cam", #"{"statements": [{"effect": "allow", "actions": ["publish"]}]}"#, "needs topics"),
        ("model:cam", #"{"statements": [{"effect": "allow", "actions": ["publish"], "topics": ["a/#/b"]}]}"#, "not a topic filter"),
        ("model:cam", #"{"statements": [{"effect": "allow", "actions": ["publish"], "topics": ["${device.secret}/x"]}]}"#, "unknown variable"),
        ("cam", #"{"statements": [{"effect": "allow", "actions": ["connect"]}]}"#, "model:NAME or group:ID"),
        ("owner:alice", #"{"statements": [{"effect": "allow", "actions": ["connect"]}]}"#, "model:NAME or group:ID"),
        ("model:a/b", #"{"statements": [{"effect": "allow", "actions": ["connect"]}]}"#, "model:NAME or group:ID"),
    ])
    func badPoliciesAreRefusedNamingTheFault(_ scope: String, _ document: String, _ expected: String) {
        do {
            _ = try MQTTPolicies.make(scope: scope, document: Array(document.utf8))
            Issue.record("accepted \(document) for \(scope)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    @Test func anOversizedDocumentIsRefusedBeforeItIsParsed() {
        let huge = Array(#"{"statements": ["#.utf8) + Array(repeating: UInt8(ascii: " "), count: MQTTPolicies.maximumDocumentSize) + Array("]}".utf8)
        #expect(throws: AuthorityError.self) { try MQTTPolicies.make(scope: "model:cam", document: huge) }
    }
}
