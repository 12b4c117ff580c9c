// A datagram socket on a reactor: reads drained in bursts into the reactor's shared receive buffers
// (no allocation per datagram once they exist), sends straight to the kernel (a full socket buffer is
// the caller's drop to count), and the socket's error queue reported as it fills.

#if os(Linux)
import Glibc
public import NIOCore
public import VPNKitBase
public import VPNKitSystem

/// What a `ReactorDatagram` tells its owner.
public protocol ReactorDatagramDelegate: AnyObject {
    /// Datagrams arrived: call `forEach` once, with what to do with each (payload, source address,
    /// source port); it reads them as it goes (at most a burst per call).
    func datagramsArrived(_ socket: ReactorDatagram, _ forEach: (_ body: (ByteBuffer, IPAddress, UInt16) -> Void) -> Void)
    /// A read or the error queue reported an error (an ICMP error about a datagram sent, on Linux
    /// with IP_RECVERR): drain the error queue if the socket has one.
    func datagramError(_ socket: ReactorDatagram, _ error: SystemError)
}

/// A datagram socket registered with a reactor. Use it only on the reactor's thread.
public final class ReactorDatagram: ReactorSource {
    /// The loop the socket is registered with.
    public let reactor: Reactor
    /// The socket; owned here and closed by `close()`.
    public let fd: CInt
    public weak var delegate: (any ReactorDatagramDelegate)?
    private var registration: ReactorRegistration?
    /// Whether `close()` was called.
    public private(set) var isClosed = false
    /// The most datagrams read in one wakeup before other descriptors get their turn.
    public static let burst = 32
    /// The largest datagram read whole (longer ones are cut).
    public static let maximumDatagram = 65_536

    /// A non-blocking socket of `type` and `protocol` (nil: SOCK_DGRAM, a UDP socket; a raw or ping
    /// socket for ICMP) bound to `address`, with SO_REUSEADDR when `reuseAddress`, registered with
    /// `reactor`. The socket is closed again when any step fails.
    public static func bind(
        on reactor: Reactor, to address: SocketAddressStorage, type: CInt? = nil, protocol proto: CInt = 0,
        reuseAddress: Bool = true
    ) throws(SystemError) -> ReactorDatagram {
        let fd = try SystemCall.socket(family: address.family, type: type ?? CInt(SOCK_DGRAM.rawValue), protocol: proto)
        do {
            if reuseAddress { try SystemCall.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1) }
            try SystemCall.bind(fd, to: address)
        } catch {
            SystemCall.close(fd)
            throw error
        }
        return try ReactorDatagram(adopting: fd, on: reactor)
    }

    /// Takes over a non-blocking datagram socket (closed here if it cannot be registered).
    public init(adopting fd: CInt, on reactor: Reactor) throws(SystemError) {
        self.reactor = reactor
        self.fd = fd
        do {
            registration = try reactor.register(fd, self)
        } catch {
            SystemCall.close(fd)
            throw error
        }
    }

    /// The socket's readiness: errors reported, datagrams read in a burst.
    public func reactorEvents(_ events: ReactorEvents) {
        guard !isClosed else { return }
        if events.contains(.error) {
            delegate?.datagramError(self, SystemError("socket", errno: SystemCall.pendingError(fd)))
        }
        if events.contains(.readable), !isClosed { readBurst() }
    }

    private func readBurst() {
        // Edge-triggered: read until EAGAIN; a burst that did not reach it goes on next turn.
        var more = false
        var error: SystemError?
        delegate?.datagramsArrived(self) { body in
            var source = SocketAddressStorage()
            for _ in 0..<Self.burst {
                guard !isClosed else { return }
                var buffer = reactor.takeReceiveBuffer()
                let count: Int?
                do throws(SystemError) {
                    count = try SystemCall.receive(fd, into: &buffer, capacity: Self.maximumDatagram, from: &source)
                } catch let failure {
                    reactor.returnReceiveBuffer(buffer)
                    error = failure
                    more = true
                    return
                }
                reactor.returnReceiveBuffer(buffer)
                // nil: nothing waiting (EAGAIN), the burst is over.
                guard count != nil else { return }
                guard let (address, port) = source.endpoint else { continue }
                body(buffer, address, port)
            }
            more = true
        }
        if let error { delegate?.datagramError(self, error) }
        if more, !isClosed {
            reactor.enqueueLocal { [weak self] in
                guard let self, !self.isClosed else { return }
                self.readBurst()
            }
        }
    }

    /// Sends `payload` to `destination`: false when the socket's buffer is full (the datagram is not
    /// sent); throws for other errors.
    public func send(_ payload: ByteBuffer, to destination: SocketAddressStorage) throws(SystemError) -> Bool {
        guard !isClosed else { return false }
        return try SystemCall.send(fd, payload, to: destination)
    }

    /// The port the socket is bound to (nil once closed).
    public var localPort: UInt16? {
        guard !isClosed else { return nil }
        return (try? SystemCall.localAddress(fd))?.endpoint?.port
    }

    /// Deregisters and closes the socket. Idempotent.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        if let registration { reactor.deregister(registration, fd: fd, closing: true) }
        registration = nil
        SystemCall.close(fd)
    }
}

extension Reactor {
    /// A buffer to receive one datagram into, from a ring the reactor keeps: reused once whoever it
    /// was handed to has let it go (ByteBuffer copies on write, so one still held is never written over).
    func takeReceiveBuffer() -> ByteBuffer {
        var buffer = receiveRing.take() ?? ByteBuffer()
        buffer.clear()
        return buffer
    }

    func returnReceiveBuffer(_ buffer: ByteBuffer) {
        receiveRing.put(buffer)
    }
}
#endif
