/// One device's MQTT session through Fleetward, as events and actions: the device's packets are
/// checked against its identity and policy and passed to the broker; the broker's are checked
/// (`receive`) and passed back. No I/O here: the handler that owns the two connections carries
/// out each ``Action``.
///
/// What it enforces:
/// - CONNECT first and once; the client identifier is the device ID (empty means "assign it");
///   the user name becomes the device ID and the password is dropped (or replaced by the front
///   door's own broker password); a will topic must be one the
///   device may publish to; enhanced authentication (v5 AUTH) is refused.
/// - PUBLISH topics are names without wildcards, v5 topic aliases resolved before the check;
///   refused ones get PUBACK/PUBREC 0x87 (v5; QoS 0 is dropped) or end a 3.1.1 session.
/// - SUBSCRIBE is checked per filter: the allowed ones go to the broker, the refused ones get
///   0x87 (v5) or 0x80 (3.1.1) in the SUBACK, merged in order.
/// - The broker's PUBLISH is checked for `receive`; a refused one is acknowledged to the broker
///   and never reaches the device.
public struct MQTTSessionStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        /// Look up the device's facts and policy, then call ``prepared(_:subject:)``.
        case prepare(deviceID: String)
        /// Open the broker connection and send it this CONNECT.
        case connectBroker(MQTTFrame)
        case sendToDevice(MQTTFrame)
        case sendToBroker(MQTTFrame)
        /// Send this (a DISCONNECT or a refusing CONNACK; nil: nothing) and close both legs.
        case close(MQTTFrame?, reason: String)
        /// The device's keep-alive, in milliseconds, once the session is open (0: none).
        case startKeepAlive(milliseconds: Int64)
    }

    enum State: Sendable {
        case awaitingConnect
        case preparing(MQTTConnect)
        case connectingBroker(MQTTConnect, assigned: Bool)
        case open
        case closed
    }

    public let deviceID: String
    /// What the broker gets as password with every session (the front door's, never the device's).
    let brokerPassword: [UInt8]?
    private(set) var state = State.awaitingConnect
    public private(set) var version = MQTTVersion.v5
    private var policy = CompiledTopicPolicy()
    /// Topic aliases the device set (v5), by alias.
    private var deviceAliases: [UInt16: String] = [:]
    /// Topic aliases the broker set (it should set none: the CONNECT it gets allows none).
    private var brokerAliases: [UInt16: String] = [:]
    /// SUBSCRIBEs forwarded with some filters refused: the full answer per packet identifier.
    private var pendingSubscriptions: [UInt16: (codes: [UInt8?], filters: [TopicFilter])] = [:]
    /// QoS 2 messages from the broker that were refused: their PUBREL is answered here.
    private var refusedFromBroker: Set<UInt16> = []
    /// Filters the broker granted, so a policy change can check them.
    public private(set) var subscriptions: Set<TopicFilter> = []

    /// - Parameter brokerPassword: sent to the broker with the device ID as user name (nil: none).
    public init(deviceID: String, brokerPassword: [UInt8]? = nil) {
        self.deviceID = deviceID
        self.brokerPassword = brokerPassword
    }

    public var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    // MARK: From the device

    public mutating func receivedFromDevice(_ frame: MQTTFrame) -> [Action] {
        switch state {
        case .awaitingConnect:
            return connect(frame)
        case .preparing, .connectingBroker:
            // Nothing may follow CONNECT before CONNACK (§3.1.4: the server may queue; Fleetward does not).
            return [close(.protocolError, "a \(frame.type) before the CONNACK")]
        case .closed:
            return []
        case .open:
            return fromDeviceWhileOpen(frame)
        }
    }

    private mutating func connect(_ frame: MQTTFrame) -> [Action] {
        guard frame.type == .connect else {
            state = .closed
            return [.close(nil, reason: "the first packet was \(frame.type), not CONNECT")]
        }
        let connect: MQTTConnect
        do {
            connect = try MQTTConnect(frame)
        } catch let error as MQTTError {
            state = .closed
            let level = MQTTConnect.requestedLevel(frame)
            let version: MQTTVersion = level == 5 ? .v5 : .v3_1_1
            // A CONNACK only to a client speaking some MQTT (§3.1.4: otherwise just close).
            let answer = level.map { _ in MQTTConnAck.refusal(error, version: version).frame(version: version) }
            return [.close(answer, reason: error.message)]
        } catch {
            state = .closed
            return [.close(nil, reason: "\(error)")]
        }
        version = connect.version
        if connect.properties[MQTTProperties.authenticationMethod] != nil {
            return [refuse(MQTTError(.badAuthenticationMethod, "enhanced authentication is not supported: the certificate is the identity"))]
        }
        guard connect.clientID.isEmpty || connect.clientID == deviceID else {
            return [refuse(MQTTError(.clientIdentifierNotValid, "client identifier '\(connect.clientID.prefix(64))' is not this device's ID"))]
        }
        state = .preparing(connect)
        return [.prepare(deviceID: deviceID)]
    }

    /// The device's facts and policy are known: check them and connect the broker.
    public mutating func prepared(_ policy: TopicPolicy, subject: TopicPolicy.Subject) -> [Action] {
        guard case .preparing(var connect) = state else { return [] }
        self.policy = policy.compile(for: subject)
        guard self.policy.allowsConnect else {
            return [refuse(MQTTError(.notAuthorized, "the device's policy does not allow it to connect"))]
        }
        if let will = connect.will {
            guard TopicFilter.isValidTopicName(will.topic), self.policy.allows(.publish, topic: will.topic) else {
                return [refuse(MQTTError(.notAuthorized, "the will topic is not one this device may publish to"))]
            }
        }
        let assigned = connect.clientID.isEmpty
        connect.clientID = deviceID
        connect.username = deviceID
        connect.password = brokerPassword
        // The broker is not allowed topic aliases toward the device, so every topic it sends is
        // spelled out and checked.
        connect.properties.remove(MQTTProperties.topicAliasMaximum)
        state = .connectingBroker(connect, assigned: assigned)
        return [.connectBroker(connect.frame)]
    }

    /// The device's facts could not be read (the registry is down): refuse as unavailable.
    public mutating func preparationFailed(_ reason: String) -> [Action] {
        guard case .preparing = state else { return [] }
        return [refuse(MQTTError(.serverUnavailable, reason))]
    }

    private mutating func refuse(_ error: MQTTError) -> Action {
        state = .closed
        return .close(MQTTConnAck.refusal(error, version: version).frame(version: version), reason: error.message)
    }

    private mutating func fromDeviceWhileOpen(_ frame: MQTTFrame) -> [Action] {
        do {
            switch frame.type {
            case .publish: return try publishFromDevice(frame)
            case .subscribe: return try subscribe(frame)
            case .unsubscribe:
                return [.sendToBroker(frame)]
            case .connect: return [close(.protocolError, "a second CONNECT")]
            case .auth: return [close(.protocolError, "AUTH without enhanced authentication")]
            case .disconnect:
                state = .closed
                return [.sendToBroker(frame), .close(nil, reason: "the device disconnected")]
            case .puback, .pubrec, .pubrel, .pubcomp, .pingreq:
                return [.sendToBroker(frame)]
            case .connack, .suback, .unsuback, .pingresp:
                return [close(.protocolError, "a \(frame.type) from a client")]
            }
        } catch let error as MQTTError {
            return [close(error.code, error.message)]
        } catch {
            return [close(.malformedPacket, "\(error)")]
        }
    }

    private mutating func publishFromDevice(_ frame: MQTTFrame) throws -> [Action] {
        let publish = try MQTTPublish(frame, version: version)
        var topic = publish.topic
        if let alias = publish.properties.topicAlias {
            guard alias > 0 else { throw MQTTError(.topicAliasInvalid, "topic alias 0") }
            if topic.isEmpty {
                guard let known = deviceAliases[alias] else { throw MQTTError(.topicAliasInvalid, "topic alias \(alias) was never set") }
                topic = known
            } else {
                deviceAliases[alias] = topic
            }
        }
        guard TopicFilter.isValidTopicName(topic) else {
            throw MQTTError(.topicNameInvalid, "PUBLISH to '\(topic.prefix(100))': a topic name has no wildcard and is not empty")
        }
        guard policy.allows(.publish, topic: topic) else {
            guard version == .v5 else { return [close(.notAuthorized, "a PUBLISH to '\(topic.prefix(100))', outside the device's policy")] }
            switch (publish.qos, publish.packetID) {
            case (1, let id?): return [.sendToDevice(MQTTAck(.puback, packetID: id, code: MQTTError.Code.notAuthorized.reasonCode).frame(version: version))]
            case (2, let id?): return [.sendToDevice(MQTTAck(.pubrec, packetID: id, code: MQTTError.Code.notAuthorized.reasonCode).frame(version: version))]
            default: return []
            }
        }
        return [.sendToBroker(frame)]
    }

    private mutating func subscribe(_ frame: MQTTFrame) throws -> [Action] {
        var subscribe = try MQTTSubscribe(frame, version: version)
        var codes: [UInt8?] = []
        var allowed: [(filter: String, options: UInt8)] = []
        var allowedFilters: [TopicFilter] = []
        for (text, options) in subscribe.filters {
            guard let filter = TopicFilter(text) else {
                guard version == .v5 else { throw MQTTError(.malformedPacket, "'\(text.prefix(100))' is not a topic filter") }
                codes.append(MQTTError.Code.topicFilterInvalid.reasonCode)
                continue
            }
            if policy.allowsSubscription(filter) {
                codes.append(nil)
                allowed.append((text, options))
                allowedFilters.append(filter)
            } else {
                codes.append(MQTTSubAck.refused(version))
            }
        }
        if allowed.isEmpty {
            return [.sendToDevice(MQTTSubAck(packetID: subscribe.packetID, codes: codes.map { $0 ?? 0 }).frame(version: version))]
        }
        pendingSubscriptions[subscribe.packetID] = (codes, allowedFilters)
        if allowed.count == subscribe.filters.count { return [.sendToBroker(frame)] }
        subscribe.filters = allowed
        return [.sendToBroker(subscribe.frame(version: version))]
    }

    // MARK: From the broker

    public mutating func receivedFromBroker(_ frame: MQTTFrame) -> [Action] {
        switch state {
        case .connectingBroker(let connect, let assigned):
            guard frame.type == .connack, let answer = try? MQTTConnAck(frame, version: version) else {
                state = .closed
                return [.close(MQTTConnAck.refusal(MQTTError(.serverUnavailable, ""), version: version).frame(version: version), reason: "the broker answered CONNECT with \(frame.type)")]
            }
            var relayed = answer
            if assigned, version == .v5 { relayed.properties.set(MQTTProperties.assignedClientIdentifier, .string(deviceID)) }
            guard answer.code == 0 else {
                state = .closed
                return [.close(relayed.frame(version: version), reason: "the broker refused the session (code \(answer.code))")]
            }
            state = .open
            // The broker may set the interval (v5 Server Keep Alive); the device is held to 1.5 × it.
            var keepAlive = connect.keepAlive
            if case .twoBytes(let server)? = answer.properties[0x13] { keepAlive = server }
            let milliseconds = Int64(keepAlive) * 1500
            return [.sendToDevice(relayed.frame(version: version))] + (milliseconds > 0 ? [.startKeepAlive(milliseconds: milliseconds)] : [])
        case .open:
            do {
                return try fromBrokerWhileOpen(frame)
            } catch let error as MQTTError {
                return [close(error.code, "the broker sent \(error.message)")]
            } catch {
                return [close(.unspecified, "the broker sent \(error)")]
            }
        default:
            return []
        }
    }

    private mutating func fromBrokerWhileOpen(_ frame: MQTTFrame) throws -> [Action] {
        switch frame.type {
        case .publish:
            let publish = try MQTTPublish(frame, version: version)
            var topic = publish.topic
            if let alias = publish.properties.topicAlias {
                if topic.isEmpty { topic = brokerAliases[alias] ?? "" } else { brokerAliases[alias] = topic }
            }
            guard policy.allows(.receive, topic: topic) else {
                switch (publish.qos, publish.packetID) {
                case (1, let id?): return [.sendToBroker(MQTTAck(.puback, packetID: id).frame(version: version))]
                case (2, let id?):
                    refusedFromBroker.insert(id)
                    return [.sendToBroker(MQTTAck(.pubrec, packetID: id).frame(version: version))]
                default: return []
                }
            }
            return [.sendToDevice(frame)]
        case .pubrel:
            let ack = try MQTTAck(frame)
            if refusedFromBroker.remove(ack.packetID) != nil {
                return [.sendToBroker(MQTTAck(.pubcomp, packetID: ack.packetID).frame(version: version))]
            }
            return [.sendToDevice(frame)]
        case .suback:
            var answer = try MQTTSubAck(frame, version: version)
            guard let pending = pendingSubscriptions.removeValue(forKey: answer.packetID) else { return [.sendToDevice(frame)] }
            var granted = answer.codes.makeIterator()
            var filters = pending.filters.makeIterator()
            var merged: [UInt8] = []
            for code in pending.codes {
                if let code {
                    merged.append(code)
                } else {
                    let brokerCode = granted.next() ?? 0x80
                    if brokerCode < 0x80, let filter = filters.next() { subscriptions.insert(filter) } else { _ = filters.next() }
                    merged.append(brokerCode)
                }
            }
            answer.codes = merged
            return [.sendToDevice(answer.frame(version: version))]
        case .disconnect:
            state = .closed
            return [.close(frame, reason: "the broker disconnected the session")]
        case .connect, .subscribe, .unsubscribe, .pingreq, .auth:
            return [close(.protocolError, "a \(frame.type) from the broker")]
        default:
            return [.sendToDevice(frame)]
        }
    }

    /// The broker connection ended or could not be made.
    public mutating func brokerClosed() -> [Action] {
        switch state {
        case .closed: return []
        case .connectingBroker, .preparing:
            return [refuse(MQTTError(.serverUnavailable, "the broker is unreachable"))]
        default:
            return [close(.serverUnavailable, "the broker closed the session")]
        }
    }

    // MARK: Ending

    /// Ends the session with `code` (a DISCONNECT for a v5 session that is open).
    public mutating func close(_ code: MQTTError.Code, _ reason: String) -> Action {
        let wasOpen = isOpen
        state = .closed
        let disconnect = wasOpen || version == .v5 ? MQTTDisconnect.frame(code, reason: reason, version: version) : nil
        return .close(version == .v5 ? disconnect : nil, reason: reason)
    }

    /// The policy changed: whether the session may go on with the subscriptions it holds.
    public mutating func policyChanged(_ policy: TopicPolicy, subject: TopicPolicy.Subject) -> [Action] {
        let compiled = policy.compile(for: subject)
        self.policy = compiled
        guard compiled.allowsConnect else { return [close(.administrativeAction, "the device's policy no longer allows it to connect")] }
        if let lost = subscriptions.first(where: { !compiled.allowsSubscription($0) }) {
            return [close(.administrativeAction, "the device's policy no longer allows its subscription to \(lost)")]
        }
        return []
    }
}
