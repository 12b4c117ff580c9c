// The listening side shared by the qemu stream and vmnet listeners and the daemon's stats socket.

package import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A listening unix stream socket on one event loop. Each accepted channel, already on that loop, is
/// passed to `initializeChild`, which adds the handler. The socket file appears with its final mode
/// (`UnixSocketFile.bind`). Out of descriptors it pauses instead of spinning (`PausingListener`), and
/// binds its path again only while the file there is still the one it made (or none); closing
/// removes the file only if it is still that one.
package final class UnixStreamServer {
    package let path: String
    private var listener: PausingListener?
    private var socketFile: UnixSocketFile?
    /// Hears the listener's pauses and failed accepts.
    package var report: ((PausingListener.Event) -> Void)?

    private init(path: String) {
        self.path = path
    }

    /// The listening channel; nil while paused or closed.
    package var channel: (any Channel)? { listener?.channel }

    /// Binds `path` (a stale socket file there is removed first; any other kind of file is left alone
    /// and the bind fails), with the file mode `options.socketFileMode`. Accepted channels read only
    /// when asked unless `childAutoRead`. Call on `eventLoop`.
    package static func bind(
        path: String, options: SocketTransportOptions, childAutoRead: Bool = false, pause: TimeAmount = .seconds(1),
        on eventLoop: any EventLoop, initializeChild: @escaping (any Channel) throws -> Void
    ) -> EventLoopFuture<NIOLoopBound<UnixStreamServer>> {
        eventLoop.preconditionInEventLoop()
        let server = NIOLoopBound(UnixStreamServer(path: path), eventLoop: eventLoop)
        let initializer = NIOLoopBound(initializeChild, eventLoop: eventLoop)
        let listener = PausingListener(on: eventLoop, pause: pause, bind: {
            // After a pause, the path is bound again only over our own socket file (or none): if
            // somebody else's file is there now, it stays.
            let bound: (fd: Int32, file: UnixSocketFile)
            do {
                bound = try UnixSocketFile.bind(
                    path: path, type: Int32(SOCK_STREAM.rawValue), mode: options.socketFileMode, previous: server.value.socketFile)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            server.value.socketFile = bound.file
            return ServerBootstrap(group: eventLoop)
                .childChannelOption(.autoRead, value: childAutoRead)
                .childChannelOption(.writeBufferWaterMark, value: options.writeBufferWaterMark)
                .childChannelInitializer { channel in
                    // Children of a server bound to one event loop live on that loop, so the bound
                    // values are reachable here.
                    channel.eventLoop.makeCompletedFuture { try initializer.value(channel) }
                }
                .withBoundSocket(bound.fd)
                .flatMapErrorThrowing { error in
                    // Nobody listens behind the file: it goes.
                    bound.file.remove()
                    throw error
                }
        }, report: { event in server.value.report?(event) })
        server.value.listener = listener
        return listener.start().map { server }
    }

    /// Stops accepting and removes the socket file if it is still ours. Accepted connections are not
    /// affected.
    package func close() {
        listener?.close()
        listener = nil
        socketFile?.remove()
        socketFile = nil
    }
}
