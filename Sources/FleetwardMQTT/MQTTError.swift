/// Why an MQTT session ends or a packet is refused, with the MQTT 5.0 reason code that says so
/// (§2.4; a 3.1.1 session just closes, or gets its CONNACK return code).
public struct MQTTError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Sendable, Equatable, Hashable, CustomStringConvertible {
        /// The MQTT 5 reason code.
        public let reasonCode: UInt8
        let name: String

        public static let normalDisconnection = Code(reasonCode: 0x00, name: "normal disconnection")
        public static let unspecified = Code(reasonCode: 0x80, name: "unspecified error")
        public static let malformedPacket = Code(reasonCode: 0x81, name: "malformed packet")
        public static let protocolError = Code(reasonCode: 0x82, name: "protocol error")
        public static let unsupportedProtocolVersion = Code(reasonCode: 0x84, name: "unsupported protocol version")
        public static let clientIdentifierNotValid = Code(reasonCode: 0x85, name: "client identifier not valid")
        public static let badUserNameOrPassword = Code(reasonCode: 0x86, name: "bad user name or password")
        public static let notAuthorized = Code(reasonCode: 0x87, name: "not authorized")
        public static let serverUnavailable = Code(reasonCode: 0x88, name: "server unavailable")
        public static let badAuthenticationMethod = Code(reasonCode: 0x8C, name: "bad authentication method")
        public static let keepAliveTimeout = Code(reasonCode: 0x8D, name: "keep alive timeout")
        public static let topicFilterInvalid = Code(reasonCode: 0x8F, name: "topic filter invalid")
        public static let topicNameInvalid = Code(reasonCode: 0x90, name: "topic name invalid")
        public static let packetTooLarge = Code(reasonCode: 0x95, name: "packet too large")
        public static let topicAliasInvalid = Code(reasonCode: 0x94, name: "topic alias invalid")
        public static let administrativeAction = Code(reasonCode: 0x98, name: "administrative action")

        public var description: String { name }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    public static func == (lhs: MQTTError, rhs: MQTTError) -> Bool { lhs.code == rhs.code }
}
