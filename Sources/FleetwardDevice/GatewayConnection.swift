public import Crypto
public import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One kept-alive mutual-TLS connection from a device to the Fleetward gateway: requests go one
/// after another over it, and ``waitUntilClosed()`` returns when the gateway ends it (a device
/// suspended or revoked is cut off within a second).
///
/// Under TLS 1.3 the server checks the client certificate after the client's side of the
/// handshake is done, so a refusal shows on the first exchange: ``connect(host:port:tls:timeout:)``
/// asks `GET /v1/whoami` before it returns, and throws ``DeviceError`` `.handshakeRefused` when
/// the gateway did not admit the device.
public final class GatewayConnection: Sendable {
    public let endpoint: String
    /// What the gateway says this connection proved (device, owner, certificate).
    public let identity: GatewayIdentity
    let channel: any Channel
    let timeout: Duration
    private let errors: FirstErrorRecorder

    private init(endpoint: String, identity: GatewayIdentity, channel: any Channel, timeout: Duration, errors: FirstErrorRecorder) {
        self.endpoint = endpoint
        self.identity = identity
        self.channel = channel
        self.timeout = timeout
        self.errors = errors
    }

    /// Connects, completes the handshake with the device certificate in `tls`, and asks the
    /// gateway who it sees.
    public static func connect(host: String, port: Int, tls: PinnedTLS, timeout: Duration = .seconds(15)) async throws -> GatewayConnection
    {
        let endpoint = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        let serverName = tls.serverName ?? (HTTP1Client.isIPLiteral(host) ? nil : host)
        let errors = FirstErrorRecorder()
        let channel: any Channel
        do {
            let context = try tls.makeContext()
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(try tls.makeHandler(context: context, host: host))
                        try channel.pipeline.syncOperations.addHandler(errors)
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ExchangeHandler())
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw DeviceError.classify(errors.error ?? error, endpoint: endpoint, serverName: serverName)
        }
        let response: HTTP1Response
        do {
            response = try await exchange(
                HTTP1Request(method: "GET", path: "/v1/whoami"), on: channel, timeout: timeout, endpoint: endpoint)
        } catch {
            channel.close(promise: nil)
            if let error = error as? DeviceError, error.code == .timeout { throw error }
            let classified = DeviceError.classify(errors.error ?? error, endpoint: endpoint, serverName: serverName)
            // The server closing right after our Finished is how a TLS 1.3 refusal often looks.
            if classified.code == .malformedResponse || classified.code == .unreachable, errors.error == nil {
                throw DeviceError(.handshakeRefused, "the gateway at \(endpoint) closed the connection without admitting this device")
            }
            throw classified
        }
        guard response.status == 200 else {
            channel.close(promise: nil)
            throw DeviceError(.refused, "the gateway at \(endpoint) answered whoami with \(response.status)", status: response.status)
        }
        guard let identity = try? JSONDecoder.gateway.decode(GatewayIdentity.self, from: Data(response.body)) else {
            channel.close(promise: nil)
            throw DeviceError(.malformedResponse, "the gateway at \(endpoint) answered whoami with something unreadable")
        }
        return GatewayConnection(endpoint: endpoint, identity: identity, channel: channel, timeout: timeout, errors: errors)
    }

    /// Sends one request over the connection and waits for its answer.
    public func send(_ request: HTTP1Request) async throws -> HTTP1Response {
        do {
            return try await Self.exchange(request, on: channel, timeout: timeout, endpoint: endpoint)
        } catch {
            throw DeviceError.classify(errors.error ?? error, endpoint: endpoint, serverName: nil)
        }
    }

    /// Sends `body` (one JSON object) to `POST /v1/telemetry`, signed by `key` with a fresh
    /// timestamp and nonce (``SignedMessage``); returns the gateway's receipt.
    @discardableResult
    public func sendTelemetry(_ body: [UInt8], key: some DeviceSigningKey, now: Date = Date()) async throws -> HTTP1Response {
        let headers = try SignedMessage.headers(for: body, device: identity.device, key: key, now: now)
        let response = try await send(
            HTTP1Request(
                method: "POST", path: "/v1/telemetry", headers: [("Content-Type", "application/json")] + headers, body: body))
        guard response.status == 202 else {
            let reason = response.text.trimmingCharacters(in: .whitespacesAndNewlines).prefix(300)
            throw DeviceError(.refused, "telemetry refused (\(response.status)): \(reason)", status: response.status)
        }
        return response
    }

    public var isActive: Bool { channel.isActive }

    /// Returns once the connection is closed, by either side.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }

    public func close() async {
        try? await channel.close()
    }

    static func exchange(_ request: HTTP1Request, on channel: any Channel, timeout: Duration, endpoint: String) async throws
        -> HTTP1Response
    {
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: request.path)
        head.headers.add(name: "Host", value: endpoint)
        if !request.body.isEmpty || request.method == "POST" || request.method == "PUT" {
            head.headers.add(name: "Content-Length", value: "\(request.body.count)")
        }
        for (name, value) in request.headers { head.headers.add(name: name, value: value) }
        guard channel.isActive else { throw DeviceError(.unreachable, "\(endpoint) closed the connection") }
        let promise = channel.eventLoop.makePromise(of: HTTP1Response.self)
        // A write that never reaches the exchange handler (the channel closed meanwhile) fails the answer too.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }
        channel.writeAndFlush(ExchangeHandler.Outbound(head: head, body: request.body, promise: promise), promise: written)
        let (seconds, attoseconds) = timeout.components
        let nanoseconds = min(seconds, 86_400) * 1_000_000_000 + attoseconds / 1_000_000_000
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(max(1, nanoseconds))) {
            // A late answer would pair with the next request: the connection is done.
            promise.fail(DeviceError(.timeout, "no answer from \(endpoint) within \(timeout)"))
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await promise.futureResult.get()
    }
}

/// What the gateway's `GET /v1/whoami` names.
public struct GatewayIdentity: Sendable, Codable, Equatable {
    public var device: String
    public var owner: String?
    public var serial: String
    public var certificateSHA256: String
    public var notAfter: Date
}

extension JSONDecoder {
    static var gateway: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// Matches each request written to the answer read back, one at a time, on a kept-alive connection.
final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Outbound
    typealias OutboundOut = HTTPClientRequestPart

    struct Outbound {
        var head: HTTPRequestHead
        var body: [UInt8]
        var promise: EventLoopPromise<HTTP1Response>
    }

    private var waiting: [EventLoopPromise<HTTP1Response>] = []
    private var status: Int?
    private var headers: [(name: String, value: String)] = []
    private var body = ByteBuffer()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard context.channel.isActive else {
            request.promise.fail(ChannelError.ioOnClosedChannel)
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        waiting.append(request.promise)
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        if !request.body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: request.body)))), promise: nil) }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            headers = head.headers.map { ($0.name, $0.value) }
            body.clear()
        case .body(var chunk):
            guard body.readableBytes + chunk.readableBytes <= HTTP1Client.maximumResponseBytes else {
                fail(DeviceError(.malformedResponse, "an answer larger than \(HTTP1Client.maximumResponseBytes) bytes"))
                context.close(promise: nil)
                return
            }
            body.writeBuffer(&chunk)
        case .end:
            guard let status, !waiting.isEmpty else { return }
            waiting.removeFirst().succeed(HTTP1Response(status: status, headers: headers, body: Array(body.readableBytesView)))
            self.status = nil
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(DeviceError(.unreachable, "the gateway closed the connection"))
        context.fireChannelInactive()
    }

    private func fail(_ error: any Error) {
        let pending = waiting
        waiting.removeAll()
        for promise in pending { promise.fail(error) }
    }
}

/// Telemetry signed by the device key, so the gateway can tell a message from this device, now,
/// from a copy replayed later or a body altered on the way.
///
/// Headers: `Fleetward-Timestamp` (Unix seconds), `Fleetward-Nonce` (16 to 64 characters of
/// `A-Z a-z 0-9 - _`, never reused by a device), `Fleetward-Signature` (base64 of the DER
/// ECDSA-SHA256 signature). The signed bytes are
/// `fleetward-telemetry-v1\n<device ID>\n<timestamp>\n<nonce>\n` followed by the body, so
/// `openssl dgst -sha256 -sign device.key` makes the same signature.
public enum SignedMessage {
    public static let timestampHeader = "Fleetward-Timestamp"
    public static let nonceHeader = "Fleetward-Nonce"
    public static let signatureHeader = "Fleetward-Signature"

    /// The bytes the signature covers.
    public static func signedBytes(device: String, timestamp: Int64, nonce: String, body: some Collection<UInt8>) -> [UInt8] {
        Array("fleetward-telemetry-v1\n\(device)\n\(timestamp)\n\(nonce)\n".utf8) + body
    }

    /// The three headers for `body`, with a fresh 128-bit nonce.
    public static func headers(for body: [UInt8], device: String, key: some DeviceSigningKey, now: Date = Date()) throws
        -> [(name: String, value: String)]
    {
        var generator = SystemRandomNumberGenerator()
        let nonce = Data((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let timestamp = Int64(now.timeIntervalSince1970.rounded(.down))
        let signature = try key.signature(for: signedBytes(device: device, timestamp: timestamp, nonce: nonce, body: body))
        return [
            (timestampHeader, String(timestamp)), (nonceHeader, nonce),
            (signatureHeader, Data(signature.derRepresentation).base64EncodedString()),
        ]
    }

    /// True for a nonce of the accepted shape.
    public static func isValidNonce(_ nonce: String) -> Bool {
        (16...64).contains(nonce.utf8.count)
            && nonce.utf8.allSatisfy { c in
                (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || c == 0x2D || c == 0x5F
            }
    }
}
