public import NIOCore

/// MQTT control packet types (MQTT 3.1.1 §2.2.1, MQTT 5.0 §2.1.2).
public enum MQTTPacketType: UInt8, Sendable, CustomStringConvertible {
    case connect = 1, connack, publish, puback, pubrec, pubrel, pubcomp, subscribe, suback, unsubscribe, unsuback, pingreq,
        pingresp, disconnect, auth

    public var description: String {
        switch self {
        case .connect: "CONNECT"
        case .connack: "CONNACK"
        case .publish: "PUBLISH"
        case .puback: "PUBACK"
        case .pubrec: "PUBREC"
        case .pubrel: "PUBREL"
        case .pubcomp: "PUBCOMP"
        case .subscribe: "SUBSCRIBE"
        case .suback: "SUBACK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsuback: "UNSUBACK"
        case .pingreq: "PINGREQ"
        case .pingresp: "PINGRESP"
        case .disconnect: "DISCONNECT"
        case .auth: "AUTH"
        }
    }
}

/// The protocol levels Fleetward speaks.
public enum MQTTVersion: UInt8, Sendable {
    case v3_1_1 = 4
    case v5 = 5
}

/// One MQTT control packet as it travels: the first byte (type and flags) and the rest, not yet
/// interpreted. Most packets pass through Fleetward as frames; only those policy needs are
/// parsed (``MQTTConnect``, ``MQTTPublish``, ``MQTTSubscribe``, ``MQTTSubAck``).
public struct MQTTFrame: Sendable, Equatable {
    public var type: MQTTPacketType
    /// The low four bits of the first byte.
    public var flags: UInt8
    public var body: ByteBuffer

    public init(type: MQTTPacketType, flags: UInt8 = 0, body: ByteBuffer = ByteBuffer()) {
        self.type = type
        self.flags = flags
        self.body = body
    }

    /// The whole packet on the wire.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(type.rawValue << 4 | flags)
        MQTTVariableInteger.write(body.readableBytes, to: &buffer)
        var body = body
        buffer.writeBuffer(&body)
    }

    public var encoded: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(body.readableBytes + 5)
        write(to: &buffer)
        return buffer
    }

    /// The fixed header's flags each type requires (MQTT §2.2.2): PUBREL, SUBSCRIBE and
    /// UNSUBSCRIBE carry 0b0010, PUBLISH carries DUP/QoS/RETAIN, every other packet 0.
    var hasValidFlags: Bool {
        switch type {
        case .publish: return flags & 0b0110 != 0b0110  // QoS 3 is malformed
        case .pubrel, .subscribe, .unsubscribe: return flags == 0b0010
        default: return flags == 0
        }
    }
}

/// MQTT's variable byte integer (§1.5.5 in 5.0, "remaining length" in 3.1.1): 1 to 4 bytes.
public enum MQTTVariableInteger {
    public static let maximum = 268_435_455

    public static func write(_ value: Int, to buffer: inout ByteBuffer) {
        var value = value
        repeat {
            var byte = UInt8(value & 0x7F)
            value >>= 7
            if value > 0 { byte |= 0x80 }
            buffer.writeInteger(byte)
        } while value > 0
    }

    public static func size(of value: Int) -> Int {
        value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4
    }

    /// Reads one; nil when more bytes are needed; throws when a fifth byte would be needed.
    public static func read(from buffer: inout ByteBuffer) throws -> Int? {
        var value = 0
        var shift = 0
        var index = buffer.readerIndex
        while true {
            guard let byte: UInt8 = buffer.getInteger(at: index) else { return nil }
            value |= Int(byte & 0x7F) << shift
            index += 1
            if byte & 0x80 == 0 { break }
            shift += 7
            guard shift < 28 else { throw MQTTError(.malformedPacket, "a variable byte integer longer than 4 bytes") }
        }
        buffer.moveReaderIndex(to: index)
        return value
    }
}

/// Splits a byte stream into ``MQTTFrame``s, refusing a packet over `maximumPacketSize` from its
/// fixed header, before any of its body is buffered.
public struct MQTTFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = MQTTFrame

    public let maximumPacketSize: Int

    public init(maximumPacketSize: Int) {
        self.maximumPacketSize = maximumPacketSize
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.frame(from: &buffer, maximumPacketSize: maximumPacketSize) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }

    /// One frame from the front of `buffer`, or nil (and `buffer` untouched) when it is not whole yet.
    public static func frame(from buffer: inout ByteBuffer, maximumPacketSize: Int) throws -> MQTTFrame? {
        var peek = buffer
        guard let first: UInt8 = peek.readInteger() else { return nil }
        guard let length = try MQTTVariableInteger.read(from: &peek) else { return nil }
        let total = 1 + MQTTVariableInteger.size(of: length) + length
        guard total <= maximumPacketSize else {
            throw MQTTError(.packetTooLarge, "a packet of \(total) bytes; the limit is \(maximumPacketSize)")
        }
        guard let type = MQTTPacketType(rawValue: first >> 4) else {
            throw MQTTError(.malformedPacket, "packet type \(first >> 4) does not exist")
        }
        guard let body = peek.readSlice(length: length) else { return nil }
        let frame = MQTTFrame(type: type, flags: first & 0x0F, body: body)
        guard frame.hasValidFlags else { throw MQTTError(.malformedPacket, "\(type) with fixed-header flags \(first & 0x0F)") }
        buffer = peek
        return frame
    }
}

/// Writes ``MQTTFrame``s.
public struct MQTTFrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = MQTTFrame

    public init() {}

    public func encode(data: MQTTFrame, out: inout ByteBuffer) throws {
        data.write(to: &out)
    }
}
