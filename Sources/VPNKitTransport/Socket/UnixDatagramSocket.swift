// The datagram transport's socket: created and bound by `UnixSocketFile.bind`, read by SwiftNIO
// (`DatagramBootstrap.withBoundSocket`), written here with sendto(2).
//
// Why not NIO's writes: in SwiftNIO 2.101 a DatagramChannel cannot send addressed datagrams on a
// unix socket once more than one is queued (PendingDatagramWritesManager.copySocketAddress ends in
// `fatalError("UDS with datagrams is currently not supported")`), and an unconnected unix datagram
// socket polls writable while the receiver's queue is full, so NIO would spin on EAGAIN. A
// non-blocking sendto per frame drops a frame the peer cannot take now, which is what a link does.
//
// Why this file is safe: sendto(2) gets the frame's readable bytes and their count from
// `withUnsafeReadableBytes`, and the peer's address from `SocketAddress.withSockAddr` with the size
// NIO gives. The descriptor is owned by the NIO channel
// (which closes it); it is written only on the channel's event loop while the channel is active:
// NIO closes it inside `close0` and fires channelInactive before any user code runs again, and the
// handler stops writing at channelInactive.

import NIOCore

#if canImport(Glibc)
import Glibc
private let sendOnConnected = Glibc.send
#elseif canImport(Darwin)
import Darwin
private let sendOnConnected = Darwin.send
#endif

enum UnixDatagramSocket {
    /// A non-blocking, close-on-exec unix datagram socket whose file appears at `path` with `mode`
    /// (`UnixSocketFile.bind`). A socket file already at `path` is removed first (nobody can be
    /// listening on a datagram path we are told to own); any other kind of file is left alone and
    /// the call fails.
    static func bind(path: String, mode: UInt32) throws -> (fd: Int32, file: UnixSocketFile) {
        try UnixSocketFile.bind(path: path, type: Int32(SOCK_DGRAM.rawValue), mode: mode, previous: nil)
    }

    /// Sends `frame` as one datagram to `peer` (nil: the socket is connected, as one end of a
    /// socketpair is) without blocking; 0 when the kernel took it, the errno otherwise (EAGAIN: the
    /// peer's queue is full).
    static func send(fd: Int32, _ frame: ByteBuffer, to peer: SocketAddress?) -> Int32 {
        guard let peer else {
            let sent = frame.withUnsafeReadableBytes { bytes in
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { empty in
                    sendOnConnected(fd, bytes.baseAddress ?? UnsafeRawPointer(empty.baseAddress!), bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
                }
            }
            return sent < 0 ? errno : 0
        }
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
