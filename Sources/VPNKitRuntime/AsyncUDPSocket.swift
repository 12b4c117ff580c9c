public import NIOCore
public import VPNKitStack
public import VPNKitBase

/// A UDP socket on a stack driven by a `StackDriver`, usable from Swift concurrency: received
/// datagrams arrive as an `AsyncSequence`, sends hop to the stack's event loop. At most
/// `bufferLimit` unread datagrams are kept (by default the stack's `udpSocketQueueLimit`); when a
/// reader falls behind, the oldest unread datagram is dropped and counted in `udpSocketQueueFull`.
public final class AsyncUDPSocket: Sendable {
    /// The local UDP port.
    public let port: UInt16
    /// The local address bound, or nil for every owned address and broadcasts.
    public let address: IPAddress?
    /// Datagrams received, in order; ends when the socket closes.
    public let messages: AsyncStream<UDPMessage>
    private let eventLoop: any EventLoop
    private let socket: NIOLoopBound<UDPSocket>
    private let continuation: AsyncStream<UDPMessage>.Continuation

    /// Binds on the driver's event loop (call from anywhere). `bufferLimit` replaces the stack's
    /// `udpSocketQueueLimit` for this socket (at least 1). Throws `StackError.addressInUse`,
    /// `StackError.addressNotOwned` or `StackError.addressFamilyNotSupported`, as
    /// `NetworkStack.bindUDP` does.
    public static func bind(
        port: UInt16, address: IPAddress? = nil, bufferLimit: Int? = nil, on driver: NIOLoopBound<StackDriver>
    ) async throws -> AsyncUDPSocket {
        let loop = driver.eventLoop
        return try await loop.submit {
            let driver = driver.value
            let stack = driver.stack
            let limit = max(1, bufferLimit ?? stack.configuration.udpSocketQueueLimit)
            let (stream, continuation) = AsyncStream.makeStream(of: UDPMessage.self, bufferingPolicy: .bufferingNewest(limit))
            let socket = try stack.bindUDP(port: port, address: address) { [weak stack] message in
                if case .dropped = continuation.yield(message) { stack?.counters.increment(.udpSocketQueueFull) }
            }
            return AsyncUDPSocket(port: port, address: address, messages: stream, continuation: continuation, socket: NIOLoopBound(socket, eventLoop: loop), driver: driver, eventLoop: loop)
        }.get()
    }

    private let driver: NIOLoopBound<StackDriver>

    private init(
        port: UInt16, address: IPAddress?, messages: AsyncStream<UDPMessage>, continuation: AsyncStream<UDPMessage>.Continuation,
        socket: NIOLoopBound<UDPSocket>, driver: StackDriver, eventLoop: any EventLoop
    ) {
        self.port = port
        self.address = address
        self.messages = messages
        self.continuation = continuation
        self.socket = socket
        self.driver = NIOLoopBound(driver, eventLoop: eventLoop)
        self.eventLoop = eventLoop
    }

    /// Sends `payload` to `destination:port` from the socket's address (the gateway when bound to
    /// every address), on the stack's event loop. Throws the `StackError` of `UDPSocket.send`; does
    /// nothing once the socket is closed.
    public func send(_ payload: ByteBuffer, to destination: IPAddress, port destinationPort: UInt16) async throws {
        let socket = self.socket
        let driver = self.driver
        try await eventLoop.submit {
            try driver.value.perform { _, now in
                try socket.value.send(payload, to: destination, port: destinationPort, now: now)
            }
        }.get()
    }

    /// Unbinds and ends `messages`; for code already on the stack's event loop.
    package func closeOnEventLoop() {
        eventLoop.preconditionInEventLoop()
        socket.value.close()
        continuation.finish()
    }

    /// Unbinds and ends `messages`.
    public func close() async {
        let socket = self.socket
        let continuation = self.continuation
        try? await eventLoop.submit {
            socket.value.close()
            continuation.finish()
        }.get()
    }
}
