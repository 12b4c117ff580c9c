// One bare Ethernet frame per datagram on a unix datagram socket: vfkit's unixgram network device
// and qemu's `-netdev dgram` (../shared/notes/qemu-vm.md: qemu sends from its local path to ours;
// we answer with sendto to its path).

public import NIOCore
import NIOPosix
public import VPNKitBase

/// A unix datagram socket bound at our path, carrying one frame per datagram. Use it on its event
/// loop only.
///
/// The peer is the fixed path given to `bind`, or else the source of the first well-formed datagram
/// received; until it is known `send` drops. Datagrams from any other source, and datagrams longer
/// than `SocketTransportOptions.maxFrameSize`, are ignored and counted in `receiveErrors`.
/// Reading starts when `onFrame` is set. There is no end of stream: `onClose` is called only when the
/// socket fails.
///
/// A limitation of SwiftNIO 2.101 (DatagramChannel.singleReadFromSocket): a datagram from an
/// unbound (unnamed) socket has no source address, which NIO cannot convert, and NIO closes the
/// channel (`onClose` with `SocketAddressError.unsupported`). qemu and vfkit always bind their end;
/// keep the socket's directory closed to other users.
public final class DatagramFrameTransport: FrameTransport {
    public let mtu: Int
    /// Our socket's path.
    public let path: String
    public var guestAddress: MACAddress? { nil }
    public var onFrame: ((ByteBuffer) -> Void)? {
        get { handler.onFrame }
        set { handler.onFrame = newValue }
    }
    public var onClose: (((any Error)?) -> Void)? {
        get { handler.onClose }
        set { handler.onClose = newValue }
    }
    public var statistics: TransportStatistics { handler.statistics }
    /// The peer's address, once known.
    public var peer: SocketAddress? { handler.peer }
    /// Socket errors that did not end the transport (a send to a peer that has gone away, say).
    public var socketErrors: UInt64 { handler.socketErrors }

    private let handler: DatagramFrameHandler
    private var socketFile: UnixSocketFile?

    private init(handler: DatagramFrameHandler, mtu: Int, path: String) {
        self.handler = handler
        self.mtu = mtu
        self.path = path
        self.socketFile = UnixSocketFile(boundAt: path)
    }

    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool { handler.send(frame) }

    /// Closes the socket and removes its file (if it is still ours). Idempotent.
    public func close() {
        handler.close()
        socketFile?.remove()
        socketFile = nil
    }

    /// Binds a unix datagram socket at `path`, first removing a stale socket file there (any other
    /// kind of file makes the bind fail). `peer`, when given, is the only path we exchange frames
    /// with (compared as text with the source path of what arrives); otherwise the first sender is.
    /// The transport is bound to `eventLoop`; the future completes there. May be called from any
    /// thread.
    public static func bind(
        path: String, peer: String? = nil, mtu: Int = 1500, options: SocketTransportOptions = .init(),
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<DatagramFrameTransport>> {
        let peerAddress: SocketAddress?
        do {
            peerAddress = try peer.map { try SocketAddress(unixDomainSocketPath: $0) }
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return DatagramBootstrap(group: eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.maxMessagesPerRead, value: 16)
            // One byte more than the maximum, so that a longer datagram shows (truncated) as too long.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: options.maxFrameSize + 1))
            .channelOption(.writeBufferWaterMark, value: options.writeBufferWaterMark)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        DatagramFrameHandler(maxFrameSize: options.maxFrameSize, peer: peerAddress))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: DatagramFrameHandler.self)
                return NIOLoopBound(DatagramFrameTransport(handler: handler, mtu: mtu, path: path), eventLoop: channel.eventLoop)
            }
    }
}

/// The channel handler behind `DatagramFrameTransport`.
final class DatagramFrameHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let maxFrameSize: Int
    private(set) var peer: SocketAddress?
    private(set) var statistics = TransportStatistics()
    private(set) var socketErrors: UInt64 = 0
    var onFrame: ((ByteBuffer) -> Void)? {
        didSet { if onFrame != nil { setReading(true) } }
    }
    var onClose: (((any Error)?) -> Void)?

    private var context: ChannelHandlerContext?
    private var closed = false
    private var reading = false
    private var flushScheduled = false
    private var lastError: (any Error)?

    init(maxFrameSize: Int, peer: SocketAddress?) {
        self.maxFrameSize = maxFrameSize
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
            onFrame = nil
            onClose = nil
            report?(lastError ?? TransportError.closed)
        }
        context.fireChannelInactive()
    }

    func send(_ frame: ByteBuffer) -> Bool {
        guard !closed, let context, let peer, frame.readableBytes <= maxFrameSize, context.channel.isWritable else {
            statistics.sendDrops &+= 1
            return false
        }
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: peer, data: frame)), promise: nil)
        statistics.countSent(frame.readableBytes)
        if !flushScheduled {
            flushScheduled = true
            context.eventLoop.assumeIsolated().execute { [self] in
                flushScheduled = false
                self.context?.flush()
            }
        }
        return true
    }

    func close() {
        guard !closed else { return }
        closed = true
        onFrame = nil
        onClose = nil
        context?.flush()
        context?.close(promise: nil)
    }

    private func setReading(_ on: Bool) {
        guard on != reading, !closed, let context, context.channel.isActive else { return }
        reading = on
        try? context.channel.syncOptions?.setOption(.autoRead, value: on)
    }
}
