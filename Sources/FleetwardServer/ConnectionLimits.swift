import Foundation
import NIOCore
import NIOTLS
import Synchronization

/// How long a device listener waits for a client, and how many clients it holds.
///
/// A client that opens a connection and says nothing, or starts a handshake or a request and
/// never finishes it, costs a socket and memory; thousands of them would exhaust the process's
/// file descriptors and take enrollment and the gateway down. Each listener therefore closes a
/// connection whose TLS handshake is not done by ``handshakeTimeout``, whose request is not read
/// whole by ``requestTimeout`` once started, or that sits idle between requests past
/// ``idleTimeout`` (nil for the gateway, whose devices hold connections for days); and it refuses
/// (closes at once) a new connection past ``maximumConnections`` in all or
/// ``maximumConnectionsPerAddress`` from one address (IPv6 by /64), so an abusive source fills
/// its own share and no more.
public struct ListenerLimits: Sendable, Equatable {
    public var handshakeTimeout: Duration
    public var requestTimeout: Duration
    public var idleTimeout: Duration?
    public var maximumConnections: Int
    public var maximumConnectionsPerAddress: Int

    public init(
        handshakeTimeout: Duration = .seconds(10), requestTimeout: Duration = .seconds(30), idleTimeout: Duration?,
        maximumConnections: Int, maximumConnectionsPerAddress: Int
    ) {
        self.handshakeTimeout = handshakeTimeout
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.maximumConnections = maximumConnections
        self.maximumConnectionsPerAddress = maximumConnectionsPerAddress
    }

    /// EST: a device enrolls and goes (idle connections close after 60 s).
    public static let est = ListenerLimits(idleTimeout: .seconds(60), maximumConnections: 4096, maximumConnectionsPerAddress: 256)
    /// The gateway: devices stay connected (no idle timeout); many may share one address (NAT).
    public static let gateway = ListenerLimits(idleTimeout: nil, maximumConnections: 19_000, maximumConnectionsPerAddress: 4096)
}

/// Counts a listener's open connections, in all and per source address.
final class ConnectionCounter: Sendable {
    let limits: ListenerLimits
    private let counts = Mutex<(total: Int, byAddress: [String: Int])>((0, [:]))

    init(limits: ListenerLimits) {
        self.limits = limits
    }

    /// The key a connection from `address` counts under: an IPv4 address, or an IPv6 /64.
    static func key(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        switch address {
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            let octets = withUnsafeBytes(of: &raw) { Array($0) }
            // An IPv4-mapped address counts as its IPv4 address.
            if octets[0..<10].allSatisfy({ $0 == 0 }), octets[10] == 0xFF, octets[11] == 0xFF {
                return octets[12..<16].map(String.init).joined(separator: ".")
            }
            return octets[0..<8].map { String($0, radix: 16) }.joined(separator: ":") + "::/64"
        default:
            return address.ipAddress ?? "unknown"
        }
    }

    /// Takes a place for a connection from `key`; false when the listener or that address is full.
    func admit(_ key: String) -> Bool {
        counts.withLock { counts in
            guard counts.total < limits.maximumConnections, counts.byAddress[key, default: 0] < limits.maximumConnectionsPerAddress
            else { return false }
            counts.total += 1
            counts.byAddress[key, default: 0] += 1
            return true
        }
    }

    func release(_ key: String) {
        counts.withLock { counts in
            counts.total -= 1
            let left = counts.byAddress[key, default: 1] - 1
            counts.byAddress[key] = left > 0 ? left : nil
        }
    }

    var total: Int { counts.withLock { $0.total } }
}

/// Sits right after TLS on a device connection: closes it when its handshake is not done in
/// time, and gives its place back when it closes.
final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let timeout: Duration
    private var timer: Scheduled<Void>?

    init(timeout: Duration) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            timer?.cancel()
            timer = nil
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
