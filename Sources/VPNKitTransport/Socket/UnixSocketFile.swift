// The socket files our listeners and datagram transports create, and the listening side shared by
// the qemu stream and vmnet listeners. (The only C calls here are lstat(2) into a local `stat` and
// unlink(2) of a path string.)

import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The identity (device and inode) of the socket file we bound, so that closing removes our file and
/// never one that somebody bound at the same path after us.
struct UnixSocketFile {
    let path: String
    private let device: UInt64
    private let inode: UInt64

    /// Records the socket file now at `path`; nil when there is none.
    init?(boundAt path: String) {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return nil }
        self.path = path
        self.device = UInt64(info.st_dev)
        self.inode = UInt64(info.st_ino)
    }

    /// What is at `path` now: nothing, the file we bound, or another.
    private var current: (exists: Bool, ours: Bool) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return (false, false) }
        return (true, UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode)
    }

    /// Whether the file at `path` is still the one we bound.
    var isStillBound: Bool { current.ours }

    /// Whether some other file is at `path` now (not ours, and not nothing).
    var isReplaced: Bool {
        let now = current
        return now.exists && !now.ours
    }

    /// Removes the file if it is still the one we bound.
    func remove() {
        guard isStillBound else { return }
        unlink(path)
    }
}

/// A listening unix stream socket on one event loop. Each accepted channel, already on that loop and
/// with autoRead off, is passed to `initializeChild`, which adds the transport's handler. Out of
/// descriptors it pauses for a second instead of spinning (`PausingListener`), and binds its path
/// again only while the socket file there is still the one it bound.
final class UnixStreamServer {
    let path: String
    private var listener: PausingListener?
    private var socketFile: UnixSocketFile?
    /// Hears the listener's pauses and failed accepts.
    var report: ((PausingListener.Event) -> Void)?

    private init(path: String) {
        self.path = path
    }

    /// Binds `path` (a stale socket file there is removed first; any other kind of file is left alone
    /// and the bind fails). Call on `eventLoop`.
    static func bind(
        path: String, options: SocketTransportOptions, on eventLoop: any EventLoop,
        initializeChild: @escaping (any Channel) throws -> Void
    ) -> EventLoopFuture<NIOLoopBound<UnixStreamServer>> {
        eventLoop.preconditionInEventLoop()
        let server = NIOLoopBound(UnixStreamServer(path: path), eventLoop: eventLoop)
        let initializer = NIOLoopBound(initializeChild, eventLoop: eventLoop)
        let listener = PausingListener(on: eventLoop, bind: {
            // After a pause, the path is bound again only over our own socket file (or none): if
            // somebody else's file is there now, it stays.
            if let file = server.value.socketFile, file.isReplaced {
                return eventLoop.makeFailedFuture(UnixSocketFileError.replaced(path))
            }
            return ServerBootstrap(group: eventLoop)
                .serverChannelOption(.backlog, value: 128)
                .childChannelOption(.autoRead, value: false)
                .childChannelOption(.writeBufferWaterMark, value: options.writeBufferWaterMark)
                .childChannelInitializer { channel in
                    // Children of a server bound to one event loop live on that loop, so the bound
                    // values are reachable here.
                    channel.eventLoop.makeCompletedFuture { try initializer.value(channel) }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
                .map { channel in
                    server.value.socketFile = UnixSocketFile(boundAt: path)
                    return channel
                }
        }, report: { event in server.value.report?(event) })
        server.value.listener = listener
        return listener.start().map { server }
    }

    /// Stops accepting and removes the socket file. Accepted connections are not affected.
    func close() {
        listener?.close()
        listener = nil
        socketFile?.remove()
        socketFile = nil
    }
}

/// Why a unix listener could not bind its path again.
enum UnixSocketFileError: Error, CustomStringConvertible {
    case replaced(String)

    var description: String {
        switch self {
        case .replaced(let path): return "\(path) is no longer the socket file this listener bound"
        }
    }
}
