public import NIOCore

/// MQTT 5.0 properties (§2.2.2): read and written whole, so a packet that Fleetward rewrites keeps
/// every property it does not touch.
public struct MQTTProperties: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case byte(UInt8)
        case twoBytes(UInt16)
        case fourBytes(UInt32)
        case variable(Int)
        case string(String)
        case binary([UInt8])
        case pair(String, String)
    }

    public static let payloadFormat: UInt8 = 0x01
    public static let messageExpiry: UInt8 = 0x02
    public static let authenticationMethod: UInt8 = 0x15
    public static let authenticationData: UInt8 = 0x16
    public static let receiveMaximum: UInt8 = 0x21
    public static let topicAliasMaximum: UInt8 = 0x22
    public static let topicAlias: UInt8 = 0x23
    public static let reasonString: UInt8 = 0x1F
    public static let userProperty: UInt8 = 0x26
    public static let maximumPacketSize: UInt8 = 0x27
    public static let assignedClientIdentifier: UInt8 = 0x12

    public var entries: [(id: UInt8, value: Value)] = []

    public init(_ entries: [(id: UInt8, value: Value)] = []) {
        self.entries = entries
    }

    public static func == (lhs: MQTTProperties, rhs: MQTTProperties) -> Bool {
        lhs.entries.count == rhs.entries.count && zip(lhs.entries, rhs.entries).allSatisfy { $0.id == $1.id && $0.value == $1.value }
    }

    public subscript(id: UInt8) -> Value? {
        entries.first { $0.id == id }?.value
    }

    public mutating func remove(_ id: UInt8) {
        entries.removeAll { $0.id == id }
    }

    public mutating func set(_ id: UInt8, _ value: Value) {
        remove(id)
        entries.append((id, value))
    }

    public var topicAlias: UInt16? {
        if case .twoBytes(let alias)? = self[Self.topicAlias] { return alias }
        return nil
    }

    /// The wire type of each property identifier; nil for one MQTT 5.0 does not define.
    static func kind(of id: UInt8) -> Kind? {
        switch id {
        case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: .byte
        case 0x13, 0x21, 0x22, 0x23: .twoBytes
        case 0x02, 0x11, 0x18, 0x27: .fourBytes
        case 0x0B: .variable
        case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F: .string
        case 0x09, 0x16: .binary
        case 0x26: .pair
        default: nil
        }
    }

    enum Kind { case byte, twoBytes, fourBytes, variable, string, binary, pair }

    /// Reads the property length and the properties it covers.
    public static func read(from buffer: inout ByteBuffer) throws -> MQTTProperties {
        guard let length = try MQTTVariableInteger.read(from: &buffer), var slice = buffer.readSlice(length: length) else {
            throw MQTTError(.malformedPacket, "the properties run past the packet")
        }
        var properties = MQTTProperties()
        while slice.readableBytes > 0 {
            guard let id = try MQTTVariableInteger.read(from: &slice), id < 256, let kind = kind(of: UInt8(id)) else {
                throw MQTTError(.malformedPacket, "an unknown property")
            }
            let value: Value
            switch kind {
            case .byte: value = .byte(try slice.readMQTT(UInt8.self))
            case .twoBytes: value = .twoBytes(try slice.readMQTT(UInt16.self))
            case .fourBytes: value = .fourBytes(try slice.readMQTT(UInt32.self))
            case .variable:
                guard let number = try MQTTVariableInteger.read(from: &slice) else { throw MQTTError(.malformedPacket, "a cut property") }
                value = .variable(number)
            case .string: value = .string(try slice.readMQTTString())
            case .binary: value = .binary(try slice.readMQTTBinary())
            case .pair: value = .pair(try slice.readMQTTString(), try slice.readMQTTString())
            }
            properties.entries.append((UInt8(id), value))
        }
        return properties
    }

    public func write(to buffer: inout ByteBuffer) {
        var body = ByteBuffer()
        for (id, value) in entries {
            MQTTVariableInteger.write(Int(id), to: &body)
            switch value {
            case .byte(let byte): body.writeInteger(byte)
            case .twoBytes(let number): body.writeInteger(number)
            case .fourBytes(let number): body.writeInteger(number)
            case .variable(let number): MQTTVariableInteger.write(number, to: &body)
            case .string(let text): body.writeMQTTString(text)
            case .binary(let bytes): body.writeMQTTBinary(bytes)
            case .pair(let key, let value):
                body.writeMQTTString(key)
                body.writeMQTTString(value)
            }
        }
        MQTTVariableInteger.write(body.readableBytes, to: &buffer)
        buffer.writeBuffer(&body)
    }
}

extension ByteBuffer {
    mutating func readMQTT<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard let value: T = readInteger() else { throw MQTTError(.malformedPacket, "the packet ends too early") }
        return value
    }

    /// A UTF-8 string: two length bytes, then well-formed UTF-8 without U+0000 (MQTT §1.5.4).
    mutating func readMQTTString() throws -> String {
        let bytes = try readMQTTBinary()
        guard let text = String(validating: bytes, as: UTF8.self), !bytes.contains(0) else {
            throw MQTTError(.malformedPacket, "a string that is not well-formed UTF-8")
        }
        return text
    }

    mutating func readMQTTBinary() throws -> [UInt8] {
        let length = Int(try readMQTT(UInt16.self))
        guard let bytes = readBytes(length: length) else { throw MQTTError(.malformedPacket, "a field runs past the packet") }
        return bytes
    }

    mutating func writeMQTTString(_ text: String) {
        writeInteger(UInt16(text.utf8.count))
        writeString(text)
    }

    mutating func writeMQTTBinary(_ bytes: [UInt8]) {
        writeInteger(UInt16(bytes.count))
        writeBytes(bytes)
    }
}
