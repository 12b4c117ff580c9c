import NIOCore
public import VPNKitBase
import VPNKitStack

/// The connections accepted on one listening TCP port, as an `AsyncSequence`.
///
/// At most `backlog` accepted connections wait to be taken from the sequence; a connection beyond
/// that is reset and counted in `StackCounter.tcpListenOverflows`. The sequence ends when the
/// listener is closed or the stack shuts down.
public struct TCPListener: AsyncSequence, Sendable {
    /// Accepted connections, each after its handshake completed.
    public typealias Element = AsyncTCPConnection
    /// The port listened on (of every address the stack owns).
    public let port: UInt16
    let connections: AsyncStream<AsyncTCPConnection>
    let stack: UserspaceStack

    /// Iterates over accepted connections.
    public func makeAsyncIterator() -> AsyncStream<AsyncTCPConnection>.AsyncIterator {
        connections.makeAsyncIterator()
    }

    /// Stops accepting and ends the sequence; connections already accepted are not affected.
    public func close() async {
        let port = self.port
        _ = try? await stack.onLoop { driver, state in
            driver.stack.stopListeningTCP(port: port)
            state.listeners.removeValue(forKey: port)?.finish()
        }
    }
}

extension UserspaceStack {
    /// Listens for TCP connections on `port` of every address the stack owns.
    /// - Throws: `StackError.addressInUse(_:_:)` when something already listens there;
    ///   ``UserspaceStackError/shutDown`` after shutdown.
    public func listenTCP(port: UInt16, backlog: Int = 128) async throws -> TCPListener {
        let (stream, continuation) = AsyncStream.makeStream(of: AsyncTCPConnection.self, bufferingPolicy: .bufferingOldest(max(1, backlog)))
        let loop = eventLoop
        try await onLoop { driver, state in
            let stack = driver.stack
            try stack.listenTCP(port: port) { [weak stack] socket in
                if case .dropped = continuation.yield(AsyncTCPConnection(socket: socket, eventLoop: loop)) {
                    stack?.counters.increment(.tcpListenOverflows)
                    socket.abort(now: .now())
                }
            }
            state.listeners[port] = continuation
        }
        return TCPListener(port: port, connections: stream, stack: self)
    }

    /// Opens a TCP connection to `address:port` and waits for the handshake.
    /// - Throws: `AsyncTCPError.connectionClosed(_:)` with `.refused` when the peer answers with
    ///   a reset, `.timedOut` when the SYN retransmissions run out; `StackError` when no source
    ///   address is configured, the connection limit is reached, or `address` is IPv6
    ///   (`addressFamilyNotSupported`: the stack carries IPv4 only so far).
    public func connectTCP(to address: IPAddress, port: UInt16) async throws -> AsyncTCPConnection {
        _ = try await onLoop { _, _ in true }
        return try await StackDriver.connect(to: address, port: port, on: driver)
    }

    /// Binds a UDP socket on `port` (of `address` only, or of every owned address when nil).
    /// Received datagrams arrive on the socket's `messages`; a reader that falls more than
    /// `bufferLimit` datagrams behind loses the oldest (counted in `StackCounter.udpSocketQueueFull`).
    /// The socket is closed when the stack shuts down. An IPv6 `address` is refused with
    /// `StackError.addressFamilyNotSupported`.
    public func bindUDP(port: UInt16, address: IPAddress? = nil, bufferLimit: Int? = nil) async throws -> AsyncUDPSocket {
        _ = try await onLoop { _, _ in true }
        let socket = try await AsyncUDPSocket.bind(port: port, address: address, bufferLimit: bufferLimit, on: driver)
        let state = self.state
        try await eventLoop.submit {
            guard !state.value.isShutDown else {
                socket.closeOnEventLoop()
                throw UserspaceStackError.shutDown
            }
            state.value.udpSockets.append(Weak(socket))
        }.get()
        return socket
    }
}

/// A weak reference, so the stack's bookkeeping does not keep a user's socket alive.
final class Weak<T: AnyObject> {
    weak var value: T?
    init(_ value: T) { self.value = value }
}
