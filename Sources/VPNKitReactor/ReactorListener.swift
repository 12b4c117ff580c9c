// A listening TCP socket on a reactor: accepts drained in bursts (edge-triggered: until EAGAIN, a
// burst at a time so other descriptors get their turn), each accepted descriptor handed to the
// owner already non-blocking and close-on-exec. When accept(2) runs out of descriptors (or memory)
// the connection stays queued and the socket stays readable, so retrying would spin: the listener
// closes instead, which refuses what waits in its queue, and binds again after a pause, retrying
// each pause until it can or until it is closed.

#if os(Linux)
import Glibc
public import NIOCore
public import VPNKitSystem
import VPNKitBase

/// What a `ReactorListener` tells its owner.
public protocol ReactorListenerDelegate: AnyObject {
    /// A connection was accepted: `fd` is the owner's now (adopt it, or close it).
    func listenerAccepted(_ listener: ReactorListener, _ fd: CInt, peer: SocketAddressStorage)
    /// Something happened to the listener (for logs and counters).
    func listenerEvent(_ listener: ReactorListener, _ event: ReactorListener.Event)
}

/// A listening stream socket registered with a reactor. Use it only on the reactor's thread.
public final class ReactorListener: ReactorSource {
    /// What happened to a listener (the NAT reports it as SwiftNIO's `PausingListener` would, in
    /// the same words).
    public enum Event: Sendable {
        /// An accept failed for a reason that needs no pause.
        case acceptFailed(SystemError)
        /// Out of descriptors or memory: the socket closed; connections waiting were refused.
        case paused(SystemError)
        /// Listening again after a pause.
        case resumed
        /// Binding again after a pause failed; the next try is one pause later (reported once per pause).
        case resumeFailed(SystemError)
    }

    /// The loop the listener is registered with.
    public let reactor: Reactor
    /// The address as asked for (port 0: the kernel's choice, which `boundAddress` tells and a
    /// re-bind after a pause keeps).
    public let address: SocketAddressStorage
    /// The address bound to.
    public private(set) var boundAddress: SocketAddressStorage
    public weak var delegate: (any ReactorListenerDelegate)?
    /// How long the listener stays closed after accept(2) ran out of descriptors.
    public let pause: TimeAmount
    /// The most connections accepted in one turn before other descriptors get theirs.
    public static let burst = 64
    private let backlog: CInt
    private var fd: CInt
    private var registration: ReactorRegistration?
    private var rebind: ReactorTimer?
    private var firstRetry = true
    private var acceptScheduled = false
    /// Whether `close()` was called.
    public private(set) var isClosed = false

    /// Binds `address` (SO_REUSEADDR) and listens; throws when either fails.
    public init(on reactor: Reactor, address: SocketAddressStorage, backlog: CInt = 256, pause: TimeAmount = .seconds(1)) throws(SystemError) {
        self.reactor = reactor
        self.address = address
        self.backlog = backlog
        self.pause = pause
        let fd = try Self.listen(address, backlog: backlog)
        self.fd = fd
        do {
            boundAddress = try SystemCall.localAddress(fd)
        } catch {
            SystemCall.close(fd)
            throw error
        }
        do {
            registration = try reactor.register(fd, self)
        } catch {
            SystemCall.close(fd)
            throw error
        }
    }

    /// The port bound to.
    public var port: UInt16 { boundAddress.endpoint?.port ?? 0 }

    private static func listen(_ address: SocketAddressStorage, backlog: CInt) throws(SystemError) -> CInt {
        let fd = try SystemCall.socket(family: address.family, type: CInt(SOCK_STREAM.rawValue))
        do {
            try SystemCall.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            // Accepted sockets inherit it: no delay, as SwiftNIO's server sockets do.
            try SystemCall.setOption(fd, level: CInt(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
            try SystemCall.bind(fd, to: address)
            try SystemCall.listen(fd, backlog: backlog)
        } catch {
            SystemCall.close(fd)
            throw error
        }
        return fd
    }

    /// Connections are waiting: accepted, a burst at a time.
    public func reactorEvents(_ events: ReactorEvents) {
        guard !isClosed, registration != nil else { return }
        if events.contains(.readable) { acceptBurst() }
    }

    private func acceptBurst() {
        acceptScheduled = false
        var peer = SocketAddressStorage()
        for _ in 0..<Self.burst {
            guard !isClosed, registration != nil else { return }
            let accepted: CInt?
            do {
                accepted = try SystemCall.accept(fd, peer: &peer)
            } catch {
                if Self.isOutOfDescriptors(error) { return pauseListening(error) }
                delegate?.listenerEvent(self, .acceptFailed(error))
                continue
            }
            guard let accepted else { return }
            if let delegate { delegate.listenerAccepted(self, accepted, peer: peer) } else { SystemCall.close(accepted) }
        }
        // More may wait: edge-triggered, so no new edge comes for them; go on next turn.
        guard !acceptScheduled else { return }
        acceptScheduled = true
        reactor.enqueueLocal { [weak self] in
            guard let self, !self.isClosed, self.acceptScheduled else { return }
            self.acceptBurst()
        }
    }

    /// Whether a failed accept means the process (or the system) is out of descriptors or memory.
    public static func isOutOfDescriptors(_ error: SystemError) -> Bool {
        acceptRanOutOfDescriptors(errno: error.errno)
    }

    /// Closes the socket and binds again after `pause` (internal: tests pause a listener as accept(2) running out of descriptors would).
    func pauseListening(_ error: SystemError) {
        closeSocket()
        delegate?.listenerEvent(self, .paused(error))
        firstRetry = true
        let timer = ReactorTimer(reactor: reactor) { [weak self] in self?.resume() }
        rebind = timer
        timer.arm(at: .now() + pause)
    }

    private func resume() {
        guard !isClosed else { return }
        // The port bound first, so that a listener on port 0 keeps its port.
        do {
            let fd = try Self.listen(boundAddress, backlog: backlog)
            self.fd = fd
            registration = try reactor.register(fd, self)
        } catch {
            if registration == nil, fd >= 0 { closeSocket() }
            if firstRetry { delegate?.listenerEvent(self, .resumeFailed(error)) }
            firstRetry = false
            rebind?.arm(at: .now() + pause)
            return
        }
        rebind = nil
        delegate?.listenerEvent(self, .resumed)
        // Connections may already wait: no edge reports those registered before the registration.
        acceptBurst()
    }

    private func closeSocket() {
        if let registration { reactor.deregister(registration, fd: fd, closing: true) }
        registration = nil
        if fd >= 0 { SystemCall.close(fd) }
        fd = -1
    }

    /// Stops listening for good (a pending re-bind is cancelled); accepted connections are not affected. Idempotent.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        rebind?.cancel()
        rebind = nil
        closeSocket()
    }
}
#endif
