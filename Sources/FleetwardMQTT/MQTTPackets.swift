public import NIOCore

/// CONNECT (MQTT 3.1.1 §3.1, 5.0 §3.1), read whole and written again: Fleetward replaces the
/// client identifier, user name and password before the broker sees it.
public struct MQTTConnect: Sendable, Equatable {
    public struct Will: Sendable, Equatable {
        public var properties = MQTTProperties()
        public var topic: String
        public var payload: [UInt8]
        public var qos: UInt8
        public var retain: Bool

        public init(properties: MQTTProperties = MQTTProperties(), topic: String, payload: [UInt8], qos: UInt8, retain: Bool) {
            self.properties = properties
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
        }
    }

    public var version: MQTTVersion
    public var cleanStart: Bool
    public var keepAlive: UInt16
    public var properties = MQTTProperties()
    public var clientID: String
    public var will: Will?
    public var username: String?
    public var password: [UInt8]?

    public init(
        version: MQTTVersion, clientID: String, cleanStart: Bool = true, keepAlive: UInt16 = 60, properties: MQTTProperties = MQTTProperties(),
        will: Will? = nil, username: String? = nil, password: [UInt8]? = nil
    ) {
        self.version = version
        self.clientID = clientID
        self.cleanStart = cleanStart
        self.keepAlive = keepAlive
        self.properties = properties
        self.will = will
        self.username = username
        self.password = password
    }

    /// The protocol level a CONNECT asks for, read before the rest so the refusal can be written in
    /// the client's own version (nil: not MQTT at all).
    public static func requestedLevel(_ frame: MQTTFrame) -> UInt8? {
        var body = frame.body
        guard let name = try? body.readMQTTString(), name == "MQTT" || name == "MQIsdp" else { return nil }
        return body.readInteger()
    }

    public init(_ frame: MQTTFrame) throws {
        guard frame.type == .connect else { throw MQTTError(.protocolError, "the first packet must be CONNECT, not \(frame.type)") }
        var body = frame.body
        guard try body.readMQTTString() == "MQTT" else {
            throw MQTTError(.unsupportedProtocolVersion, "the protocol name is not MQTT (MQTT 3.1 is not supported)")
        }
        guard let version = MQTTVersion(rawValue: try body.readMQTT(UInt8.self)) else {
            throw MQTTError(.unsupportedProtocolVersion, "only MQTT 3.1.1 and 5.0 are supported")
        }
        self.version = version
        let flags = try body.readMQTT(UInt8.self)
        guard flags & 0x01 == 0 else { throw MQTTError(.malformedPacket, "the CONNECT flags' reserved bit is set") }
        cleanStart = flags & 0x02 != 0
        let hasWill = flags & 0x04 != 0
        let willQoS = (flags >> 3) & 0x03
        let willRetain = flags & 0x20 != 0
        let hasPassword = flags & 0x40 != 0
        let hasUsername = flags & 0x80 != 0
        guard willQoS < 3, hasWill || (willQoS == 0 && !willRetain) else {
            throw MQTTError(.malformedPacket, "will QoS or retain without a will")
        }
        if version == .v3_1_1, hasPassword, !hasUsername { throw MQTTError(.malformedPacket, "a password without a user name") }
        keepAlive = try body.readMQTT(UInt16.self)
        if version == .v5 { properties = try MQTTProperties.read(from: &body) }
        clientID = try body.readMQTTString()
        if hasWill {
            let willProperties = version == .v5 ? try MQTTProperties.read(from: &body) : MQTTProperties()
            will = Will(
                properties: willProperties, topic: try body.readMQTTString(), payload: try body.readMQTTBinary(), qos: willQoS,
                retain: willRetain)
        }
        username = hasUsername ? try body.readMQTTString() : nil
        password = hasPassword ? try body.readMQTTBinary() : nil
        guard body.readableBytes == 0 else { throw MQTTError(.malformedPacket, "bytes after the CONNECT payload") }
    }

    public var frame: MQTTFrame {
        var body = ByteBuffer()
        body.writeMQTTString("MQTT")
        body.writeInteger(version.rawValue)
        var flags: UInt8 = cleanStart ? 0x02 : 0
        if let will {
            flags |= 0x04 | will.qos << 3 | (will.retain ? 0x20 : 0)
        }
        if password != nil { flags |= 0x40 }
        if username != nil { flags |= 0x80 }
        body.writeInteger(flags)
        body.writeInteger(keepAlive)
        if version == .v5 { properties.write(to: &body) }
        body.writeMQTTString(clientID)
        if let will {
            if version == .v5 { will.properties.write(to: &body) }
            body.writeMQTTString(will.topic)
            body.writeMQTTBinary(will.payload)
        }
        if let username { body.writeMQTTString(username) }
        if let password { body.writeMQTTBinary(password) }
        return MQTTFrame(type: .connect, body: body)
    }
}

/// CONNACK: 3.1.1 return codes (0 accepted, 1 bad version, 2 identifier rejected, 3 server
/// unavailable, 4 bad user name or password, 5 not authorized) or a 5.0 reason code.
public struct MQTTConnAck: Sendable, Equatable {
    public var sessionPresent: Bool
    public var code: UInt8
    public var properties = MQTTProperties()

    public init(sessionPresent: Bool = false, code: UInt8, properties: MQTTProperties = MQTTProperties()) {
        self.sessionPresent = sessionPresent
        self.code = code
        self.properties = properties
    }

    public init(_ frame: MQTTFrame, version: MQTTVersion) throws {
        var body = frame.body
        sessionPresent = try body.readMQTT(UInt8.self) & 0x01 != 0
        code = try body.readMQTT(UInt8.self)
        if version == .v5, body.readableBytes > 0 { properties = try MQTTProperties.read(from: &body) }
    }

    public func frame(version: MQTTVersion) -> MQTTFrame {
        var body = ByteBuffer()
        body.writeInteger(UInt8(sessionPresent ? 1 : 0))
        body.writeInteger(code)
        if version == .v5 { properties.write(to: &body) }
        return MQTTFrame(type: .connack, body: body)
    }

    /// The refusal of a CONNECT for `error`, in the client's version.
    public static func refusal(_ error: MQTTError, version: MQTTVersion) -> MQTTConnAck {
        guard version == .v3_1_1 else { return MQTTConnAck(code: error.code.reasonCode) }
        let code: UInt8 =
            switch error.code {
            case .unsupportedProtocolVersion: 1
            case .clientIdentifierNotValid: 2
            case .serverUnavailable: 3
            case .badUserNameOrPassword: 4
            default: 5  // not authorized
            }
        return MQTTConnAck(code: code)
    }
}

/// PUBLISH (§3.3), read without copying its payload; forwarded as the frame it came in.
public struct MQTTPublish: Sendable {
    public var topic: String
    public var qos: UInt8
    public var retain: Bool
    public var duplicate: Bool
    public var packetID: UInt16?
    public var properties = MQTTProperties()

    public init(_ frame: MQTTFrame, version: MQTTVersion) throws {
        var body = frame.body
        qos = (frame.flags >> 1) & 0x03
        retain = frame.flags & 0x01 != 0
        duplicate = frame.flags & 0x08 != 0
        guard qos > 0 || !duplicate else { throw MQTTError(.malformedPacket, "DUP on a QoS 0 PUBLISH") }
        topic = try body.readMQTTString()
        packetID = qos > 0 ? try body.readMQTT(UInt16.self) : nil
        if packetID == 0 { throw MQTTError(.malformedPacket, "packet identifier 0") }
        if version == .v5 { properties = try MQTTProperties.read(from: &body) }
    }

    /// A PUBLISH frame (for the agent and tests).
    public static func frame(
        topic: String, payload: [UInt8], qos: UInt8 = 0, retain: Bool = false, packetID: UInt16? = nil, version: MQTTVersion,
        properties: MQTTProperties = MQTTProperties()
    ) -> MQTTFrame {
        var body = ByteBuffer()
        body.writeMQTTString(topic)
        if qos > 0 { body.writeInteger(packetID ?? 1) }
        if version == .v5 { properties.write(to: &body) }
        body.writeBytes(payload)
        return MQTTFrame(type: .publish, flags: qos << 1 | (retain ? 1 : 0), body: body)
    }

    /// The payload of a PUBLISH frame.
    public static func payload(of frame: MQTTFrame, version: MQTTVersion) throws -> ByteBuffer {
        var body = frame.body
        _ = try body.readMQTTString()
        if (frame.flags >> 1) & 0x03 > 0 { _ = try body.readMQTT(UInt16.self) }
        if version == .v5 { _ = try MQTTProperties.read(from: &body) }
        return body
    }
}

/// SUBSCRIBE (§3.8): its filters, each with its options byte.
public struct MQTTSubscribe: Sendable, Equatable {
    public var packetID: UInt16
    public var properties = MQTTProperties()
    public var filters: [(filter: String, options: UInt8)]

    public init(packetID: UInt16, filters: [(filter: String, options: UInt8)], properties: MQTTProperties = MQTTProperties()) {
        self.packetID = packetID
        self.filters = filters
        self.properties = properties
    }

    public init(_ frame: MQTTFrame, version: MQTTVersion) throws {
        var body = frame.body
        packetID = try body.readMQTT(UInt16.self)
        if packetID == 0 { throw MQTTError(.malformedPacket, "packet identifier 0") }
        if version == .v5 { properties = try MQTTProperties.read(from: &body) }
        filters = []
        while body.readableBytes > 0 {
            let filter = try body.readMQTTString()
            let options = try body.readMQTT(UInt8.self)
            let reserved: UInt8 = version == .v5 ? 0xC0 : 0xFC
            guard options & reserved == 0, options & 0x03 < 3 else { throw MQTTError(.malformedPacket, "bad subscription options") }
            filters.append((filter, options))
        }
        guard !filters.isEmpty else { throw MQTTError(.protocolError, "a SUBSCRIBE without a topic filter") }
    }

    public func frame(version: MQTTVersion) -> MQTTFrame {
        var body = ByteBuffer()
        body.writeInteger(packetID)
        if version == .v5 { properties.write(to: &body) }
        for (filter, options) in filters {
            body.writeMQTTString(filter)
            body.writeInteger(options)
        }
        return MQTTFrame(type: .subscribe, flags: 0b0010, body: body)
    }

    public static func == (lhs: MQTTSubscribe, rhs: MQTTSubscribe) -> Bool {
        lhs.packetID == rhs.packetID && lhs.properties == rhs.properties
            && lhs.filters.map(\.filter) == rhs.filters.map(\.filter) && lhs.filters.map(\.options) == rhs.filters.map(\.options)
    }
}

/// SUBACK (§3.9): a reason code per filter, in order.
public struct MQTTSubAck: Sendable, Equatable {
    public var packetID: UInt16
    public var properties = MQTTProperties()
    public var codes: [UInt8]

    public init(packetID: UInt16, codes: [UInt8], properties: MQTTProperties = MQTTProperties()) {
        self.packetID = packetID
        self.codes = codes
        self.properties = properties
    }

    public init(_ frame: MQTTFrame, version: MQTTVersion) throws {
        var body = frame.body
        packetID = try body.readMQTT(UInt16.self)
        if version == .v5 { properties = try MQTTProperties.read(from: &body) }
        codes = body.readBytes(length: body.readableBytes) ?? []
    }

    public func frame(version: MQTTVersion) -> MQTTFrame {
        var body = ByteBuffer()
        body.writeInteger(packetID)
        if version == .v5 { properties.write(to: &body) }
        body.writeBytes(codes)
        return MQTTFrame(type: .suback, body: body)
    }

    /// The code for a refused filter: 0x87 not authorized in 5.0, 0x80 failure in 3.1.1.
    public static func refused(_ version: MQTTVersion) -> UInt8 { version == .v5 ? 0x87 : 0x80 }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4–3.7): a packet identifier and, in 5.0, a reason code.
public struct MQTTAck: Sendable, Equatable {
    public var type: MQTTPacketType
    public var packetID: UInt16
    public var code: UInt8

    public init(_ type: MQTTPacketType, packetID: UInt16, code: UInt8 = 0) {
        self.type = type
        self.packetID = packetID
        self.code = code
    }

    public init(_ frame: MQTTFrame) throws {
        var body = frame.body
        type = frame.type
        packetID = try body.readMQTT(UInt16.self)
        code = body.readInteger() ?? 0
    }

    public func frame(version: MQTTVersion) -> MQTTFrame {
        var body = ByteBuffer()
        body.writeInteger(packetID)
        if version == .v5, code != 0 {
            body.writeInteger(code)
            MQTTVariableInteger.write(0, to: &body)
        }
        return MQTTFrame(type: type, flags: type == .pubrel ? 0b0010 : 0, body: body)
    }
}

/// DISCONNECT (§3.14): in 5.0 with a reason code (and a reason string); empty in 3.1.1.
public enum MQTTDisconnect {
    public static func frame(_ code: MQTTError.Code, reason: String? = nil, version: MQTTVersion) -> MQTTFrame {
        guard version == .v5 else { return MQTTFrame(type: .disconnect) }
        var body = ByteBuffer()
        body.writeInteger(code.reasonCode)
        var properties = MQTTProperties()
        if let reason { properties.set(MQTTProperties.reasonString, .string(String(reason.prefix(200)))) }
        properties.write(to: &body)
        return MQTTFrame(type: .disconnect, body: body)
    }

    /// The reason code of a DISCONNECT (0, normal, when absent).
    public static func reasonCode(of frame: MQTTFrame) -> UInt8 {
        frame.body.getInteger(at: frame.body.readerIndex) ?? 0
    }
}
