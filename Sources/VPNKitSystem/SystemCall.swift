// The system calls the reactor's data path makes, in one file: epoll, eventfd, sockets, reads and
// writes (sends carry MSG_NOSIGNAL: a gone peer is EPIPE, not a SIGPIPE that ends the daemon). Each wrapper retries EINTR, turns -1 into a typed `SystemError` (the call's name and errno,
// no allocation) and takes or returns plain values; nothing else in the reactor calls Glibc for I/O.
// Linux only (epoll): elsewhere this module is empty and the daemon runs on SwiftNIO's loop.
//
// Why this file is safe: every pointer handed to the kernel comes from a `withUnsafe…` scope of the
// value it points into (a ByteBuffer's readable or writable bytes, a local sockaddr_storage, an iovec
// array the caller sized), with that region's own length passed alongside, so the kernel can neither
// read nor write past it; the counts the kernel returns are checked before they are used.

#if os(Linux)
public import CVPNKitLinux
import Glibc
public import NIOCore
public import VPNKitBase

/// A failed system call: which one, and the errno it set.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call that failed ("connect", "epoll_ctl"...).
    public let call: StaticString
    /// errno as the call left it.
    public let errno: CInt

    /// The failure of `call` with `errno`.
    public init(_ call: StaticString, errno: CInt) {
        self.call = call
        self.errno = errno
    }

    /// Whether the call would have blocked (EAGAIN, EWOULDBLOCK).
    public var wouldBlock: Bool { errno == EAGAIN || errno == EWOULDBLOCK }

    /// The same call and errno.
    public static func == (a: SystemError, b: SystemError) -> Bool {
        a.errno == b.errno && a.call.description == b.call.description
    }

    /// One line: the call, strerror's text and the number.
    public var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// An IPv4 or IPv6 socket address as the kernel takes it: a `sockaddr_storage` and its length, made
/// from an `IPAddress` and port without allocating.
public struct SocketAddressStorage: Sendable, Equatable {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    /// An empty address (family 0), to be filled by the kernel.
    public init() {}

    /// The address `address`, port `port`.
    public init(_ address: IPAddress, port: UInt16) {
        switch address {
        case .v4(let v4):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = v4.rawValue.bigEndian
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: &sin) { raw.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6(let v6):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            var bytes = (v6.high.bigEndian, v6.low.bigEndian)
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in withUnsafeBytes(of: &bytes) { raw.copyMemory(from: $0) } }
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: &sin6) { raw.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }

    /// The address family (AF_INET or AF_INET6).
    public var family: CInt { CInt(storage.ss_family) }

    /// The IP address and port, or nil for a family other than IPv4 and IPv6.
    public var endpoint: (address: IPAddress, port: UInt16)? {
        withUnsafeBytes(of: storage) { raw -> (IPAddress, UInt16)? in
            switch CInt(storage.ss_family) {
            case AF_INET:
                let sin = raw.loadUnaligned(as: sockaddr_in.self)
                return (.v4(IPv4Address(rawValue: UInt32(bigEndian: sin.sin_addr.s_addr))), UInt16(bigEndian: sin.sin_port))
            case AF_INET6:
                let sin6 = raw.loadUnaligned(as: sockaddr_in6.self)
                let high = withUnsafeBytes(of: sin6.sin6_addr) { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) }
                let low = withUnsafeBytes(of: sin6.sin6_addr) { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
                return (.v6(IPv6Address(high: high, low: low)), UInt16(bigEndian: sin6.sin6_port))
            default:
                return nil
            }
        }
    }

    /// The same bytes over the same length.
    public static func == (a: SocketAddressStorage, b: SocketAddressStorage) -> Bool {
        guard a.length == b.length else { return false }
        return withUnsafeBytes(of: a.storage) { x in withUnsafeBytes(of: b.storage) { y in memcmp(x.baseAddress!, y.baseAddress!, Int(a.length)) == 0 } }
    }

    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }
}

/// The calls themselves. Descriptors are plain `CInt`s owned by the caller.
public enum SystemCall {
    @inline(__always)
    static func retrying(_ call: StaticString, _ body: () -> Int) throws(SystemError) -> Int {
        while true {
            let result = body()
            if result >= 0 { return result }
            let error = Glibc.errno
            if error != EINTR { throw SystemError(call, errno: error) }
        }
    }

    // MARK: epoll and eventfd

    /// epoll_create1(EPOLL_CLOEXEC).
    public static func epollCreate() throws(SystemError) -> CInt {
        CInt(try retrying("epoll_create1") { Int(epoll_create1(CInt(EPOLL_CLOEXEC))) })
    }

    /// epoll_ctl: `operation` (EPOLL_CTL_ADD, _MOD, _DEL) for `fd` with `events` and `data`.
    public static func epollControl(_ epoll: CInt, _ operation: CInt, _ fd: CInt, events: UInt32, data: UInt64) throws(SystemError) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = data
        _ = try retrying("epoll_ctl") { Int(epoll_ctl(epoll, operation, fd, &event)) }
    }

    /// epoll_pwait2 into `events` (capacity `capacity`), waiting at most `timeoutNanoseconds` (nil:
    /// until something happens). Returns how many events were written; EINTR returns 0.
    public static func epollWait(_ epoll: CInt, _ events: UnsafeMutablePointer<epoll_event>, capacity: Int, timeoutNanoseconds: Int64?) throws(SystemError) -> Int {
        let result: CInt
        if let timeout = timeoutNanoseconds {
            var spec = timespec(tv_sec: Int(timeout / 1_000_000_000), tv_nsec: Int(timeout % 1_000_000_000))
            result = epoll_pwait2(epoll, events, CInt(capacity), &spec, nil)
        } else {
            result = epoll_pwait2(epoll, events, CInt(capacity), nil, nil)
        }
        if result >= 0 { return Int(result) }
        let error = Glibc.errno
        if error == EINTR { return 0 }
        throw SystemError("epoll_pwait2", errno: error)
    }

    /// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC).
    public static func eventFD() throws(SystemError) -> CInt {
        CInt(try retrying("eventfd") { Int(eventfd(0, CInt(EFD_NONBLOCK) | CInt(EFD_CLOEXEC))) })
    }

    /// Adds one to an eventfd's counter (wakes its reader). A full counter (EAGAIN) already wakes it.
    public static func eventFDSignal(_ fd: CInt) {
        var one: UInt64 = 1
        while Glibc.write(fd, &one, 8) < 0 && Glibc.errno == EINTR {}
    }

    /// Reads and clears an eventfd's counter; EAGAIN (nothing pending) is not an error.
    public static func eventFDDrain(_ fd: CInt) {
        var value: UInt64 = 0
        while Glibc.read(fd, &value, 8) < 0 && Glibc.errno == EINTR {}
    }

    // MARK: sockets

    /// A non-blocking, close-on-exec socket.
    public static func socket(family: CInt, type: CInt, protocol proto: CInt = 0) throws(SystemError) -> CInt {
        CInt(try retrying("socket") { Int(Glibc.socket(family, type | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), proto)) })
    }

    /// setsockopt with an integer value.
    public static func setOption(_ fd: CInt, level: CInt, name: CInt, value: CInt) throws(SystemError) {
        var value = value
        _ = try retrying("setsockopt") { Int(setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<CInt>.size))) }
    }

    /// SO_LINGER on with a zero timeout: close(2) then sends RST and drops what is queued.
    public static func setLingerZero(_ fd: CInt) throws(SystemError) {
        var value = linger(l_onoff: 1, l_linger: 0)
        _ = try retrying("setsockopt") { Int(setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, socklen_t(MemoryLayout<linger>.size))) }
    }

    /// The pending error of a socket (SO_ERROR), 0 when there is none; clears it.
    public static func pendingError(_ fd: CInt) -> CInt {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) < 0 { return Glibc.errno }
        return value
    }

    /// bind(2).
    public static func bind(_ fd: CInt, to address: SocketAddressStorage) throws(SystemError) {
        _ = try retrying("bind") { address.withSockaddr { Int(Glibc.bind(fd, $0, $1)) } }
    }

    /// listen(2).
    public static func listen(_ fd: CInt, backlog: CInt) throws(SystemError) {
        _ = try retrying("listen") { Int(Glibc.listen(fd, backlog)) }
    }

    /// Starts a connect: true when it completed at once, false when it is in progress (the socket
    /// becomes writable when it ends; `pendingError` then says how).
    public static func connect(_ fd: CInt, to address: SocketAddressStorage) throws(SystemError) -> Bool {
        let result = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if result == 0 { return true }
        let error = Glibc.errno
        if error == EINPROGRESS || error == EINTR { return false }
        throw SystemError("connect", errno: error)
    }

    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; nil when nothing is waiting.
    public static func accept(_ fd: CInt, peer: inout SocketAddressStorage) throws(SystemError) -> CInt? {
        while true {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let result = withUnsafeMutableBytes(of: &peer.storage) {
                vpnkit_accept4(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length, CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue))
            }
            if result >= 0 {
                peer.length = length
                return result
            }
            let error = Glibc.errno
            if error == EINTR || error == ECONNABORTED { continue }
            if error == EAGAIN || error == EWOULDBLOCK { return nil }
            throw SystemError("accept4", errno: error)
        }
    }

    /// The socket's local address (getsockname).
    public static func localAddress(_ fd: CInt) throws(SystemError) -> SocketAddressStorage {
        var address = SocketAddressStorage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try retrying("getsockname") {
            withUnsafeMutableBytes(of: &address.storage) { Int(getsockname(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)) }
        }
        address.length = length
        return address
    }

    /// shutdown(fd, SHUT_WR).
    public static func shutdownOutput(_ fd: CInt) throws(SystemError) {
        _ = try retrying("shutdown") { Int(Glibc.shutdown(fd, CInt(SHUT_WR))) }
    }

    /// close(2); its errors are not actionable (the descriptor is gone either way).
    public static func close(_ fd: CInt) {
        _ = Glibc.close(fd)
    }

    // MARK: reads and writes

    /// read(2) into `buffer`'s writable bytes (at least `minimum` of them made available, at most
    /// `maximum` of them read): the bytes read (0 at end of stream), or nil when nothing is there now.
    public static func read(_ fd: CInt, into buffer: inout ByteBuffer, minimum: Int, maximum: Int = .max) throws(SystemError) -> Int? {
        var failure: CInt = 0
        let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: minimum) { raw -> Int in
            while true {
                let n = Glibc.read(fd, raw.baseAddress, min(raw.count, maximum))
                if n >= 0 { return n }
                if Glibc.errno != EINTR {
                    failure = Glibc.errno
                    return 0
                }
            }
        }
        if failure == 0 { return count }
        if failure == EAGAIN || failure == EWOULDBLOCK { return nil }
        throw SystemError("read", errno: failure)
    }

    /// sendmsg(2) with MSG_NOSIGNAL of the readable bytes of `buffers` (at most IOV_MAX), gathered: the
    /// bytes written, or nil when the socket takes nothing now. A peer that has gone is EPIPE, never
    /// SIGPIPE (the process's signal dispositions are left alone). `iovecs` must have room for
    /// `buffers.count` entries.
    public static func send(_ fd: CInt, gathering buffers: UnsafeBufferPointer<ByteBuffer>, iovecs: UnsafeMutablePointer<iovec>) throws(SystemError) -> Int? {
        // The ByteBuffers are kept alive by the caller's array for the whole call; their storage does
        // not move while they are not mutated, so the base addresses stay valid.
        for (index, buffer) in buffers.enumerated() {
            buffer.withUnsafeReadableBytes { raw in
                iovecs[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            }
        }
        var message = msghdr()
        message.msg_iov = iovecs
        message.msg_iovlen = buffers.count
        while true {
            let n = sendmsg(fd, &message, CInt(MSG_NOSIGNAL))
            if n >= 0 { return n }
            let error = Glibc.errno
            if error == EINTR { continue }
            if error == EAGAIN || error == EWOULDBLOCK { return nil }
            throw SystemError("sendmsg", errno: error)
        }
    }

    /// recvfrom(2) of one datagram into `buffer` (room for `capacity` bytes made): its length and its
    /// source, or nil when none is waiting. A datagram longer than `capacity` is cut (MSG_TRUNC).
    public static func receive(_ fd: CInt, into buffer: inout ByteBuffer, capacity: Int, from source: inout SocketAddressStorage) throws(SystemError) -> Int? {
        var failure: CInt = 0
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { raw -> Int in
            withUnsafeMutableBytes(of: &source.storage) { address -> Int in
                while true {
                    let n = recvfrom(fd, raw.baseAddress, min(raw.count, capacity), 0, address.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
                    if n >= 0 { return n }
                    if Glibc.errno != EINTR {
                        failure = Glibc.errno
                        return 0
                    }
                }
            }
        }
        if failure == 0 {
            source.length = length
            return count
        }
        if failure == EAGAIN || failure == EWOULDBLOCK { return nil }
        throw SystemError("recvfrom", errno: failure)
    }

    /// sendto(2) of `payload`'s readable bytes to `destination`: false when the socket's buffer is
    /// full (EAGAIN).
    public static func send(_ fd: CInt, _ payload: ByteBuffer, to destination: SocketAddressStorage) throws(SystemError) -> Bool {
        var failure: CInt = 0
        payload.withUnsafeReadableBytes { raw in
            destination.withSockaddr { address, length in
                while sendto(fd, raw.baseAddress, raw.count, CInt(MSG_NOSIGNAL), address, length) < 0 {
                    if Glibc.errno != EINTR {
                        failure = Glibc.errno
                        return
                    }
                }
            }
        }
        if failure == 0 { return true }
        if failure == EAGAIN || failure == EWOULDBLOCK { return false }
        throw SystemError("sendto", errno: failure)
    }
}
#endif
