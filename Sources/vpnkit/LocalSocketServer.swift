// The daemon's own unix sockets — the stats socket, the control API, slirp4netns's API socket —
// share how they listen: mode 0600 from the start, a bounded number of connections, one request
// each with a deadline.

import Logging
import NIOCore
import NIOPosix
import VPNKit
#if os(Linux)
import VPNKitReactor
#endif

enum LocalSocketServer {
    /// Connections served at once on one socket; one more is closed at once.
    static let maximumConnections = 16

    /// The loop the daemon's local sockets run on: the stack's own, unless that is the reactor, which
    /// hosts no SwiftNIO channels; then one of SwiftNIO's (off the data path: requests reach the
    /// stack through `UserspaceStack`'s async methods).
    static func loop(for stack: UserspaceStack) -> any EventLoop {
        #if os(Linux)
        if stack.eventLoop is Reactor { return MultiThreadedEventLoopGroup.singleton.next() }
        #endif
        return stack.eventLoop
    }

    /// Listens on `path` (a stale socket file there is replaced) through `UnixStreamServer`: the file
    /// is its owner's only (0600) from the moment it appears, the listener pauses for a second when
    /// out of descriptors, and closing removes the file if it is still ours. `initialize` sets up
    /// each accepted connection's pipeline; `label` names the socket in log lines. Call on `loop`.
    static func bind(
        path: String, label: String, logger: Logger, on loop: any EventLoop, initialize: @escaping (any Channel) throws -> Void
    ) -> EventLoopFuture<NIOLoopBound<UnixStreamServer>> {
        let open = NIOLoopBound(ConnectionCount(), eventLoop: loop)
        return UnixStreamServer.bind(path: path, options: SocketTransportOptions(socketFileMode: 0o600), childAutoRead: true, on: loop) { channel in
            guard open.value.count < maximumConnections else {
                logger.notice("\(label): \(maximumConnections) connections open; one more closed")
                channel.close(promise: nil)
                return
            }
            open.value.count += 1
            channel.closeFuture.whenComplete { _ in open.value.count -= 1 }
            try initialize(channel)
        }.map { server in
            let log = RateLimitedLogger(logger)
            server.value.report = { event in logListenerEvent(event, listener: "\(label) \(path)", log: log) }
            return server
        }
    }

    private final class ConnectionCount {
        var count = 0
    }
}

/// Closes a connection that has not sent its whole request within `timeout`, so that silent clients
/// cannot hold descriptors (which the NAT's host sockets need) for ever. Start it when the handler is
/// added; cancel it once the request is in, and when the handler goes.
struct RequestDeadline {
    static let timeout = TimeAmount.seconds(5)
    private var scheduled: Scheduled<Void>?

    mutating func start(_ context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: Self.timeout) { bound.value.close(promise: nil) }
    }

    mutating func cancel() {
        scheduled?.cancel()
        scheduled = nil
    }
}
