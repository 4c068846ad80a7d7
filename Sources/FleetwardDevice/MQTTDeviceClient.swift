public import FleetwardMQTT
public import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix
import NIOSSL

/// A message the device received on a subscription.
public struct MQTTMessage: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: UInt8
    public var retain: Bool
    /// MQTT 5.0 user properties (the signed-message headers travel as these).
    public var userProperties: [(String, String)]
}

/// One MQTT session of a device through Fleetward's front door: mutual TLS with the device's own
/// certificate and key (the key signs the handshake inside its custody), MQTT 5.0 by default,
/// the device ID as client identifier. QoS 0 and 1 publishes (a QoS 1 publish returns when the
/// PUBACK does, and throws on a refusal reason code), subscriptions with their granted codes, and
/// received messages as a stream (QoS 1 and 2 acknowledged as the protocol asks).
public final class MQTTDeviceClient: Sendable {
    public let endpoint: String
    public let version: MQTTVersion
    /// The client identifier the session runs under (the server may have assigned it).
    public let clientID: String
    /// Messages from the subscriptions, until the session ends.
    public let messages: AsyncStream<MQTTMessage>
    let channel: any Channel
    let handler: NIOLoopBound<MQTTClientHandler>
    private let timeout: Duration

    private init(
        endpoint: String, version: MQTTVersion, clientID: String, messages: AsyncStream<MQTTMessage>, channel: any Channel,
        handler: NIOLoopBound<MQTTClientHandler>, timeout: Duration
    ) {
        self.endpoint = endpoint
        self.version = version
        self.clientID = clientID
        self.messages = messages
        self.channel = channel
        self.handler = handler
        self.timeout = timeout
    }

    /// Connects, completes the handshake, sends CONNECT and waits for CONNACK.
    ///
    /// - Throws: ``DeviceError`` `.handshakeRefused` when the front door does not admit the
    ///   certificate, `.refused` naming the CONNACK's reason code, `.untrustedServer`,
    ///   `.unreachable`, `.timeout`.
    public static func connect(
        host: String, port: Int, tls: PinnedTLS, clientID: String = "", version: MQTTVersion = .v5, keepAlive: UInt16 = 60,
        cleanStart: Bool = true, sessionExpiry: UInt32 = 0, timeout: Duration = .seconds(15)
    ) async throws -> MQTTDeviceClient {
        let endpoint = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        let serverName = tls.serverName ?? (HTTP1Client.isIPLiteral(host) ? nil : host)
        let errors = FirstErrorRecorder()
        let (messages, continuation) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .bufferingNewest(10_000))
        let channel: any Channel
        do {
            let context = try tls.makeContext()
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(try tls.makeHandler(context: context, host: host))
                        try sync.addHandler(errors)
                        try sync.addHandler(ByteToMessageHandler(MQTTFrameDecoder(maximumPacketSize: 16 * 1024 * 1024)))
                        try sync.addHandler(MessageToByteHandler(MQTTFrameEncoder()))
                        try sync.addHandler(MQTTClientHandler(version: version, keepAlive: keepAlive, messages: continuation))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            continuation.finish()
            throw DeviceError.classify(errors.error ?? error, endpoint: endpoint, serverName: serverName)
        }
        return try await establish(
            on: channel, endpoint: endpoint, messages: messages, clientID: clientID, version: version, keepAlive: keepAlive,
            cleanStart: cleanStart, sessionExpiry: sessionExpiry, timeout: timeout,
            classify: { error in
                if let error = error as? DeviceError, error.code == .timeout { return error }
                let classified = DeviceError.classify(errors.error ?? error, endpoint: endpoint, serverName: serverName)
                if classified.code == .unreachable || classified.code == .malformedResponse, errors.error == nil {
                    return DeviceError(.handshakeRefused, "the MQTT front door at \(endpoint) closed the connection without admitting this device")
                }
                return classified
            })
    }

    /// A session straight to a broker's unix socket, without TLS: a backend on the broker's own
    /// host (the demo's subscriber, tests, the server's update announcer), never a device.
    public static func connect(
        unixSocket path: String, clientID: String, version: MQTTVersion = .v5, timeout: Duration = .seconds(15)
    ) async throws -> MQTTDeviceClient {
        try await connectPlain(endpoint: path, clientID: clientID, version: version, timeout: timeout) { $0.connect(unixDomainSocketPath: path) }
    }

    /// A session straight to a broker on TCP, without TLS: a backend beside the broker (the
    /// server's update announcer), never a device.
    public static func connect(
        brokerHost host: String, port: Int, clientID: String, username: String? = nil, password: [UInt8]? = nil,
        version: MQTTVersion = .v5, timeout: Duration = .seconds(15)
    ) async throws -> MQTTDeviceClient {
        let endpoint = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        return try await connectPlain(
            endpoint: endpoint, clientID: clientID, username: username, password: password, version: version, timeout: timeout
        ) { $0.connect(host: host, port: port) }
    }

    private static func connectPlain(
        endpoint: String, clientID: String, username: String? = nil, password: [UInt8]? = nil, version: MQTTVersion, timeout: Duration,
        connect: (ClientBootstrap) -> EventLoopFuture<any Channel>
    ) async throws -> MQTTDeviceClient {
        let (messages, continuation) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .bufferingNewest(10_000))
        let channel: any Channel
        do {
            let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(ByteToMessageHandler(MQTTFrameDecoder(maximumPacketSize: 16 * 1024 * 1024)))
                        try sync.addHandler(MessageToByteHandler(MQTTFrameEncoder()))
                        try sync.addHandler(MQTTClientHandler(version: version, keepAlive: 60, messages: continuation))
                    }
                }
            channel = try await connect(bootstrap).get()
        } catch {
            continuation.finish()
            throw DeviceError(.unreachable, "cannot reach the broker at \(endpoint): \(error)")
        }
        return try await establish(
            on: channel, endpoint: endpoint, messages: messages, clientID: clientID, version: version, keepAlive: 60, cleanStart: true,
            sessionExpiry: 0, username: username, password: password, timeout: timeout, classify: { $0 })
    }

    private static func establish(
        on channel: any Channel, endpoint: String, messages: AsyncStream<MQTTMessage>, clientID: String, version: MQTTVersion,
        keepAlive: UInt16, cleanStart: Bool, sessionExpiry: UInt32, username: String? = nil, password: [UInt8]? = nil, timeout: Duration,
        classify: (any Error) -> any Error
    ) async throws -> MQTTDeviceClient {
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: MQTTClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        var properties = MQTTProperties()
        if version == .v5, sessionExpiry > 0 { properties.set(0x11, .fourBytes(sessionExpiry)) }
        let connect = MQTTConnect(
            version: version, clientID: clientID, cleanStart: cleanStart, keepAlive: keepAlive, properties: properties, username: username,
            password: password)
        let answer: MQTTFrame
        do {
            answer = try await within(timeout, endpoint: endpoint, on: channel) {
                channel.eventLoop.flatSubmit { handler.value.connect(connect.frame, channel: channel) }
            }
        } catch {
            channel.close(promise: nil)
            throw classify(error)
        }
        let connack: MQTTConnAck
        do {
            connack = try MQTTConnAck(answer, version: version)
        } catch {
            channel.close(promise: nil)
            throw DeviceError(.malformedResponse, "the MQTT front door at \(endpoint) sent an unreadable CONNACK")
        }
        guard connack.code == 0 else {
            channel.close(promise: nil)
            throw DeviceError(.refused, "the MQTT front door at \(endpoint) refused the session: \(Self.describe(connack.code, version: version))")
        }
        var assigned = clientID
        if case .string(let id)? = connack.properties[MQTTProperties.assignedClientIdentifier] { assigned = id }
        return MQTTDeviceClient(
            endpoint: endpoint, version: version, clientID: assigned, messages: messages, channel: channel, handler: handler, timeout: timeout)
    }

    /// Publishes `payload` on `topic`. QoS 1 returns once the PUBACK arrives.
    ///
    /// - Throws: ``DeviceError`` `.refused` when the PUBACK carries a refusal (0x87: not
    ///   authorized by the device's policy), `.unreachable` when the session ended first.
    public func publish(
        _ payload: [UInt8], topic: String, qos: UInt8 = 1, retain: Bool = false, userProperties: [(String, String)] = []
    ) async throws {
        guard qos <= 1 else { throw DeviceError(.invalidInput, "the agent publishes with QoS 0 or 1") }
        let version = version
        let handler = handler
        let channel = channel
        let answer = try await Self.within(timeout, endpoint: endpoint, on: channel) {
            channel.eventLoop.flatSubmit {
                handler.value.publish(
                    topic: topic, payload: payload, qos: qos, retain: retain,
                    properties: MQTTProperties(userProperties.map { (MQTTProperties.userProperty, .pair($0.0, $0.1)) }), version: version,
                    channel: channel)
            }
        }
        if let answer, let ack = try? MQTTAck(answer), ack.code >= 0x80 {
            throw DeviceError(.refused, "the publish to \(topic) was refused: \(Self.describe(ack.code, version: version))")
        }
    }

    /// Subscribes to `filters`; returns the code granted for each (a QoS, or ≥ 0x80 refused).
    public func subscribe(_ filters: [String], qos: UInt8 = 1) async throws -> [UInt8] {
        let version = version
        let handler = handler
        let channel = channel
        let answer = try await Self.within(timeout, endpoint: endpoint, on: channel) {
            channel.eventLoop.flatSubmit { handler.value.subscribe(filters, qos: qos, version: version, channel: channel) }
        }
        guard let suback = try? MQTTSubAck(answer, version: version) else {
            throw DeviceError(.malformedResponse, "the MQTT front door at \(endpoint) sent an unreadable SUBACK")
        }
        return suback.codes
    }

    /// Why the session ended (the server's DISCONNECT reason, or how the connection closed); nil
    /// while it is open.
    public var endReason: String? {
        get async {
            let handler = handler
            return try? await channel.eventLoop.submit { handler.value.endReason }.get()
        }
    }

    /// Whether the session is still open.
    public var isActive: Bool { channel.isActive }

    /// Returns once the session has ended, by either side.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }

    /// Sends DISCONNECT (normal) and closes.
    public func disconnect() async {
        let version = version
        try? await channel.writeAndFlush(MQTTDisconnect.frame(.normalDisconnection, version: version))
        try? await channel.close()
    }

    static func within<T: Sendable>(
        _ timeout: Duration, endpoint: String, on channel: any Channel, _ body: @escaping @Sendable () -> EventLoopFuture<T>
    ) async throws -> T {
        let (seconds, attoseconds) = timeout.components
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(max(1, min(seconds, 86_400) * 1_000_000_000 + attoseconds / 1_000_000_000))) {
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        do {
            return try await body().get()
        } catch {
            if !channel.isActive, error is DeviceError == false {
                throw DeviceError(.unreachable, "the MQTT session with \(endpoint) ended")
            }
            throw error
        }
    }

    /// A reason code in words (5.0), or a 3.1.1 return code.
    static func describe(_ code: UInt8, version: MQTTVersion) -> String {
        if version == .v3_1_1 {
            return switch code {
            case 1: "1 (unacceptable protocol version)"
            case 2: "2 (identifier rejected)"
            case 3: "3 (server unavailable)"
            case 4: "4 (bad user name or password)"
            case 5: "5 (not authorized)"
            case 0x80: "0x80 (failure)"
            default: "\(code)"
            }
        }
        let name: String =
            switch code {
            case 0x80: "unspecified error"
            case 0x81: "malformed packet"
            case 0x82: "protocol error"
            case 0x85: "client identifier not valid"
            case 0x87: "not authorized"
            case 0x88: "server unavailable"
            case 0x89: "server busy"
            case 0x8B: "server shutting down"
            case 0x8D: "keep alive timeout"
            case 0x8E: "session taken over"
            case 0x90: "topic name invalid"
            case 0x95: "packet too large"
            case 0x98: "administrative action"
            default: "reason"
            }
        return String(format: "0x%02X (%@)", code, name)
    }
}

/// The device's end of a session, on its event loop: answers CONNECT, PUBLISH and SUBSCRIBE
/// exchanges by packet identifier, acknowledges what arrives, pings at the keep-alive.
final class MQTTClientHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTFrame
    typealias OutboundOut = MQTTFrame

    let version: MQTTVersion
    let keepAlive: UInt16
    let messages: AsyncStream<MQTTMessage>.Continuation
    private var connack: EventLoopPromise<MQTTFrame>?
    private var pending: [UInt16: EventLoopPromise<MQTTFrame?>] = [:]
    private var nextID: UInt16 = 0
    private var ping: RepeatedTask?
    private(set) var endReason: String?

    init(version: MQTTVersion, keepAlive: UInt16, messages: AsyncStream<MQTTMessage>.Continuation) {
        self.version = version
        self.keepAlive = keepAlive
        self.messages = messages
    }

    func connect(_ frame: MQTTFrame, channel: any Channel) -> EventLoopFuture<MQTTFrame> {
        let promise = channel.eventLoop.makePromise(of: MQTTFrame.self)
        guard channel.isActive else {
            promise.fail(DeviceError(.unreachable, endReason ?? "closed"))
            return promise.futureResult
        }
        connack = promise
        channel.writeAndFlush(frame, promise: nil)
        return promise.futureResult
    }

    private func allocateID() -> UInt16 {
        repeat { nextID = nextID == .max ? 1 : nextID + 1 } while pending[nextID] != nil
        return nextID
    }

    func publish(
        topic: String, payload: [UInt8], qos: UInt8, retain: Bool, properties: MQTTProperties, version: MQTTVersion, channel: any Channel
    ) -> EventLoopFuture<MQTTFrame?> {
        guard channel.isActive else { return channel.eventLoop.makeFailedFuture(DeviceError(.unreachable, endReason ?? "closed")) }
        guard qos > 0 else {
            return channel.writeAndFlush(
                MQTTPublish.frame(topic: topic, payload: payload, qos: 0, retain: retain, version: version, properties: properties)
            ).map { nil }
        }
        let id = allocateID()
        let promise = channel.eventLoop.makePromise(of: MQTTFrame?.self)
        pending[id] = promise
        channel.writeAndFlush(
            MQTTPublish.frame(topic: topic, payload: payload, qos: qos, retain: retain, packetID: id, version: version, properties: properties),
            promise: nil)
        return promise.futureResult
    }

    func subscribe(_ filters: [String], qos: UInt8, version: MQTTVersion, channel: any Channel) -> EventLoopFuture<MQTTFrame> {
        guard channel.isActive else { return channel.eventLoop.makeFailedFuture(DeviceError(.unreachable, endReason ?? "closed")) }
        let id = allocateID()
        let promise = channel.eventLoop.makePromise(of: MQTTFrame?.self)
        pending[id] = promise
        channel.writeAndFlush(MQTTSubscribe(packetID: id, filters: filters.map { ($0, qos) }).frame(version: version), promise: nil)
        return promise.futureResult.flatMapThrowing { frame in
            guard let frame else { throw DeviceError(.malformedResponse, "no SUBACK") }
            return frame
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.type {
        case .connack:
            connack?.succeed(frame)
            connack = nil
            if keepAlive > 0 {
                let interval = TimeAmount.seconds(Int64(keepAlive))
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                ping = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                    bound.value.writeAndFlush(NIOAny(MQTTFrame(type: .pingreq)), promise: nil)
                }
            }
        case .puback, .suback, .pubcomp:
            if let ack = try? MQTTAck(frame) { pending.removeValue(forKey: ack.packetID)?.succeed(frame) }
        case .publish:
            guard let publish = try? MQTTPublish(frame, version: version),
                let payload = try? MQTTPublish.payload(of: frame, version: version)
            else {
                context.close(promise: nil)
                return
            }
            if let id = publish.packetID {
                let ack = MQTTAck(publish.qos == 1 ? .puback : .pubrec, packetID: id)
                context.writeAndFlush(wrapOutboundOut(ack.frame(version: version)), promise: nil)
            }
            let properties = publish.properties.entries.compactMap { entry -> (String, String)? in
                if case .pair(let name, let value) = entry.value { return (name, value) }
                return nil
            }
            messages.yield(
                MQTTMessage(
                    topic: publish.topic, payload: Array(payload.readableBytesView), qos: publish.qos, retain: publish.retain,
                    userProperties: properties))
        case .pubrel:
            if let ack = try? MQTTAck(frame) {
                context.writeAndFlush(wrapOutboundOut(MQTTAck(.pubcomp, packetID: ack.packetID).frame(version: version)), promise: nil)
            }
        case .disconnect:
            let code = MQTTDisconnect.reasonCode(of: frame)
            if endReason == nil { endReason = "the server ended the session: " + MQTTDeviceClient.describe(code, version: .v5) }
            context.close(promise: nil)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if endReason == nil { endReason = "\(error)" }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ping?.cancel()
        if endReason == nil { endReason = "the connection closed" }
        let error = DeviceError(.unreachable, endReason!)
        connack?.fail(error)
        connack = nil
        for promise in pending.values { promise.fail(error) }
        pending = [:]
        messages.finish()
        context.fireChannelInactive()
    }
}
