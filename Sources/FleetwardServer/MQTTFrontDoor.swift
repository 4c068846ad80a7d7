public import FleetwardMQTT
public import FleetwardPKI
public import FleetwardRegistry
public import Foundation
public import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
public import FleetwardAuthority
public import ServiceLifecycle

/// Where Fleetward forwards device sessions: an MQTT broker on TCP or a unix socket.
public enum MQTTBrokerEndpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// Parses `mqtt://HOST:PORT` or `unix:///PATH`.
    public init(parsing text: String) throws {
        if text.hasPrefix("unix://") {
            let path = String(text.dropFirst(7))
            guard path.hasPrefix("/") else { throw RegistryError(.invalidInput, "'\(text)' is not unix:///ABSOLUTE/PATH") }
            self = .unix(path: path)
        } else if text.hasPrefix("mqtt://") {
            let address = try ListenAddress(parsing: String(text.dropFirst(7)))
            self = .tcp(host: address.host, port: address.port)
        } else {
            throw RegistryError(.invalidInput, "'\(text)' is not mqtt://HOST:PORT or unix:///PATH")
        }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): "mqtt://\(ListenAddress(host: host, port: port))"
        case .unix(let path): "unix://\(path)"
        }
    }
}

/// Finds the policy and facts a device's session is checked against.
public protocol MQTTPolicySource: Sendable {
    func policy(for device: DeviceID, owner: String?) async throws -> (TopicPolicy, TopicPolicy.Subject)
}

/// The registry's policies: a device's enrollment group's policy, else its model's, else
/// ``TopicPolicy/standard``, with the device's facts from the registry. Stored documents are
/// decoded once per change (cached by scope), and compiled once per session.
public final class RegistryMQTTPolicies: MQTTPolicySource {
    let store: any RegistryStore
    private let cache = Mutex<[MQTTPolicyScope: (document: String, policy: TopicPolicy)]>([:])

    public init(store: any RegistryStore) {
        self.store = store
    }

    public func policy(for device: DeviceID, owner: String?) async throws -> (TopicPolicy, TopicPolicy.Subject) {
        guard let record = try await store.device(device) else { throw RegistryError(.notFound, "no device \(device)") }
        let subject = TopicPolicy.Subject(id: device.rawValue, owner: record.owner, model: record.model, group: record.group)
        guard let stored = try await store.mqttPolicy(for: record) else { return (.standard, subject) }
        if let cached = cache.withLock({ $0[stored.scope] }), cached.document == stored.document { return (cached.policy, subject) }
        let policy = try MQTTPolicies.parse(Array(stored.document.utf8))
        cache.withLock { $0[stored.scope] = (stored.document, policy) }
        return (policy, subject)
    }
}

/// The MQTT listener of the front door: MQTT 3.1.1 and 5.0 over mutual TLS 1.3, admitted by the
/// gateway's own checks (the same verifier, registry view and resumption gate), each session
/// forwarded to the broker under the device's identity and policy, and cut within a second of a
/// change that ends its right to it.
public enum MQTTFrontDoor {
    /// The largest packet accepted from a device (and from the broker): 256 KiB.
    public static let defaultMaximumPacketSize = 256 * 1024

    public static func application(
        _ gateway: Gateway, address: ListenAddress, broker: MQTTBrokerEndpoint, policies: any MQTTPolicySource,
        certificateChainPEM: [UInt8], privateKeyPKCS8: [UInt8], maximumPacketSize: Int = defaultMaximumPacketSize,
        brokerPassword: [UInt8]? = nil, limits: ListenerLimits = .gateway, logger: Logger, onListening: @escaping @Sendable (ListenAddress) async -> Void = { _ in }
    ) throws -> some Service {
        let sessions = MQTTSessions()
        gateway.onMQTTPolicyChange { scope in sessions.policyChanged(scope) }
        gateway.metrics.read("fleetward_mqtt_sessions") { sessions.count }
        var tls = try TLSListener.configuration(certificateChainPEM: certificateChainPEM, privateKeyPKCS8: privateKeyPKCS8)
        tls.minimumTLSVersion = .tlsv13
        tls.certificateVerification = .noHostnameVerification
        return try TLSListener.listener(
            tls: tls, address: address, limits: limits, logger: logger, onListening: onListening,
            afterTLS: { _ in ResumptionGate(gateway: gateway, listener: .mqtt) },
            verify: { presented, channel, promise in gateway.verify(presented, channel: channel, listener: .mqtt, promise: promise) }
        ) { pipeline, _ in
            try pipeline.addHandler(ByteToMessageHandler(MQTTFrameDecoder(maximumPacketSize: maximumPacketSize)))
            try pipeline.addHandler(
                MQTTSessionHandler(
                    gateway: gateway, sessions: sessions, broker: broker, brokerPassword: brokerPassword, policies: policies,
                    maximumPacketSize: maximumPacketSize, logger: logger))
        }
    }
}

/// The open sessions by the model and group their policy was chosen by, so a policy change
/// re-checks exactly the sessions it may affect.
final class MQTTSessions: Sendable {
    struct Entry {
        var model: String
        var group: String?
        var recheck: @Sendable () -> Void
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])

    func add(_ key: ObjectIdentifier, _ entry: Entry) { entries.withLock { $0[key] = entry } }
    func remove(_ key: ObjectIdentifier) { entries.withLock { $0[key] = nil } }
    /// Sessions open now (read at each metrics scrape).
    var count: Int { entries.withLock { $0.count } }

    /// Re-checks every session in `scope` against the policy that now applies to it.
    func policyChanged(_ scope: MQTTPolicyScope) {
        let affected = entries.withLock { entries in
            entries.values.filter { entry in
                switch scope {
                case .model(let model): entry.model == model
                case .group(let group): entry.group == group
                }
            }
        }
        for entry in affected { entry.recheck() }
    }
}

/// One device's MQTT session: carries out ``MQTTSessionStateMachine``'s actions on the device's
/// connection and the broker connection it opens (on the same event loop).
///
/// Frames for either leg are encoded into that leg's one output buffer and written as bytes at
/// the end of the read batch that caused them: one write (and one TLS record toward the device)
/// for many frames, and no frame travels through the pipelines as a boxed value.
final class MQTTSessionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = MQTTFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let gateway: Gateway
    let sessions: MQTTSessions
    let broker: MQTTBrokerEndpoint
    let brokerPassword: [UInt8]?
    let policies: any MQTTPolicySource
    let maximumPacketSize: Int
    let logger: Logger
    private var machine: MQTTSessionStateMachine?
    private var brokerChannel: (any Channel)?
    private var keepAlive: Scheduled<Void>?
    private var keepAliveInterval: Int64 = 0
    /// Set once the session's end was written (a DISCONNECT or a refusing CONNACK).
    private var ended = false
    /// True between a leg's first read and its read-complete: what the frames of one read batch
    /// cause is written at once and flushed once at the batch's end (one TLS record and one
    /// syscall for many frames), not flushed frame by frame.
    private var inReadBatch = false
    /// What is encoded for each leg and not written yet.
    private var deviceOut = ByteBuffer()
    private var brokerOut = ByteBuffer()

    init(
        gateway: Gateway, sessions: MQTTSessions, broker: MQTTBrokerEndpoint, brokerPassword: [UInt8]?, policies: any MQTTPolicySource,
        maximumPacketSize: Int, logger: Logger
    ) {
        self.gateway = gateway
        self.sessions = sessions
        self.broker = broker
        self.brokerPassword = brokerPassword
        self.policies = policies
        self.maximumPacketSize = maximumPacketSize
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if machine == nil {
            guard let identity = gateway.identity(of: context.channel) else {
                context.close(promise: nil)
                return
            }
            machine = MQTTSessionStateMachine(deviceID: identity.device, brokerPassword: brokerPassword)
        }
        armKeepAlive(context: context)
        inReadBatch = true
        perform(machine!.receivedFromDevice(frame), context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushBatch(context: context)
        context.fireChannelReadComplete()
    }

    /// Ends a read batch: writes what it encoded for either leg.
    private func flushBatch(context: ChannelHandlerContext) {
        inReadBatch = false
        flushDevice(context: context, promise: nil)
        flushBroker()
    }

    private func flushDevice(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard deviceOut.readableBytes > 0 else {
            promise?.succeed()
            return
        }
        context.writeAndFlush(wrapOutboundOut(deviceOut), promise: promise)
        // Written at once when the socket takes it, so the storage is ours again for the next batch.
        deviceOut.clear()
    }

    private func flushBroker() {
        guard brokerOut.readableBytes > 0, let brokerChannel else { return }
        brokerChannel.writeAndFlush(brokerOut, promise: nil)
        brokerOut.clear()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let mqtt = error as? MQTTError ?? MQTTError(.malformedPacket, "\(error)")
        if var machine {
            let action = machine.close(mqtt.code, mqtt.message)
            self.machine = machine
            perform([action], context: context)
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        sessions.remove(ObjectIdentifier(context.channel))
        keepAlive?.cancel()
        closeBrokerLeg()
        context.fireChannelInactive()
    }

    /// Closes the broker leg after what this read batch encoded for it (a device's last messages
    /// and its DISCONNECT) was written.
    private func closeBrokerLeg() {
        flushBroker()
        brokerOut.clear()
        brokerChannel?.close(promise: nil)
        brokerChannel = nil
    }

    /// The gateway (a revocation, suspension, theft, a new owner) or the process closes the
    /// connection: a v5 device is told why first (DISCONNECT 0x98, administrative action).
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if !ended, let machine, machine.version == .v5, machine.isOpen {
            ended = true
            MQTTDisconnect.frame(.administrativeAction, reason: "administrative action", version: .v5).write(to: &deviceOut)
            flushDevice(context: context, promise: nil)
        }
        brokerChannel?.close(promise: nil)
        context.close(mode: mode, promise: promise)
    }

    private func armKeepAlive(context: ChannelHandlerContext) {
        guard keepAliveInterval > 0 else { return }
        keepAlive?.cancel()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        keepAlive = context.eventLoop.scheduleTask(in: .milliseconds(keepAliveInterval)) {
            let (handler, context) = bound.value
            guard var machine = handler.machine else { return }
            let action = machine.close(.keepAliveTimeout, "nothing from the device for 1.5 × its keep-alive")
            handler.machine = machine
            handler.perform([action], context: context)
        }
    }

    private func perform(_ actions: [MQTTSessionStateMachine.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .prepare(let deviceID):
                prepare(deviceID, context: context)
            case .connectBroker(let connect):
                connectBroker(connect, context: context)
            case .sendToDevice(let frame):
                frame.write(to: &deviceOut)
                if !inReadBatch { flushDevice(context: context, promise: nil) }
            case .sendToBroker(let frame):
                guard brokerChannel != nil else { break }
                frame.write(to: &brokerOut)
                if !inReadBatch { flushBroker() }
            case .startKeepAlive(let milliseconds):
                keepAliveInterval = milliseconds
                armKeepAlive(context: context)
            case .close(let frame, let reason):
                ended = true
                keepAlive?.cancel()
                let device = machine?.deviceID ?? "?"
                logger.notice("MQTT session ended", metadata: ["device": "\(device)", "reason": "\(reason)"])
                closeBrokerLeg()
                let channel = context.channel
                if let frame {
                    frame.write(to: &deviceOut)
                    let written = context.eventLoop.makePromise(of: Void.self)
                    written.futureResult.whenComplete { _ in channel.close(promise: nil) }
                    flushDevice(context: context, promise: written)
                } else {
                    context.close(promise: nil)
                }
            }
        }
    }

    private func prepare(_ deviceID: String, context: ChannelHandlerContext) {
        let owner = gateway.identity(of: context.channel)?.owner
        gateway.cutOnOwnerChange(context.channel)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let policies = policies
        let promise = context.eventLoop.makePromise(of: (TopicPolicy, TopicPolicy.Subject).self)
        promise.completeWithTask { try await policies.policy(for: try DeviceID(deviceID), owner: owner) }
        promise.futureResult.whenComplete { result in
            let (handler, context) = bound.value
            guard var machine = handler.machine else { return }
            let actions: [MQTTSessionStateMachine.Action]
            switch result {
            case .success(let (policy, subject)):
                actions = machine.prepared(policy, subject: subject)
                handler.follow(subject, context: context)
            case .failure(let error): actions = machine.preparationFailed("the device's policy cannot be read now: \(error)")
            }
            handler.machine = machine
            handler.perform(actions, context: context)
        }
    }

    /// Registers the session to be re-checked when the policy of its model or group changes.
    private func follow(_ subject: TopicPolicy.Subject, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let recheck: @Sendable () -> Void = {
            eventLoop.execute {
                let (handler, context) = bound.value
                handler.recheckPolicy(context: context)
            }
        }
        sessions.add(ObjectIdentifier(context.channel), MQTTSessions.Entry(model: subject.model, group: subject.group, recheck: recheck))
    }

    private func recheckPolicy(context: ChannelHandlerContext) {
        guard let deviceID = machine?.deviceID, machine?.isOpen == true, let id = try? DeviceID(deviceID) else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let policies = policies
        let owner = gateway.identity(of: context.channel)?.owner
        let promise = context.eventLoop.makePromise(of: (TopicPolicy, TopicPolicy.Subject).self)
        promise.completeWithTask { try await policies.policy(for: id, owner: owner) }
        promise.futureResult.whenComplete { result in
            let (handler, context) = bound.value
            guard var machine = handler.machine, machine.isOpen else { return }
            let actions: [MQTTSessionStateMachine.Action]
            switch result {
            case .success(let (policy, subject)): actions = machine.policyChanged(policy, subject: subject)
            case .failure(let error): actions = [machine.close(.administrativeAction, "the device's policy cannot be read now: \(error)")]
            }
            handler.machine = machine
            handler.perform(actions, context: context)
        }
    }

    private func connectBroker(_ connect: MQTTFrame, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let maximumPacketSize = maximumPacketSize
        let deliver: @Sendable (BrokerLegHandler.Event) -> Void = { event in
            let (handler, context) = bound.value
            if case .readComplete = event {
                handler.flushBatch(context: context)
                return
            }
            // Once the session's end is written (an administrative close included), nothing
            // the broker leg does is relayed: the device hears one reason.
            guard var machine = handler.machine, !handler.ended else { return }
            let actions: [MQTTSessionStateMachine.Action]
            if case .frame(let frame) = event {
                handler.inReadBatch = true
                actions = machine.receivedFromBroker(frame)
            } else {
                actions = machine.brokerClosed()
            }
            handler.machine = machine
            handler.perform(actions, context: context)
        }
        let bootstrap = ClientBootstrap(group: context.eventLoop)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(MQTTFrameDecoder(maximumPacketSize: maximumPacketSize)))
                    try channel.pipeline.syncOperations.addHandler(BrokerLegHandler(deliver: deliver))
                }
            }
        let broker = broker
        let boundBootstrap = NIOLoopBound(bootstrap, eventLoop: context.eventLoop)
        @Sendable func attempt(_ number: Int) {
            let bootstrap = boundBootstrap.value
            let connecting: EventLoopFuture<any Channel>
            switch broker {
            case .tcp(let host, let port): connecting = bootstrap.connect(host: host, port: port)
            case .unix(let path): connecting = bootstrap.connect(unixDomainSocketPath: path)
            }
            connecting.whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let channel):
                    guard context.channel.isActive, !handler.ended else {
                        channel.close(promise: nil)
                        return
                    }
                    handler.brokerChannel = channel
                    channel.writeAndFlush(connect.encoded, promise: nil)
                case .failure(let error as IOError) where error.errnoCode == EAGAIN && number < Self.brokerConnectAttempts:
                    // A unix socket whose listen queue is full refuses at once (TCP would have
                    // retried the SYN): many devices arriving together try again shortly.
                    guard context.channel.isActive, !handler.ended else { return }
                    context.eventLoop.scheduleTask(in: .milliseconds(Int64(min(50, 5 * number)))) { attempt(number + 1) }
                case .failure(let error):
                    handler.logger.warning("the MQTT broker is unreachable", metadata: ["broker": "\(handler.broker)", "error": "\(error)"])
                    deliver(.closed)
                }
            }
        }
        attempt(1)
    }

    /// How often a broker connection refused for a full listen queue is tried (about 2 s in all).
    static let brokerConnectAttempts = 50
}

/// The broker's side of a session: hands every frame, the end of each read batch, and the end of
/// the connection to the device's handler.
final class BrokerLegHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTFrame

    enum Event {
        case frame(MQTTFrame)
        case readComplete
        case closed
    }

    let deliver: @Sendable (Event) -> Void
    private var closed = false

    init(deliver: @escaping @Sendable (Event) -> Void) {
        self.deliver = deliver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deliver(.frame(unwrapInboundIn(data)))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        deliver(.readComplete)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !closed {
            closed = true
            deliver(.closed)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
