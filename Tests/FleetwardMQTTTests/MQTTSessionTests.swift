import FleetwardMQTT
import NIOCore
import Testing

/// Policies compiled for a device, and a session through the state machine: what reaches the
/// broker, what the device is told, what ends the session.
@Suite struct TopicPolicyTests {
    let subject = TopicPolicy.Subject(id: "D-1", owner: "alice", model: "cam", group: nil)

    @Test func theStandardPolicyKeepsADeviceUnderItsOwnTopics() {
        let policy = TopicPolicy.standard.compile(for: subject)
        #expect(policy.allowsConnect)
        #expect(policy.allows(.publish, topic: "devices/D-1/telemetry"))
        #expect(!policy.allows(.publish, topic: "devices/D-2/telemetry"))
        #expect(!policy.allows(.publish, topic: "models/cam/firmware"))
        #expect(policy.allows(.receive, topic: "models/cam/firmware"))
        #expect(policy.allowsSubscription(TopicFilter("devices/D-1/commands/#")!))
        #expect(policy.allowsSubscription(TopicFilter("models/cam/+")!))
        #expect(!policy.allowsSubscription(TopicFilter("devices/+/commands")!))
        #expect(!policy.allowsSubscription(TopicFilter("#")!))
    }

    @Test func aValueCannotChangeAFiltersShape() {
        // A model "cam/+" would turn models/${device.model}/# into models/cam/+/#: the topic is dropped.
        let sneaky = TopicPolicy.standard.compile(for: TopicPolicy.Subject(id: "D-1", owner: nil, model: "cam/+", group: nil))
        #expect(!sneaky.allowsSubscription(TopicFilter("models/cam/x/#")!))
        #expect(!sneaky.allows(.receive, topic: "models/cam/x/y"))
        #expect(sneaky.allows(.publish, topic: "devices/D-1/t"), "the rest of the policy still applies")
    }

    @Test func denyWinsAndMissingValuesMatchNothing() throws {
        let policy = TopicPolicy(statements: [
            .init(effect: .allow, actions: [.connect]),
            .init(effect: .allow, actions: [.publish, .subscribe], topics: ["owners/${device.owner}/#", "groups/${device.group}/#"]),
            .init(effect: .deny, actions: [.publish, .subscribe], topics: ["owners/+/secret"]),
        ])
        try policy.validate()
        let compiled = policy.compile(for: subject)
        #expect(compiled.allows(.publish, topic: "owners/alice/x"))
        #expect(!compiled.allows(.publish, topic: "owners/alice/secret"))
        #expect(!compiled.allowsSubscription(TopicFilter("owners/alice/#")!), "the subscription overlaps a denied filter")
        #expect(!compiled.allows(.publish, topic: "groups//x"), "no group: its topics allow nothing")
        #expect(throws: MQTTError(.topicFilterInvalid, "")) {
            try TopicPolicy(statements: [.init(effect: .allow, actions: [.publish], topics: ["a/${device.serial}"])]).validate()
        }
        #expect(throws: MQTTError(.topicFilterInvalid, "")) {
            try TopicPolicy(statements: [.init(effect: .allow, actions: [.publish])]).validate()
        }
    }
}

@Suite struct MQTTSessionStateMachineTests {
    let subject = TopicPolicy.Subject(id: "D-1", owner: nil, model: "cam", group: nil)

    /// A machine past CONNECT and CONNACK for `version`.
    func open(_ version: MQTTVersion, clientID: String = "D-1") -> MQTTSessionStateMachine {
        var machine = MQTTSessionStateMachine(deviceID: "D-1")
        _ = machine.receivedFromDevice(MQTTConnect(version: version, clientID: clientID).frame)
        _ = machine.prepared(.standard, subject: subject)
        _ = machine.receivedFromBroker(MQTTConnAck(code: 0).frame(version: version))
        #expect(machine.isOpen)
        return machine
    }

    @Test func connectIsRewrittenForTheBroker() throws {
        var machine = MQTTSessionStateMachine(deviceID: "D-1")
        let connect = MQTTConnect(
            version: .v5, clientID: "", properties: MQTTProperties([(MQTTProperties.topicAliasMaximum, .twoBytes(10))]),
            username: "admin", password: Array("hunter2".utf8))
        #expect(machine.receivedFromDevice(connect.frame) == [.prepare(deviceID: "D-1")])
        guard case .connectBroker(let frame)? = machine.prepared(.standard, subject: subject).first else {
            Issue.record("no broker connect")
            return
        }
        let forwarded = try MQTTConnect(frame)
        #expect(forwarded.clientID == "D-1" && forwarded.username == "D-1" && forwarded.password == nil)
        #expect(forwarded.properties[MQTTProperties.topicAliasMaximum] == nil, "the broker may not alias topics toward the device")
        // The CONNACK tells the device the identifier it was assigned.
        guard case .sendToDevice(let answer)? = machine.receivedFromBroker(MQTTConnAck(code: 0).frame(version: .v5)).first else {
            Issue.record("no CONNACK")
            return
        }
        #expect(try MQTTConnAck(answer, version: .v5).properties[MQTTProperties.assignedClientIdentifier] == .string("D-1"))
    }

    @Test func anotherDevicesClientIDIsRefusedInTheClientsVersion() throws {
        for (version, code) in [(MQTTVersion.v5, UInt8(0x85)), (.v3_1_1, 0x02)] {
            var machine = MQTTSessionStateMachine(deviceID: "D-1")
            let actions = machine.receivedFromDevice(MQTTConnect(version: version, clientID: "D-2").frame)
            guard case .close(let frame?, _)? = actions.first else {
                Issue.record("not refused: \(actions)")
                continue
            }
            #expect(try MQTTConnAck(frame, version: version).code == code)
        }
    }

    @Test func aWillOutsideThePolicyIsRefused() throws {
        var machine = MQTTSessionStateMachine(deviceID: "D-1")
        let connect = MQTTConnect(
            version: .v5, clientID: "D-1", will: MQTTConnect.Will(topic: "devices/D-2/status", payload: [], qos: 0, retain: false))
        _ = machine.receivedFromDevice(connect.frame)
        guard case .close(let frame?, _)? = machine.prepared(.standard, subject: subject).first else {
            Issue.record("not refused")
            return
        }
        #expect(try MQTTConnAck(frame, version: .v5).code == 0x87)
    }

    @Test func publishesArePassedOrRefusedByPolicy() {
        var machine = open(.v5)
        let allowed = MQTTPublish.frame(topic: "devices/D-1/t", payload: [1], qos: 1, packetID: 3, version: .v5)
        #expect(machine.receivedFromDevice(allowed) == [.sendToBroker(allowed)])
        let refused = MQTTPublish.frame(topic: "devices/D-2/t", payload: [1], qos: 1, packetID: 4, version: .v5)
        #expect(machine.receivedFromDevice(refused) == [.sendToDevice(MQTTAck(.puback, packetID: 4, code: 0x87).frame(version: .v5))])
        // A topic alias set on an allowed topic is resolved for later messages.
        let aliased = MQTTPublish.frame(
            topic: "devices/D-1/t", payload: [], version: .v5, properties: MQTTProperties([(MQTTProperties.topicAlias, .twoBytes(1))]))
        #expect(machine.receivedFromDevice(aliased) == [.sendToBroker(aliased)])
        let byAlias = MQTTPublish.frame(topic: "", payload: [], version: .v5, properties: MQTTProperties([(MQTTProperties.topicAlias, .twoBytes(1))]))
        #expect(machine.receivedFromDevice(byAlias) == [.sendToBroker(byAlias)])
        // A wildcard in a topic name ends the session (topic name invalid).
        guard case .close(let disconnect?, _)? = machine.receivedFromDevice(MQTTPublish.frame(topic: "devices/+/t", payload: [], version: .v5)).first else {
            Issue.record("not closed")
            return
        }
        #expect(MQTTDisconnect.reasonCode(of: disconnect) == 0x90)
        // In 3.1.1 a refused publish ends the session (no reason codes to say it).
        var old = open(.v3_1_1)
        guard case .close? = old.receivedFromDevice(refused).first else {
            Issue.record("3.1.1 publish outside the policy kept the session")
            return
        }
    }

    @Test func refusedFiltersAreAnsweredInPlaceAndTheRestGoToTheBroker() throws {
        var machine = open(.v5)
        let subscribe = MQTTSubscribe(packetID: 5, filters: [("devices/D-2/#", 1), ("devices/D-1/cmd/#", 1), ("a/#/b", 0), ("models/cam/#", 0)])
        let actions = machine.receivedFromDevice(subscribe.frame(version: .v5))
        guard case .sendToBroker(let forwarded)? = actions.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(try MQTTSubscribe(forwarded, version: .v5).filters.map(\.filter) == ["devices/D-1/cmd/#", "models/cam/#"])
        guard case .sendToDevice(let merged)? = machine.receivedFromBroker(MQTTSubAck(packetID: 5, codes: [1, 0]).frame(version: .v5)).first
        else {
            Issue.record("no SUBACK")
            return
        }
        #expect(try MQTTSubAck(merged, version: .v5).codes == [0x87, 1, 0x8F, 0])
        #expect(machine.subscriptions == [TopicFilter("devices/D-1/cmd/#")!, TopicFilter("models/cam/#")!])
        // Nothing allowed: answered without the broker.
        let none = MQTTSubscribe(packetID: 6, filters: [("#", 0)])
        #expect(machine.receivedFromDevice(none.frame(version: .v5)) == [.sendToDevice(MQTTSubAck(packetID: 6, codes: [0x87]).frame(version: .v5))])
    }

    @Test func theBrokersMessagesOutsideThePolicyAreAcknowledgedAndDropped() {
        var machine = open(.v5)
        let outside = MQTTPublish.frame(topic: "devices/D-2/x", payload: [9], qos: 2, packetID: 11, version: .v5)
        #expect(machine.receivedFromBroker(outside) == [.sendToBroker(MQTTAck(.pubrec, packetID: 11).frame(version: .v5))])
        let release = MQTTAck(.pubrel, packetID: 11).frame(version: .v5)
        #expect(machine.receivedFromBroker(release) == [.sendToBroker(MQTTAck(.pubcomp, packetID: 11).frame(version: .v5))])
        let inside = MQTTPublish.frame(topic: "models/cam/fw", payload: [9], qos: 1, packetID: 12, version: .v5)
        #expect(machine.receivedFromBroker(inside) == [.sendToDevice(inside)])
    }

    @Test func protocolViolationsEndTheSession() {
        for frame in [MQTTConnect(version: .v5, clientID: "D-1").frame, MQTTFrame(type: .auth), MQTTFrame(type: .suback, body: ByteBuffer(bytes: [0, 1, 0, 0]))] {
            var machine = open(.v5)
            guard case .close(let disconnect?, _)? = machine.receivedFromDevice(frame).first else {
                Issue.record("\(frame.type) kept the session")
                continue
            }
            #expect(MQTTDisconnect.reasonCode(of: disconnect) == 0x82, "\(frame.type)")
        }
        var fresh = MQTTSessionStateMachine(deviceID: "D-1")
        guard case .close(nil, _)? = fresh.receivedFromDevice(MQTTFrame(type: .pingreq)).first else {
            Issue.record("a packet before CONNECT was not refused")
            return
        }
    }

    @Test func aPolicyChangeEndsASessionWhoseSubscriptionItNoLongerAllows() {
        var machine = open(.v5)
        _ = machine.receivedFromDevice(MQTTSubscribe(packetID: 1, filters: [("models/cam/#", 0)]).frame(version: .v5))
        _ = machine.receivedFromBroker(MQTTSubAck(packetID: 1, codes: [0]).frame(version: .v5))
        let stricter = TopicPolicy(statements: [
            .init(effect: .allow, actions: [.connect]), .init(effect: .allow, actions: [.publish, .subscribe, .receive], topics: ["devices/${device.id}/#"]),
        ])
        guard case .close(let disconnect?, _)? = machine.policyChanged(stricter, subject: subject).first else {
            Issue.record("kept a subscription the policy no longer allows")
            return
        }
        #expect(MQTTDisconnect.reasonCode(of: disconnect) == 0x98)
        var unaffected = open(.v5)
        #expect(unaffected.policyChanged(stricter, subject: subject).isEmpty)
    }
}
