// The datagram transport's socket: created and bound here, read by SwiftNIO
// (`DatagramBootstrap.withBoundSocket`), written here with sendto(2).
//
// Why not NIO's writes: in SwiftNIO 2.101 a DatagramChannel cannot send addressed datagrams on a
// unix socket once more than one is queued (PendingDatagramWritesManager.copySocketAddress ends in
// `fatalError("UDS with datagrams is currently not supported")`), and an unconnected unix datagram
// socket polls writable while the receiver's queue is full, so NIO would spin on EAGAIN. A
// non-blocking sendto per frame drops a frame the peer cannot take now, which is what a link does.
//
// Why this file is safe: the only pointers are to a `sockaddr_un` and a `stat` held in local
// variables for the length of one call, with their own sizes passed along; the path is copied into
// `sun_path` only after checking that it fits with its terminating zero. sendto(2) gets the frame's
// readable bytes and their count from `withUnsafeReadableBytes`, and the peer's address from
// `SocketAddress.withSockAddr` with the size NIO gives. The descriptor is owned by the NIO channel
// (which closes it); it is written only on the channel's event loop while the channel is active:
// NIO closes it inside `close0` and fires channelInactive before any user code runs again, and the
// handler stops writing at channelInactive.

import NIOCore

#if canImport(Glibc)
import Glibc
#endif

enum UnixDatagramSocket {
    /// A non-blocking, close-on-exec unix datagram socket bound at `path`. A socket file already at
    /// `path` is removed first (nobody can be listening on a datagram path we are told to own); any
    /// other kind of file is left alone and the call fails.
    static func bind(path: String) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path), !bytes.contains(0) else {
            throw TransportError.systemCall("bind \(path) (path empty or longer than sun_path)", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }

        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                throw TransportError.systemCall("bind \(path) (a file that is not a socket is in the way)", errno: EEXIST)
            }
            unlink(path)
        }

        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TransportError.systemCall("socket(AF_UNIX, SOCK_DGRAM)", errno: errno) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let error = errno
            close(fd)
            throw TransportError.systemCall("bind \(path)", errno: error)
        }
        return fd
    }

    /// Sends `frame` as one datagram to `peer` without blocking; 0 when the kernel took it, the
    /// errno otherwise (EAGAIN: the peer's queue is full).
    static func send(fd: Int32, _ frame: ByteBuffer, to peer: SocketAddress) -> Int32 {
        let sent = peer.withSockAddr { address, addressLength in
            frame.withUnsafeReadableBytes { bytes in
                // A zero-length datagram is legal; sendto wants a valid pointer even for 0 bytes.
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { empty in
                    sendto(fd, bytes.baseAddress ?? UnsafeRawPointer(empty.baseAddress!), bytes.count,
                           Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), address, socklen_t(addressLength))
                }
            }
        }
        return sent < 0 ? errno : 0
    }
}
