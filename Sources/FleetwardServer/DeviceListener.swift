import NIOCore
import NIOPosix
import ServiceLifecycle

/// A device-facing listener (EST, the gateway) as a plain NIO server: each accepted connection
/// gets its pipeline from `initializer` on its event loop, and nothing else.
///
/// Hummingbird's `Server` hands every accepted connection through an async sequence to a task
/// group and runs a task per connection for its `handle`; the device listeners have nothing to do
/// there (a connection lives in its pipeline, ``DeviceHTTPChannel``), and that path cost about
/// 6 % of a resumed handshake's CPU. The socket options are the ones Hummingbird sets.
struct DeviceListener: Service {
    let address: ListenAddress
    let onListening: @Sendable (ListenAddress) async -> Void
    /// Sets up an accepted connection's pipeline.
    let initializer: @Sendable (any Channel) -> EventLoopFuture<Void>

    func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer(initializer)
            .bind(host: address.host, port: address.port).get()
        let bound = server.localAddress
        await onListening(ListenAddress(host: bound?.ipAddress ?? address.host, port: bound?.port ?? address.port))
        // Until graceful shutdown or cancellation: then stop accepting (connections in their
        // pipelines end with the process).
        await withTaskCancellationOrGracefulShutdownHandler {
            try? await server.closeFuture.get()
        } onCancelOrGracefulShutdown: {
            server.close(promise: nil)
        }
    }
}
