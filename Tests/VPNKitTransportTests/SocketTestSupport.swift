// Helpers for the socket transport tests: a blocking unix-socket peer written directly on Glibc (so
// the peer shares no code with the transports under test), a thread-safe recorder of callbacks, and
// waits that always end (every wait has a deadline).
//
// The raw socket code passes pointers to sockaddr_un values and byte arrays it owns for the length
// of each call, with the lengths of those same values.

import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

/// The event loop every socket test runs its transports on.
let socketTestLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out: \(what)" }
}

struct SocketCallFailed: Error, CustomStringConvertible {
    var call: String
    var errno: Int32
    var description: String { "\(call) failed: \(String(cString: strerror(errno)))" }
}

struct PeerClosed: Error, CustomStringConvertible {
    var bytesRead: Int
    var description: String { "the transport closed the connection (after \(bytesRead) bytes of the read)" }
}

/// Waits for `future` at most `timeout`.
func waitFor<T: Sendable>(_ future: EventLoopFuture<T>, timeout: TimeAmount = .seconds(5), _ what: String = "future") throws -> T {
    let promise = future.eventLoop.makePromise(of: T.self)
    future.cascade(to: promise)
    let timer = future.eventLoop.scheduleTask(in: timeout) { promise.fail(TestTimeout(what: what)) }
    promise.futureResult.whenComplete { _ in timer.cancel() }
    return try promise.futureResult.wait()
}

/// Runs `body` on the test event loop and returns its result.
func onLoop<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
    try waitFor(socketTestLoop.submit(body), "event loop task")
}

/// Polls `condition` every 2 ms until it holds; throws after `timeout` seconds.
func waitUntil(_ what: String, timeout: Double = 5, _ condition: () throws -> Bool) throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw TestTimeout(what: what) }
        usleep(2000)
    }
}

/// How a transport's `onClose` was called.
enum CloseEvent: Sendable, Equatable, CustomStringConvertible {
    case clean, framing, handshake, closed
    case other(String)

    init(_ error: (any Error)?) {
        switch error {
        case nil: self = .clean
        case let error as TransportError:
            switch error {
            case .framing: self = .framing
            case .handshake: self = .handshake
            case .closed: self = .closed
            case .systemCall: self = .other("\(error)")
            }
        case let error?: self = .other("\(error)")
        }
    }

    var description: String {
        switch self {
        case .clean: return "clean"
        case .framing: return "framing"
        case .handshake: return "handshake"
        case .closed: return "closed"
        case .other(let text): return text
        }
    }
}

/// Records what transports hand to their callbacks; readable from any thread.
final class Recorder: Sendable {
    struct State {
        var frames: [[UInt8]] = []
        var closes: [CloseEvent] = []
        var failures: [CloseEvent] = []
    }
    private let state = Mutex(State())

    var frames: [[UInt8]] { state.withLock { $0.frames } }
    var closes: [CloseEvent] { state.withLock { $0.closes } }
    var failures: [CloseEvent] { state.withLock { $0.failures } }

    func frame(_ buffer: ByteBuffer) {
        let bytes = Array(buffer.readableBytesView)
        state.withLock { $0.frames.append(bytes) }
    }
    func closed(_ error: (any Error)?) {
        let event = CloseEvent(error)
        state.withLock { $0.closes.append(event) }
    }
    func failed(_ error: any Error) {
        let event = CloseEvent(error)
        state.withLock { $0.failures.append(event) }
    }

    /// Points `transport`'s callbacks here. Call on the transport's event loop.
    func attach(_ transport: some FrameTransport) {
        transport.onFrame = { [self] in frame($0) }
        transport.onClose = { [self] in closed($0) }
    }
}

/// A fresh directory for one test's socket files; `remove()` deletes it with everything in it.
struct TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/vpnkit-sock-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SocketCallFailed(call: "mkdtemp", errno: errno) }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Test frames: `size` bytes of a pattern that depends on `seed`, so frames differ from each other.
func pattern(_ size: Int, seed: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: size) { bytes, count in
        var index = 0
        while index < size {
            bytes[index] = UInt8(truncatingIfNeeded: index &* 31 &+ seed &* 7 &+ index >> 8)
            index += 1
        }
        count = size
    }
}

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

/// Frames with qemu's 4-byte big-endian length in front, written by hand.
func qemuStreamBytes(_ frames: [[UInt8]]) -> [UInt8] {
    frames.flatMap { frame -> [UInt8] in
        let n = UInt32(frame.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + frame
    }
}

/// Frames with vmnet's 2-byte little-endian length in front, written by hand.
func vmnetBytes(_ frames: [[UInt8]]) -> [UInt8] {
    frames.flatMap { frame -> [UInt8] in
        let n = UInt16(frame.count)
        return [UInt8(n & 0xFF), UInt8(n >> 8)] + frame
    }
}

/// A unix socket driven with plain blocking-style calls (non-blocking fd plus poll, so that every
/// call has a deadline).
final class RawSocket {
    let fd: Int32
    private var open = true

    private init(fd: Int32) { self.fd = fd }
    /// Takes over `fd`, a socket made elsewhere.
    convenience init(unownedFD fd: Int32) { self.init(fd: fd) }
    deinit { close() }

    func close() {
        if open { Glibc.close(fd) }
        open = false
    }

    private static func make(_ type: Int32) throws -> RawSocket {
        let fd = socket(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SocketCallFailed(call: "socket", errno: errno) }
        return RawSocket(fd: fd)
    }

    private static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        precondition(bytes.count < MemoryLayout.size(ofValue: address.sun_path), "socket path too long")
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// Connects a stream socket to `path`.
    static func connect(_ path: String) throws -> RawSocket {
        let socket = try make(Int32(SOCK_STREAM.rawValue))
        let rc = withAddress(path) { Glibc.connect(socket.fd, $0, $1) }
        guard rc == 0 || errno == EINPROGRESS else { throw SocketCallFailed(call: "connect", errno: errno) }
        try socket.poll(Int16(POLLOUT), timeout: 5)
        return socket
    }

    /// A listening stream socket at `path`.
    static func listen(_ path: String) throws -> RawSocket {
        let socket = try make(Int32(SOCK_STREAM.rawValue))
        guard withAddress(path, { Glibc.bind(socket.fd, $0, $1) }) == 0 else { throw SocketCallFailed(call: "bind", errno: errno) }
        guard Glibc.listen(socket.fd, 8) == 0 else { throw SocketCallFailed(call: "listen", errno: errno) }
        return socket
    }

    /// A datagram socket bound at `path`.
    static func datagram(boundAt path: String) throws -> RawSocket {
        let socket = try make(Int32(SOCK_DGRAM.rawValue))
        guard withAddress(path, { Glibc.bind(socket.fd, $0, $1) }) == 0 else { throw SocketCallFailed(call: "bind", errno: errno) }
        return socket
    }

    func accept(timeout: Double = 5) throws -> RawSocket {
        try poll(Int16(POLLIN), timeout: timeout)
        let fd = Glibc.accept(self.fd, nil, nil)
        guard fd >= 0 else { throw SocketCallFailed(call: "accept", errno: errno) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return RawSocket(fd: fd)
    }

    func poll(_ events: Int16, timeout: Double) throws {
        var request = pollfd(fd: fd, events: events, revents: 0)
        let rc = Glibc.poll(&request, 1, Int32(max(0, timeout) * 1000))
        guard rc >= 0 else { throw SocketCallFailed(call: "poll", errno: errno) }
        guard rc > 0 else { throw TestTimeout(what: "poll for \(events == Int16(POLLIN) ? "input" : "output")") }
    }

    /// Writes all of `bytes`.
    func write(_ bytes: [UInt8], timeout: Double = 5) throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var offset = 0
        while offset < bytes.count {
            try poll(Int16(POLLOUT), timeout: remaining(until: deadline))
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw SocketCallFailed(call: "send", errno: errno)
            }
            offset += n
        }
    }

    /// Reads exactly `count` bytes; throws `PeerClosed` at end of stream.
    func read(exactly count: Int, timeout: Double = 5) throws -> [UInt8] {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var bytes = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            try poll(Int16(POLLIN), timeout: remaining(until: deadline))
            let n = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n == 0 { throw PeerClosed(bytesRead: got) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw SocketCallFailed(call: "recv", errno: errno)
            }
            got += n
        }
        return bytes
    }

    /// Reads until the end of the stream and returns what came before it.
    func readToEnd(timeout: Double = 5) throws -> [UInt8] {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            try poll(Int16(POLLIN), timeout: remaining(until: deadline))
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 { return bytes }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                if errno == ECONNRESET { return bytes }
                throw SocketCallFailed(call: "recv", errno: errno)
            }
            bytes += chunk[0..<n]
        }
    }

    /// Reads one frame with a 4-byte big-endian length.
    func readQemuFrame(timeout: Double = 5) throws -> [UInt8] {
        let header = try read(exactly: 4, timeout: timeout)
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        return try read(exactly: length, timeout: timeout)
    }

    /// Reads one frame with a 2-byte little-endian length.
    func readVmnetFrame(timeout: Double = 5) throws -> [UInt8] {
        let header = try read(exactly: 2, timeout: timeout)
        return try read(exactly: Int(header[0]) | Int(header[1]) << 8, timeout: timeout)
    }

    /// Sends one datagram to `path`.
    func send(datagram bytes: [UInt8], to path: String, timeout: Double = 5) throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        let storage = bytes.isEmpty ? [0] : bytes
        while true {
            let n = storage.withUnsafeBytes { data in
                RawSocket.withAddress(path) { sendto(fd, data.baseAddress!, bytes.count, Int32(MSG_NOSIGNAL), $0, $1) }
            }
            if n >= 0 { return }
            guard errno == EAGAIN || errno == EINTR else { throw SocketCallFailed(call: "sendto", errno: errno) }
            guard ContinuousClock.now < deadline else { throw TestTimeout(what: "sendto") }
            usleep(1000)
        }
    }

    /// Receives one datagram and the path it came from ("" for an unnamed sender).
    func receiveDatagram(timeout: Double = 5) throws -> (bytes: [UInt8], source: String) {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var bytes = [UInt8](repeating: 0, count: 70000)
        var address = sockaddr_un()
        while true {
            try poll(Int16(POLLIN), timeout: remaining(until: deadline))
            var length = socklen_t(MemoryLayout<sockaddr_un>.size)
            let n = bytes.withUnsafeMutableBytes { data in
                withUnsafeMutablePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, data.baseAddress!, data.count, 0, $0, &length) }
                }
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw SocketCallFailed(call: "recvfrom", errno: errno)
            }
            let pathBytes = withUnsafeBytes(of: &address.sun_path) { Array($0.prefix { $0 != 0 }) }
            let source = length > socklen_t(MemoryLayout<sa_family_t>.size) ? String(decoding: pathBytes, as: UTF8.self) : ""
            return (Array(bytes[0..<n]), source)
        }
    }

    /// True when nothing arrives within `timeout`.
    func staysQuiet(for timeout: Double) -> Bool {
        (try? poll(Int16(POLLIN), timeout: timeout)) == nil
    }

    private func remaining(until deadline: ContinuousClock.Instant) -> Double {
        let left = deadline - ContinuousClock.now
        return max(0, Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18)
    }
}
