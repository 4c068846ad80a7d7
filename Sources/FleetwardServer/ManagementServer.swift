import FleetwardRegistry
import Foundation
public import Hummingbird
public import Logging
public import ServiceLifecycle
import NIOCore
import NIOSSL
import HummingbirdCore
import HummingbirdTLS

/// A `HOST:PORT` listen address (`127.0.0.1:8080`, `[::1]:8080`, `localhost:0`).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; IPv6 hosts in brackets.
    public init(parsing text: String) throws {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw RegistryError(.invalidInput, "'\(text)' is not HOST:PORT (IPv6 as [ADDR]:PORT)")
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw RegistryError(.invalidInput, "'\(text)' is not HOST:PORT") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let number = Int(port), (0...65535).contains(number) else {
            throw RegistryError(.invalidInput, "'\(text)' is not HOST:PORT with a port from 0 to 65535")
        }
        self.init(host: String(host), port: number)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The management API as a runnable HTTP/1.1 service.
public enum ManagementServer {
    /// An application serving `api` on `address`; `onListening` gets the bound address (the real
    /// port when 0 was asked) once it accepts connections.
    public static func application(
        _ api: ManagementAPI, address: ListenAddress, limits: ListenerLimits = .management, logger: Logger,
        onListening: @escaping @Sendable (ListenAddress) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        Application(
            router: api.router(),
            server: HTTPServerBuilder { responder in LimitedHTTP1Channel(responder: responder, limits: limits) },
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: nil),
            onServerRunning: { channel in
                let bound = channel.localAddress
                await onListening(ListenAddress(host: bound?.ipAddress ?? address.host, port: bound?.port ?? address.port))
            },
            logger: logger
        )
    }
}

/// The EST listener: HTTPS with the data directory's server certificate, client certificates
/// requested but optional (Basic works without one), checked by ``ESTService`` per flow.
public enum ESTServer {
    /// - Parameters:
    ///   - certificateChainPEM: the server certificate and its issuing CA, PEM.
    ///   - privateKeyPKCS8: the server key, PKCS#8 DER (held in memory only).
    public static func application(
        _ service: ESTService, address: ListenAddress, certificateChainPEM: [UInt8], privateKeyPKCS8: [UInt8],
        limits: ListenerLimits = .est, logger: Logger, onListening: @escaping @Sendable (ListenAddress) async -> Void = { _ in }
    ) throws -> some Service {
        var tls = try TLSListener.configuration(certificateChainPEM: certificateChainPEM, privateKeyPKCS8: privateKeyPKCS8)
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .optionalVerification
        // Any presented certificate passes the handshake (which still proves the client holds its
        // key): ESTService decides per flow which CA it must chain to and refuses in HTTP. When the
        // presented certificates form a valid path to one of Fleetward's anchors (issuing CA,
        // factory CA, a registered group's CA), that path is kept as the connection's validated
        // chain, so a manufacturer's device can send its intermediates.
        return try TLSListener.application(
            responder: service, tls: tls, address: address, bodyLimit: ESTService.bodyLimit, limits: limits, logger: logger,
            onListening: onListening
        ) { presented, _, promise in
            promise.completeWithTask {
                let chain = await service.validatedChain(presented)
                return .certificateVerified(VerificationMetadata(chain.map(ValidatedCertificateChain.init)))
            }
        }
    }
}

/// An HTTP/1.1 listener over TLS whose client certificates go to a verification callback with
/// the connection's channel (HummingbirdTLS takes only the callback without metadata or channel).
enum TLSListener {
    typealias Verify = @Sendable ([NIOSSLCertificate], any Channel, EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void

    static func configuration(certificateChainPEM: [UInt8], privateKeyPKCS8: [UInt8]) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMBytes(certificateChainPEM)
        let key = try NIOSSLPrivateKey(bytes: privateKeyPKCS8, format: .der)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        // Where TLS 1.2 is allowed, only forward-secret AEAD suites (the server key is ECDSA):
        // no CBC with SHA-1 (Lucky 13, a found sslyze finding). TLS 1.3's suites are all AEAD.
        configuration.cipherSuiteValues = tls12Suites
        return configuration
    }

    static let tls12Suites: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ]

    /// Makes a handler to sit right after TLS on each connection (nil: none).
    typealias AfterTLS = @Sendable (any Channel) -> (any ChannelHandler)?

    static func application(
        responder: some DeviceHTTPResponder, tls: TLSConfiguration, address: ListenAddress, bodyLimit: Int, limits: ListenerLimits,
        logger: Logger, onListening: @escaping @Sendable (ListenAddress) async -> Void, afterTLS: @escaping AfterTLS = { _ in nil },
        verify: @escaping Verify
    ) throws -> DeviceListener {
        try listener(tls: tls, address: address, limits: limits, logger: logger, onListening: onListening, afterTLS: afterTLS, verify: verify) {
            pipeline, _ in
            try DeviceHTTPChannel.configure(pipeline, responder: responder, bodyLimit: bodyLimit, limits: limits, logger: logger)
        }
    }

    /// The protocol's handlers, added after TLS (and `afterTLS`) on each connection.
    typealias Application = @Sendable (ChannelPipeline.SynchronousOperations, any Channel) throws -> Void

    /// A TLS listener with connection caps and a handshake deadline, for any protocol above TLS.
    static func listener(
        tls: TLSConfiguration, address: ListenAddress, limits: ListenerLimits, logger: Logger,
        onListening: @escaping @Sendable (ListenAddress) async -> Void, afterTLS: @escaping AfterTLS = { _ in nil },
        verify: @escaping Verify, application: @escaping Application
    ) throws -> DeviceListener {
        let context = try NIOSSLContext(configuration: tls)
        let counter = ConnectionCounter(limits: limits)
        return DeviceListener(address: address, onListening: onListening) { channel in
            // Past the listener's or the address's share, the newest connection is closed at once.
            let key = ConnectionCounter.key(channel.remoteAddress)
            guard counter.admit(key) else {
                logger.warning("refused a connection: too many open", metadata: ["peer.key": "\(key)", "open": "\(counter.total)"])
                return channel.close()
            }
            channel.closeFuture.whenComplete { _ in counter.release(key) }
            return channel.eventLoop.makeCompletedFuture {
                let pipeline = channel.pipeline.syncOperations
                // The client's certificates and the channel go to `verify`.
                try pipeline.addHandler(
                    NIOSSLServerHandler(
                        context: context,
                        customVerificationCallbackWithMetadata: { presented, promise in verify(presented, channel, promise) }))
                try pipeline.addHandler(HandshakeDeadline(timeout: limits.handshakeTimeout))
                if let handler = afterTLS(channel) { try pipeline.addHandler(handler) }
                try application(pipeline, channel)
            }
        }
    }
}
