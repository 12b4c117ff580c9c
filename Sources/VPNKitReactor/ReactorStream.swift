// A TCP socket on a reactor: a non-blocking connect (or an accepted descriptor), reads asked for one
// at a time (the owner reads only while its peer has room), writes queued and sent gathered (sendmsg) when
// flushed, a half-close that waits for the queue to drain, and a close that either drains first or
// resets. Events go to a delegate, on the reactor's thread, never from inside the call that caused
// them except a write's completion (as SwiftNIO completes a write's promise inside its flush).

#if os(Linux)
import Glibc
public import NIOCore
public import VPNKitSystem

/// What a `ReactorStream` tells its owner.
public protocol ReactorStreamDelegate: AnyObject {
    /// The connect succeeded.
    func streamConnected(_ stream: ReactorStream)
    /// The connect failed (ETIMEDOUT: no answer within the timeout).
    func streamConnectFailed(_ stream: ReactorStream, _ error: SystemError)
    /// Bytes from one read asked for with `read()`; `streamReadComplete` follows.
    func streamRead(_ stream: ReactorStream, _ data: ByteBuffer)
    /// The read asked for with `read()` is complete.
    func streamReadComplete(_ stream: ReactorStream)
    /// The peer shut its output (a read found the end).
    func streamEnded(_ stream: ReactorStream)
    /// The write queue fell below its low mark after having been above its high mark.
    func streamWritable(_ stream: ReactorStream)
    /// This many written pieces left the queue.
    func streamWrote(_ stream: ReactorStream, pieces: Int)
    /// The socket failed (reset, or another error); close it.
    func streamFailed(_ stream: ReactorStream, _ error: SystemError)
}

/// A stream socket registered with a reactor. Use it only on the reactor's thread.
public final class ReactorStream: ReactorSource {
    /// The loop the socket is registered with.
    public let reactor: Reactor
    /// The socket; owned here and closed by `close(reset:)` (or when a connect or the socket fails).
    public let fd: CInt
    /// Hears the stream's events. Held (not weakly: a weak reference costs its target a side
    /// table, an allocation per connection) until the stream closes, which lets it go.
    public var delegate: (any ReactorStreamDelegate)?
    private var registration: ReactorRegistration?
    private enum State { case connecting, open, draining, closed }
    private var state: State
    /// An edge said input is there and no read has found EAGAIN since.
    private var readable = false
    /// An edge said the peer shut its output (or the socket hung up): reads go on until they find the end.
    private var peerClosed = false
    /// `read()` was called and that read has not happened yet.
    private var readRequested = false
    private var readScheduled = false
    private var ended = false
    /// Output room: an edge said so and no write has found EAGAIN since.
    private var canWrite = false
    private var queue: [ByteBuffer] = []
    private var head = 0
    /// Entries of `queue` (from `head`) that a flush released for sending.
    private var flushed = 0
    /// Bytes queued and not yet sent.
    public private(set) var queuedBytes = 0
    private var aboveHighMark = false
    private var outputShutRequested = false
    private var outputShut = false
    private var connectTimer: ReactorTimer?
    private var pendingConnectError: SystemError?
    private var readChunk: Int
    private let maximumReadChunk: Int
    /// The write queue's marks: above `high` the stream is not writable; back under `low`, the delegate hears.
    public let highMark: Int
    /// The queue size under which a stream that was over `highMark` is writable again.
    public let lowMark: Int

    /// Limits for a stream: the read size grows from `initialRead` up to `maximumRead` while reads fill it.
    public struct Options: Sendable {
        /// The first reads' size, in bytes.
        public var initialRead = 16_384
        /// The size reads grow to while they come back full.
        public var maximumRead = 262_144
        /// See `ReactorStream.lowMark`.
        public var lowMark = 128 * 1024
        /// See `ReactorStream.highMark`.
        public var highMark = 512 * 1024
        /// TCP_NODELAY (on by default, as SwiftNIO sets it).
        public var noDelay = true
        /// SO_KEEPALIVE.
        public var keepAlive = true
        /// The defaults.
        public init() {}
    }

    private init(reactor: Reactor, fd: CInt, state: State, options: Options) {
        self.reactor = reactor
        self.fd = fd
        self.state = state
        self.readChunk = min(options.initialRead, options.maximumRead)
        self.maximumReadChunk = options.maximumRead
        self.highMark = options.highMark
        self.lowMark = options.lowMark
    }

    /// Starts connecting to `address` (from `source` when given); the delegate (set it before the
    /// reactor's next turn) hears `streamConnected` or `streamConnectFailed`. Throws only when no
    /// socket could be made or registered (EMFILE, say); a refused or unreachable connect is reported.
    public static func connect(
        on reactor: Reactor, to address: SocketAddressStorage, from source: SocketAddressStorage? = nil, timeout: TimeAmount,
        options: Options = Options()
    ) throws(SystemError) -> ReactorStream {
        let fd = try SystemCall.socket(family: address.family, type: CInt(SOCK_STREAM.rawValue))
        let stream = ReactorStream(reactor: reactor, fd: fd, state: .connecting, options: options)
        do {
            try stream.setOptions(options)
            if let source { try SystemCall.bind(fd, to: source) }
            stream.registration = try reactor.register(fd, stream)
        } catch {
            SystemCall.close(fd)
            throw error
        }
        do {
            // Done at once or in progress: either way the registration's first output edge reports it.
            _ = try SystemCall.connect(fd, to: address)
        } catch {
            stream.pendingConnectError = error
            reactor.enqueueLocal { [weak stream] in stream?.connectEnded() }
            return stream
        }
        let timer = ReactorTimer(reactor: reactor, target: stream)
        timer.arm(at: .now() + timeout)
        stream.connectTimer = timer
        return stream
    }

    /// Takes over an accepted, non-blocking descriptor (closed here if it cannot be registered).
    public static func adopt(_ fd: CInt, on reactor: Reactor, options: Options = Options()) throws(SystemError) -> ReactorStream {
        let stream = ReactorStream(reactor: reactor, fd: fd, state: .open, options: options)
        do {
            try stream.setOptions(options)
            stream.registration = try reactor.register(fd, stream)
        } catch {
            SystemCall.close(fd)
            throw error
        }
        return stream
    }

    deinit {
        // The connect timer does not hold the stream: it must not fire once the stream is gone.
        connectTimer?.cancel()
    }

    private func setOptions(_ options: Options) throws(SystemError) {
        if options.keepAlive { try SystemCall.setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: 1) }
        if options.noDelay { try SystemCall.setOption(fd, level: CInt(IPPROTO_TCP), name: TCP_NODELAY, value: 1) }
    }

    /// Whether the queue is under its high mark.
    public var isWritable: Bool { !aboveHighMark && state == .open }
    /// Whether the socket is closed (by `close`, or once a drain ended).
    public var isClosed: Bool { state == .closed }

    // MARK: Events

    /// The socket's readiness: a connect's end, errors, room to write, input to read.
    public func reactorEvents(_ events: ReactorEvents) {
        if state == .connecting {
            guard !events.isDisjoint(with: [.writable, .error, .hangup]) else { return }
            // A failed connect reports EPOLLERR (and EPOLLHUP): only then is SO_ERROR asked for.
            if !events.isDisjoint(with: [.error, .hangup]) {
                let error = SystemCall.pendingError(fd)
                if error != 0 { pendingConnectError = SystemError("connect", errno: error) }
            }
            connectEnded()
            guard state == .open else { return }
        }
        if events.contains(.error), state != .closed {
            let error = SystemCall.pendingError(fd)
            if error != 0 { return fail(SystemError("socket", errno: error)) }
        }
        if events.contains(.writable) {
            canWrite = true
            if flushed > 0 { writeFlushed() }
        }
        if events.contains(.readable) || events.contains(.readClosed) {
            readable = true
            if !events.isDisjoint(with: [.readClosed, .hangup]) { peerClosed = true }
            if readRequested, !readScheduled { performRead() }
        }
    }

    private func connectEnded() {
        guard state == .connecting else { return }
        connectTimer?.cancel()
        connectTimer = nil
        if let error = pendingConnectError {
            let delegate = self.delegate
            closeNow()
            delegate?.streamConnectFailed(self, error)
            return
        }
        state = .open
        canWrite = true
        delegate?.streamConnected(self)
    }

    private func fail(_ error: SystemError) {
        guard state != .closed else { return }
        let wasDraining = state == .draining
        let delegate = self.delegate
        closeNow()
        if !wasDraining { delegate?.streamFailed(self, error) }
    }

    // MARK: Reading

    /// Reads once, soon: `streamRead` and `streamReadComplete` (or `streamEnded`) follow. One read per call.
    public func read() {
        guard state == .open, !ended, !readRequested else { return }
        readRequested = true
        if readable, !readScheduled {
            readScheduled = true
            // The stream itself is the task (`reactorTask`): no closure made per read.
            reactor.enqueueLocal(self)
        }
    }


    private func performRead() {
        guard readRequested, state == .open else { return }
        // From the reactor's ring, shared by every stream and datagram socket: a stream holds no
        // buffer between reads, and a reader that keeps what it was given gets it copied on write.
        var buffer = reactor.takeReceiveBuffer()
        defer { reactor.returnReceiveBuffer(buffer) }
        let count: Int?
        do {
            // At most the read size, whatever room the shared buffer has: what one read brings stays
            // within the owner's bound (the NAT's `tcpReadChunkBytes`).
            count = try SystemCall.read(fd, into: &buffer, minimum: readChunk, maximum: readChunk)
        } catch {
            return fail(error)
        }
        guard let count else {
            readable = false
            return
        }
        readRequested = false
        if count == 0 {
            readable = false
            ended = true
            delegate?.streamEnded(self)
            return
        }
        // A read shorter than asked took all there was (a stream socket fills what it is given):
        // input that comes later is a new edge, so no read to find EAGAIN is needed, unless the
        // peer's end was already reported (it would bring no edge of its own).
        if count < readChunk, !peerClosed { readable = false }
        if count >= readChunk, readChunk < maximumReadChunk { readChunk = min(maximumReadChunk, readChunk * 2) }
        delegate?.streamRead(self, buffer)
        delegate?.streamReadComplete(self)
    }

    // MARK: Writing

    /// Queues `data`; it goes out at the next `flush()`.
    public func write(_ data: ByteBuffer) {
        guard state == .open, !outputShutRequested else { return }
        // A list from the reactor's pool the first time: streams come and go without making one each.
        if queue.capacity == 0 { queue = reactor.takeWriteQueue() }
        queue.append(data)
        queuedBytes += data.readableBytes
        if queuedBytes > highMark { aboveHighMark = true }
    }

    /// Sends what was queued, as far as the socket takes it now; the rest when it has room.
    public func flush() {
        guard state == .open || state == .draining else { return }
        flushed = queue.count - head
        if canWrite, flushed > 0 { writeFlushed() }
    }

    private func writeFlushed() {
        var completed = 0
        while flushed > 0, state != .closed {
            let batch = min(flushed, Reactor.iovecCapacity)
            let written: Int?
            do {
                written = try queue.withUnsafeBufferPointer { all throws(SystemError) in
                    try SystemCall.send(fd, gathering: UnsafeBufferPointer(rebasing: all[head..<(head + batch)]), iovecs: reactor.iovecs)
                }
            } catch {
                return fail(error)
            }
            guard let written else {
                canWrite = false
                break
            }
            var remaining = written
            queuedBytes -= written
            while remaining > 0 {
                let size = queue[head].readableBytes
                if remaining >= size {
                    remaining -= size
                    queue[head] = ByteBuffer()
                    head += 1
                    flushed -= 1
                    completed += 1
                } else {
                    queue[head].moveReaderIndex(forwardBy: remaining)
                    remaining = 0
                }
            }
        }
        if head == queue.count {
            queue.removeAll(keepingCapacity: queue.capacity <= 256)
            head = 0
        } else if head > 64, head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        if flushed == 0 { queueDrained() }
        if completed > 0 { delegate?.streamWrote(self, pieces: completed) }
        if aboveHighMark, queuedBytes < lowMark, state == .open {
            aboveHighMark = false
            delegate?.streamWritable(self)
        }
    }

    private func queueDrained() {
        guard queue.count == head else { return }
        if outputShutRequested, !outputShut {
            outputShut = true
            do { try SystemCall.shutdownOutput(fd) } catch { return fail(error) }
        }
        if state == .draining { closeNow() }
    }

    /// Shuts the socket's output once everything queued has been sent (nothing is lost).
    public func shutdownOutput() {
        guard state == .open, !outputShutRequested else { return }
        outputShutRequested = true
        flush()
        if queue.count == head { queueDrained() }
    }

    // MARK: Closing

    /// Closes the socket. With `reset`, at once and with RST; otherwise after what is queued is
    /// sent (no more events reach the delegate either way).
    public func close(reset: Bool = false) {
        switch state {
        case .closed, .draining: return
        case .connecting:
            closeNow()
        case .open:
            if reset {
                try? SystemCall.setLingerZero(fd)
                closeNow()
            } else if queue.count > head {
                state = .draining
                readRequested = false
                flush()
            } else {
                closeNow()
            }
        }
    }

    private func closeNow() {
        guard state != .closed else { return }
        state = .closed
        connectTimer?.cancel()
        connectTimer = nil
        if let registration { reactor.deregister(registration, fd: fd, closing: true) }
        registration = nil
        SystemCall.close(fd)
        queue.removeAll(keepingCapacity: true)
        reactor.returnWriteQueue(queue)
        queue = []
        head = 0
        flushed = 0
        queuedBytes = 0
        delegate = nil
    }
}
extension ReactorStream: ReactorTask, ReactorTimerTarget {
    /// The read `read()` queued.
    public func reactorTask() {
        readScheduled = false
        performRead()
    }

    /// The connect timed out.
    public func timerFired(_ timer: ReactorTimer) {
        guard state == .connecting else { return }
        pendingConnectError = SystemError("connect", errno: ETIMEDOUT)
        connectEnded()
    }
}
#endif
