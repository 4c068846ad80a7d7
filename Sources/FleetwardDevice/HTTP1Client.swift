public import Crypto
public import Foundation
import FleetwardPKI
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
public import X509
import SwiftASN1

/// TLS as a Fleetward device speaks it: only the pinned root is trusted for the endpoint, whatever
/// the system trust store says, and the server certificate must name the server.
public struct PinnedTLS: Sendable {
    /// The roots the device was provisioned with (normally the one Fleetward root).
    public var roots: [Certificate]
    /// The name the server's certificate must carry; nil checks the IP address connected to.
    public var serverName: String?
    /// The device's client certificate chain (leaf first) and key, for mutual TLS.
    public var clientChain: [Certificate]
    /// Signs the handshake inside its custody; the private key never reaches the TLS library.
    public var clientKey: (any DeviceSigningKey)?

    public init(
        roots: [Certificate], serverName: String? = nil, clientChain: [Certificate] = [], clientKey: (any DeviceSigningKey)? = nil
    ) {
        self.roots = roots
        self.serverName = serverName
        self.clientChain = clientChain
        self.clientKey = clientKey
    }

    func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        configuration.trustRoots = .certificates(try roots.map { try NIOSSLCertificate(bytes: try Self.der($0), format: .der) })
        if let clientKey {
            guard !clientChain.isEmpty else { throw DeviceError(.invalidInput, "a client key needs its certificate") }
            configuration.certificateChain = try clientChain.map {
                .certificate(try NIOSSLCertificate(bytes: try Self.der($0), format: .der))
            }
            configuration.privateKey = .privateKey(NIOSSLPrivateKey(customPrivateKey: CustodyTLSKey(key: clientKey)))
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw DeviceError(.invalidInput, "the TLS settings are unusable: \(error)")
        }
    }

    /// The TLS handler for a connection to `host`: the chain must lead to a pinned root, and the
    /// server's certificate must name `serverName` (or `host`) itself. swift-nio-ssl's own check
    /// also accepts a certificate whose IP address SAN matches the address connected to, whatever
    /// name was asked for; a device programmed with a name must not settle for that, so the name is
    /// checked again once the chain has been verified (the handshake fails otherwise).
    func makeHandler(context: NIOSSLContext, host: String) throws -> NIOSSLClientHandler {
        let expected = serverName ?? host
        let sni = HTTP1Client.isIPLiteral(expected) ? nil : expected
        return try NIOSSLClientHandler._makeSSLClientHandler(context: context, serverHostname: sni) { peer, channel in
            do {
                let leaf = try Certificate(derEncoded: try peer.toDERBytes())
                guard try Self.certificate(leaf, names: expected) else {
                    return channel.eventLoop.makeFailedFuture(ServerNameMismatch(carried: try Self.names(of: leaf)))
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            } catch {
                return channel.eventLoop.makeFailedFuture(NIOSSLExtraError.failedToValidateHostname)
            }
        }
    }

    /// True when `certificate`'s subjectAltName carries `name`: an IP address SAN for an address,
    /// a DNS SAN (exact, or a `*.` wildcard for the first label) for a host name.
    static func certificate(_ certificate: Certificate, names name: String) throws -> Bool {
        guard let names = try certificate.extensions.subjectAlternativeNames else { return false }
        if let wanted = ipAddressBytes(name) {
            return names.contains { if case .ipAddress(let bytes) = $0 { return Array(bytes.bytes) == wanted } else { return false } }
        }
        let host = name.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        return names.contains { general in
            guard case .dnsName(let dns) = general else { return false }
            let pattern = dns.lowercased()
            if pattern == host { return true }
            if pattern.hasPrefix("*."), let dot = host.firstIndex(of: ".") {
                return host[host.index(after: dot)...] == pattern.dropFirst(2) && !host[..<dot].isEmpty
            }
            return false
        }
    }

    /// The DNS names and IP addresses `certificate` carries, as text.
    static func names(of certificate: Certificate) throws -> [String] {
        (try certificate.extensions.subjectAlternativeNames ?? SubjectAlternativeNames()).compactMap { name in
            switch name {
            case .dnsName(let dns): return dns
            case .ipAddress(let octets):
                let bytes = Array(octets.bytes)
                return bytes.count == 4 || bytes.count == 16 ? ServerName.ip(bytes).description : nil
            default: return nil
            }
        }
    }

    /// The 4 or 16 bytes of an IP address literal, nil for anything else.
    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = [UInt8](repeating: 0, count: 4)
        if inet_pton(AF_INET, text, &v4) == 1 { return v4 }
        var v6 = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET6, text, &v6) == 1 { return v6 }
        return nil
    }

    static func der(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }
}

/// The server's certificate is valid under the pinned root but not for the name the device asked
/// for; `carried` is what it is for.
struct ServerNameMismatch: Error {
    var carried: [String]
}

/// One HTTP/1.1 exchange.
public struct HTTP1Request: Sendable {
    public var method: String
    public var path: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(method: String, path: String, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

public struct HTTP1Response: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first(where: { $0.name.caseInsensitiveCompare(name) == .orderedSame })?.value
    }

    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// A small HTTP/1.1 client over swift-nio, with ``PinnedTLS`` or in the clear (loopback
/// management API): one request per connection, a bounded answer and a deadline.
public struct HTTP1Client: Sendable {
    public static let maximumResponseBytes = 4 << 20

    public var host: String
    public var port: Int
    public var tls: PinnedTLS?
    public var timeout: Duration

    public init(host: String, port: Int, tls: PinnedTLS? = nil, timeout: Duration = .seconds(15)) {
        self.host = host
        self.port = port
        self.tls = tls
        self.timeout = timeout
    }

    var endpoint: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }

    /// Sends `request` and returns the answer, whatever its status.
    ///
    /// The answer and the deadline are both decided on the connection's event loop: an answer that
    /// arrived in time is the answer, however late the calling task gets to run (a busy machine
    /// can keep the cooperative pool from resuming it for seconds; racing a `Task.sleep` against
    /// the exchange then reported a timeout for an answer that had long arrived).
    ///
    /// - Throws: ``DeviceError`` (`unreachable`, `untrustedServer`, `handshakeRefused`,
    ///   `malformedResponse`, `timeout`).
    public func send(_ request: HTTP1Request) async throws -> HTTP1Response {
        let context = try tls?.makeContext()
        // SNI and the name check use the configured name; an IP literal is checked as an address.
        let serverName = tls?.serverName ?? (Self.isIPLiteral(host) ? nil : host)
        let firstError = FirstErrorRecorder()
        let deadline = NIODeadline.now() + TimeAmount(timeout)
        let description = "no answer from \(endpoint) within \(timeout)"
        let tlsSettings = tls ?? PinnedTLS(roots: [])
        let connectHost = host
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let answer = eventLoop.makePromise(of: HTTP1Response.self)
        let collector = ResponseCollector(answer: answer, endpoint: endpoint)
        let timer = eventLoop.scheduleTask(deadline: deadline) { answer.fail(DeviceError(.timeout, description)) }
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(min(.seconds(10), TimeAmount(timeout)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(try tlsSettings.makeHandler(context: context, host: connectHost))
                        try channel.pipeline.syncOperations.addHandler(firstError)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: host, port: port)
        connected.whenFailure { answer.fail($0) }
        connected.whenSuccess { channel in
            // Whatever ends the exchange (answer, error, deadline) also ends the connection.
            answer.futureResult.whenComplete { _ in
                timer.cancel()
                channel.close(promise: nil)
            }
            channel.writeAndFlush(self.parts(of: request), promise: nil)
        }
        do {
            return try await withTaskCancellationHandler {
                try await answer.futureResult.get()
            } onCancel: {
                answer.fail(CancellationError())
            }
        } catch {
            timer.cancel()
            // A failed handshake closes the channel; the write that notices reports only "closed
            // channel", so name the error the pipeline saw first.
            throw DeviceError.classify(firstError.error ?? error, endpoint: endpoint, serverName: serverName)
        }
    }

    /// Head, body and end in one write: with a known length the server may answer and close as
    /// soon as the body's last byte arrives, before a separate (empty) end could be written, and
    /// that write would fail on the closed channel.
    private func parts(of request: HTTP1Request) -> [HTTPClientRequestPart] {
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: request.path)
        head.headers.add(name: "Host", value: endpoint)
        head.headers.add(name: "Connection", value: "close")
        if !request.body.isEmpty || request.method == "POST" || request.method == "PUT" {
            head.headers.add(name: "Content-Length", value: "\(request.body.count)")
        }
        for (name, value) in request.headers { head.headers.add(name: name, value: value) }
        var parts: [HTTPClientRequestPart] = [.head(head)]
        if !request.body.isEmpty { parts.append(.body(.byteBuffer(ByteBuffer(bytes: request.body)))) }
        parts.append(.end(nil))
        return parts
    }

    static func isIPLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// Collects one bounded answer on the event loop and completes `answer` with it; an error, or the
/// peer closing before the answer ended, fails it.
final class ResponseCollector: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = [HTTPClientRequestPart]
    typealias OutboundOut = HTTPClientRequestPart

    private let answer: EventLoopPromise<HTTP1Response>
    private let endpoint: String
    private var status: Int?
    private var headers: [(name: String, value: String)] = []
    private var body = ByteBuffer()

    init(answer: EventLoopPromise<HTTP1Response>, endpoint: String) {
        self.answer = answer
        self.endpoint = endpoint
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let parts = unwrapOutboundIn(data)
        for part in parts.dropLast() { context.write(wrapOutboundOut(part), promise: nil) }
        if let last = parts.last { context.write(wrapOutboundOut(last), promise: promise) } else { promise?.succeed() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            headers = head.headers.map { ($0.name, $0.value) }
        case .body(var chunk):
            guard body.readableBytes + chunk.readableBytes <= HTTP1Client.maximumResponseBytes else {
                answer.fail(DeviceError(.malformedResponse, "the answer from \(endpoint) is larger than \(HTTP1Client.maximumResponseBytes) bytes"))
                return
            }
            body.writeBuffer(&chunk)
        case .end:
            guard let status else {
                answer.fail(DeviceError(.malformedResponse, "the answer from \(endpoint) has no status line"))
                return
            }
            answer.succeed(HTTP1Response(status: status, headers: headers, body: Array(body.readableBytesView)))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        answer.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        answer.fail(DeviceError(.malformedResponse, "\(endpoint) closed the connection before answering"))
        context.fireChannelInactive()
    }
}

/// Keeps the first error the pipeline reports (a TLS handshake failure, an alert).
final class FirstErrorRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    private let first = NIOLockedValueBox<(any Error)?>(nil)

    var error: (any Error)? { first.withLockedValue { $0 } }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        first.withLockedValue { if $0 == nil { $0 = error } }
        context.fireErrorCaught(error)
    }
}
