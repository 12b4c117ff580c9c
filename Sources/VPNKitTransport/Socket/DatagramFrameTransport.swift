// One bare Ethernet frame per datagram on a unix datagram socket: vfkit's unixgram network device
// and qemu's `-netdev dgram` (docs/platform-facts.md: qemu sends from its local path to ours;
// we answer with sendto to its path).

public import NIOCore
import NIOPosix
public import VPNKitBase

#if canImport(Glibc)
import Glibc
private let closeDescriptor = Glibc.close
#elseif canImport(Darwin)
import Darwin
private let closeDescriptor = Darwin.close
#endif

/// A unix datagram socket bound at our path, carrying one frame per datagram. Use it on its event
/// loop only.
///
/// The peer is the fixed path given to `bind`, or else the source of the first well-formed datagram
/// received; until it is known `send` drops. Datagrams from any other source, and datagrams longer
/// than `SocketTransportOptions.maxFrameSize`, are ignored and counted in `receiveErrors`.
/// Reading starts when `onFrame` is set. There is no end of stream: `onClose` is called only when the
/// socket fails.
///
/// `send` hands each frame to the kernel at once with a non-blocking sendto(2) (see
/// UnixDatagramSocket.swift for why not through NIO's writes). When the peer's receive queue is full
/// (an unconnected receiver such as qemu's takes only `net.unix.max_dgram_qlen` datagrams, 10 by
/// default), frames wait in order, up to `SocketTransportOptions.maxPendingBytes`, and are retried
/// every 250 µs; beyond the budget they are dropped and counted in `sendDrops`. `framesSent` counts
/// frames handed to the kernel or waiting for it; a later send failure is counted in `socketErrors`.
///
/// A limitation of SwiftNIO 2.101 (DatagramChannel.singleReadFromSocket): a datagram from an
/// unbound (unnamed) socket has no source address, which NIO cannot convert, and NIO closes the
/// channel (`onClose` with `SocketAddressError.unsupported`). qemu and vfkit always bind their end;
/// keep the socket's directory closed to other users.
public final class DatagramFrameTransport: FrameTransport {
    /// The MTU given to `bind`; the datagram framing does not carry one.
    public let mtu: Int
    /// Our socket's path; empty for a descriptor handed over with `adopt`.
    public let path: String
    /// Always nil: the datagram framing does not carry the guest's MAC address.
    public var guestAddress: MACAddress? { nil }
    /// Called on the event loop for every accepted datagram, copied into a buffer of its own size.
    /// Setting it starts reading.
    public var onFrame: ((ByteBuffer) -> Void)? {
        get { handler.onFrame }
        set { handler.onFrame = newValue }
    }
    /// Called once, with the last socket error (or `TransportError.closed`), when the socket fails; not
    /// after `close()`.
    public var onClose: (((any Error)?) -> Void)? {
        get { handler.onClose }
        set { handler.onClose = newValue }
    }
    /// This socket's counters. `framesSent` includes frames still waiting for room in the peer's queue.
    public var statistics: TransportStatistics { handler.statistics }
    /// The peer's address, once known.
    public var peer: SocketAddress? { handler.peer }
    /// Socket errors that did not end the transport (a send to a peer that has gone away, say).
    public var socketErrors: UInt64 { handler.socketErrors }

    private let handler: DatagramFrameHandler
    private var socketFile: UnixSocketFile?

    private init(handler: DatagramFrameHandler, mtu: Int, socketFile: UnixSocketFile?) {
        self.handler = handler
        self.mtu = mtu
        self.path = socketFile?.path ?? ""
        self.socketFile = socketFile
    }

    /// Sends one frame as one datagram to the peer, or queues it while the peer's receive queue is full.
    ///
    /// Returns false, counted in `sendDrops`, when the socket is closed, no peer is known yet, the frame
    /// is longer than `SocketTransportOptions.maxFrameSize`, sendto(2) fails with an error other than
    /// EAGAIN, or the queue would pass `maxPendingBytes`.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool { handler.send(frame) }

    /// Closes the socket and removes its file (if it is still ours). Idempotent.
    public func close() {
        handler.close()
        socketFile?.remove()
        socketFile = nil
    }

    /// Binds a unix datagram socket at `path`, first removing a socket file already there (any other
    /// kind of file makes the bind fail); the file has the mode `options.socketFileMode` from the
    /// moment it appears. `peer`, when given, is the only path we exchange frames with (compared as
    /// text with the source path of what arrives); otherwise the first sender is. The transport is
    /// bound to `eventLoop`; the future completes there. May be called from any thread.
    public static func bind(
        path: String, peer: String? = nil, mtu: Int = 1500, options: SocketTransportOptions = .init(),
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<DatagramFrameTransport>> {
        let peerAddress: SocketAddress?
        let fd: Int32
        let socketFile: UnixSocketFile
        do {
            peerAddress = try peer.map { try SocketAddress(unixDomainSocketPath: $0) }
            (fd, socketFile) = try UnixDatagramSocket.bind(path: path, mode: options.socketFileMode)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return DatagramBootstrap(group: eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.maxMessagesPerRead, value: 16)
            // One byte more than the maximum, so that a longer datagram shows (truncated) as too long.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: options.maxFrameSize + 1))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        DatagramFrameHandler(fd: fd, maxFrameSize: options.maxFrameSize, maxPendingBytes: options.maxPendingBytes, peer: peerAddress))
                }
            }
            .withBoundSocket(fd)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: DatagramFrameHandler.self)
                return NIOLoopBound(DatagramFrameTransport(handler: handler, mtu: mtu, socketFile: socketFile), eventLoop: channel.eventLoop)
            }
            .flatMapErrorThrowing { error in
                // Nobody reads behind the file: it goes.
                socketFile.remove()
                throw error
            }
    }
}

extension DatagramFrameTransport {
    /// Takes over `descriptor`, a connected unix datagram socket (one end of a
    /// `socketpair(AF_UNIX, SOCK_DGRAM)`, as Virtualization.framework's file-handle attachment, vfkit
    /// and krunkit hand over) carrying one frame per datagram. The transport owns the descriptor from
    /// now on and closes it; on failure it is closed too. Frames go to the connected peer; a
    /// zero-length datagram reads as the end of the link. The future completes on `eventLoop`.
    public static func adopt(
        descriptor: Int32, mtu: Int = 1500, options: SocketTransportOptions = .init(), on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<DatagramFrameTransport>> {
        let placeholder: SocketAddress
        do {
            placeholder = try SocketAddress(unixDomainSocketPath: "socketpair")
        } catch {
            _ = closeDescriptor(descriptor)
            return eventLoop.makeFailedFuture(error)
        }
        return NIOPipeBootstrap(group: eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.maxMessagesPerRead, value: 16)
            // One byte more than the maximum, so that a longer datagram shows (truncated) as too long.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: options.maxFrameSize + 1))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = DatagramFrameHandler(
                        fd: descriptor, maxFrameSize: options.maxFrameSize, maxPendingBytes: options.maxPendingBytes, peer: placeholder,
                        connected: true)
                    try channel.pipeline.syncOperations.addHandlers([ConnectedDatagramReader(source: placeholder), handler])
                }
            }
            .takingOwnershipOfDescriptor(inputOutput: descriptor)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: DatagramFrameHandler.self)
                return NIOLoopBound(DatagramFrameTransport(handler: handler, mtu: mtu, socketFile: nil), eventLoop: channel.eventLoop)
            }
    }
}

/// On a connected datagram socket each read(2) returns one datagram, from the one peer: this turns
/// it into the addressed form `DatagramFrameHandler` takes.
final class ConnectedDatagramReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = AddressedEnvelope<ByteBuffer>
    let source: SocketAddress
    init(source: SocketAddress) { self.source = source }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(AddressedEnvelope(remoteAddress: source, data: unwrapInboundIn(data))))
    }
}

/// The channel handler behind `DatagramFrameTransport`: NIO reads, we write (UnixDatagramSocket.swift).
final class DatagramFrameHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    /// How soon frames waiting for a full peer queue are tried again.
    static let retryInterval = TimeAmount.microseconds(250)

    let maxFrameSize: Int
    let maxPendingBytes: Int
    private(set) var peer: SocketAddress?
    private(set) var statistics = TransportStatistics()
    private(set) var socketErrors: UInt64 = 0
    var onFrame: ((ByteBuffer) -> Void)? {
        didSet { if onFrame != nil { setReading(true) } }
    }
    var onClose: (((any Error)?) -> Void)?

    /// Owned by the channel; written only while `closed` is false (see UnixDatagramSocket.swift).
    private let fd: Int32
    private var context: ChannelHandlerContext?
    private var closed = false
    private var reading = false
    private var lastError: (any Error)?
    /// Frames accepted while the peer's queue was full, oldest first.
    private var waiting = CircularBuffer<ByteBuffer>()
    private var waitingBytes = 0
    private var retry: Scheduled<Void>?

    /// Whether the socket is connected (sends name no address).
    private let connected: Bool

    init(fd: Int32, maxFrameSize: Int, maxPendingBytes: Int, peer: SocketAddress?, connected: Bool = false) {
        self.fd = fd
        self.connected = connected
        self.maxFrameSize = maxFrameSize
        self.maxPendingBytes = maxPendingBytes
        self.peer = peer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if onFrame != nil { setReading(true) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed, let deliver = onFrame else { return }
        let envelope = unwrapInboundIn(data)
        let length = envelope.data.readableBytes
        guard length <= maxFrameSize else {
            statistics.receiveErrors &+= 1
            return
        }
        if let peer {
            guard envelope.remoteAddress == peer else {
                statistics.receiveErrors &+= 1
                return
            }
        } else {
            peer = envelope.remoteAddress
        }
        // The receive buffer has room for the largest frame; copy the frame out so that a frame kept
        // by the receiver does not pin a buffer that size, and NIO can reuse it for the next read.
        var frame = context.channel.allocator.buffer(capacity: length)
        frame.writeImmutableBuffer(envelope.data)
        statistics.countReceived(length)
        deliver(frame)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // NIO closes the channel after a fatal error (channelInactive follows); others are counted.
        socketErrors &+= 1
        lastError = error
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !closed {
            closed = true
            let report = onClose
            releaseResources()
            report?(lastError ?? TransportError.closed)
        }
        context.fireChannelInactive()
    }

    /// Sends at once when nothing is waiting; otherwise, or when the peer's queue is full (EAGAIN),
    /// queues the frame within the pending-bytes budget and retries shortly. A frame over the budget
    /// is dropped and counted.
    func send(_ frame: ByteBuffer) -> Bool {
        guard !closed, let peer, frame.readableBytes <= maxFrameSize else {
            statistics.sendDrops &+= 1
            return false
        }
        if waiting.isEmpty {
            let error = UnixDatagramSocket.send(fd: fd, frame, to: connected ? nil : peer)
            if error == 0 {
                statistics.countSent(frame.readableBytes)
                return true
            }
            if !Self.isWouldBlock(error) {
                statistics.sendDrops &+= 1
                recordSendError(error)
                return false
            }
        }
        guard waitingBytes + frame.readableBytes <= maxPendingBytes else {
            statistics.sendDrops &+= 1
            return false
        }
        waiting.append(frame)
        waitingBytes += frame.readableBytes
        statistics.countSent(frame.readableBytes)
        scheduleRetry()
        return true
    }

    /// Sends queued frames until the peer's queue is full again.
    private func sendWaiting() {
        guard !closed, let peer else { return }
        while let frame = waiting.first {
            let error = UnixDatagramSocket.send(fd: fd, frame, to: connected ? nil : peer)
            if Self.isWouldBlock(error) {
                scheduleRetry()
                return
            }
            waiting.removeFirst()
            waitingBytes -= frame.readableBytes
            if error != 0 { recordSendError(error) }
        }
    }

    /// The kernel gives no wakeup when an unconnected peer's queue drains (poll reports the socket
    /// writable all along), so retry on a short timer while frames wait.
    private func scheduleRetry() {
        guard retry == nil, let context else { return }
        retry = context.eventLoop.assumeIsolated().scheduleTask(in: Self.retryInterval) { [self] in
            retry = nil
            sendWaiting()
        }
    }

    private func recordSendError(_ error: Int32) {
        socketErrors &+= 1
        lastError = TransportError.systemCall("sendto \(peer.map { "\($0)" } ?? "?")", errno: error)
    }

    private static func isWouldBlock(_ error: Int32) -> Bool { error == EAGAIN || error == EWOULDBLOCK }

    func close() {
        guard !closed else { return }
        closed = true
        releaseResources()
        context?.close(promise: nil)
    }

    private func releaseResources() {
        onFrame = nil
        onClose = nil
        retry?.cancel()
        retry = nil
        waiting.removeAll()
        waitingBytes = 0
    }

    private func setReading(_ on: Bool) {
        guard on != reading, !closed, let context, context.channel.isActive else { return }
        reading = on
        try? context.channel.syncOptions?.setOption(.autoRead, value: on)
    }
}
