public import NIOCore
package import VPNKitStack
public import VPNKitBase
public import VPNKitTCP

/// Errors of the async TCP API.
public enum AsyncTCPError: Error, Sendable, Hashable {
    /// The connection ended (reset, timed out, refused, aborted) before the operation completed.
    case connectionClosed(TCPCloseReason)
    /// Another read (or write) is already waiting on this connection.
    case concurrentOperation
}

/// A TCP connection usable from Swift concurrency. Reads pull from the stack's receive buffer only
/// when asked, so a slow reader closes the TCP window (backpressure); writes wait for room in the send
/// buffer. All state lives on the stack's event loop.
public final class AsyncTCPConnection: Sendable {
    private let state: NIOLoopBound<State>
    private let eventLoop: any EventLoop
    /// The peer's address.
    public let remoteAddress: IPAddress
    /// The peer's TCP port.
    public let remotePort: UInt16

    final class State {
        let socket: TCPSocket
        var reader: CheckedContinuation<ByteBuffer?, any Error>?
        var writer: (data: ByteBuffer, continuation: CheckedContinuation<Void, any Error>)?
        var closed: TCPCloseReason?

        init(socket: TCPSocket) { self.socket = socket }

        func attach() {
            // Weak: the connection may be dropped by its owner while the socket still closes.
            socket.onReadable = { [weak self] in self?.serveReader() }
            socket.onWritable = { [weak self] in self?.serveWriter() }
            socket.onClosed = { [weak self] reason in
                guard let self else { return }
                self.closed = reason
                self.serveReader()
                if let w = self.writer {
                    self.writer = nil
                    w.continuation.resume(throwing: AsyncTCPError.connectionClosed(reason))
                }
            }
        }

        func serveReader() {
            guard let reader else { return }
            if let data = socket.read(now: .now()) {
                self.reader = nil
                reader.resume(returning: data)
            } else if socket.isReadClosed {
                self.reader = nil
                if let closed, closed != .closed { reader.resume(throwing: AsyncTCPError.connectionClosed(closed)) } else { reader.resume(returning: nil) }
            }
        }

        func serveWriter() {
            guard var w = writer else { return }
            w.data.moveReaderIndex(forwardBy: socket.write(w.data, now: .now()))
            if w.data.readableBytes == 0 {
                writer = nil
                w.continuation.resume()
            } else {
                writer = w
            }
        }
    }

    /// Wraps `socket`; must be called on `eventLoop`, the loop of the socket's stack.
    package init(socket: TCPSocket, eventLoop: any EventLoop) {
        let state = State(socket: socket)
        state.attach()
        self.state = NIOLoopBound(state, eventLoop: eventLoop)
        self.eventLoop = eventLoop
        self.remoteAddress = socket.remoteAddress
        self.remotePort = socket.remotePort
    }

    /// The next received bytes (everything buffered, waiting until something arrives), or nil once
    /// the peer has closed its side and everything was read. Throws
    /// `AsyncTCPError.connectionClosed` when the connection ended otherwise (reset, timed out,
    /// aborted), and `AsyncTCPError.concurrentOperation` when another read is already waiting.
    public func read() async throws -> ByteBuffer? {
        let state = self.state
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer?, any Error>) in
            eventLoop.execute {
                let s = state.value
                guard s.reader == nil else { return continuation.resume(throwing: AsyncTCPError.concurrentOperation) }
                s.reader = continuation
                s.serveReader()
            }
        }
    }

    /// Writes all of `data`, waiting while the send buffer is full; returns once the last byte is in
    /// the send buffer, not when the peer has acknowledged it. Throws
    /// `AsyncTCPError.connectionClosed` when the connection has ended or ends meanwhile, and
    /// `AsyncTCPError.concurrentOperation` when another write is already waiting.
    public func write(_ data: ByteBuffer) async throws {
        let state = self.state
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            eventLoop.execute {
                let s = state.value
                if let closed = s.closed { return continuation.resume(throwing: AsyncTCPError.connectionClosed(closed)) }
                guard s.writer == nil else { return continuation.resume(throwing: AsyncTCPError.concurrentOperation) }
                s.writer = (data, continuation)
                s.serveWriter()
            }
        }
    }

    /// Closes our side (FIN after what was written); reading goes on until the peer closes.
    public func shutdown() async {
        let state = self.state
        try? await eventLoop.submit { state.value.socket.close(now: .now()) }.get()
    }

    /// Resets the connection.
    public func abort() async {
        let state = self.state
        try? await eventLoop.submit { state.value.socket.abort(now: .now()) }.get()
    }
}

extension StackDriver {
    /// Listens on `port`; accepted connections arrive on the returned sequence. At most `backlog`
    /// accepted connections wait to be taken; beyond that a new one is reset and counted in
    /// `tcpListenOverflows`. Throws `StackError.addressInUse` when the port already has a listener.
    public static func listen(port: UInt16, backlog: Int = 128, on driver: NIOLoopBound<StackDriver>) async throws -> AsyncStream<AsyncTCPConnection> {
        let loop = driver.eventLoop
        return try await loop.submit {
            let d = driver.value
            let (stream, continuation) = AsyncStream.makeStream(of: AsyncTCPConnection.self, bufferingPolicy: .bufferingOldest(max(1, backlog)))
            try d.stack.listenTCP(port: port) { [unowned d] socket in
                let connection = AsyncTCPConnection(socket: socket, eventLoop: loop)
                if case .dropped = continuation.yield(connection) {
                    d.stack.counters.increment(.tcpListenOverflows)
                    socket.abort(now: .now())
                }
            }
            return stream
        }.get()
    }

    /// Opens a connection from the gateway address and an ephemeral port, and waits for the
    /// handshake. Throws a `StackError` when the connection cannot be created (no address yet, too
    /// many connections, an IPv6 address: `addressFamilyNotSupported`), or
    /// `AsyncTCPError.connectionClosed` when it is refused or times out.
    public static func connect(to address: IPAddress, port: UInt16, on driver: NIOLoopBound<StackDriver>) async throws -> AsyncTCPConnection {
        let loop = driver.eventLoop
        return try await loop.flatSubmit { () -> EventLoopFuture<AsyncTCPConnection> in
            let d = driver.value
            let promise = loop.makePromise(of: AsyncTCPConnection.self)
            do {
                let socket = try d.stack.connectTCP(to: address, port: port, now: .now())
                socket.onConnected = { [unowned socket] in promise.succeed(AsyncTCPConnection(socket: socket, eventLoop: loop)) }
                socket.onClosed = { reason in promise.fail(AsyncTCPError.connectionClosed(reason)) }
                d.flush()
            } catch {
                promise.fail(error)
            }
            return promise.futureResult
        }.get()
    }
}
