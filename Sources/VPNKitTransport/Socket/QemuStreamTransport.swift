// qemu's `-netdev stream` framing over a unix stream socket: every frame is preceded by its length
// as 4 bytes, big-endian, and nothing else (docs/platform-facts.md, seen on the wire).
// `QemuStreamTransport.connect` is the client role (qemu runs with server=on); `QemuStreamListener`
// is the server role (qemu runs with server=off and connects to us).

public import NIOCore
import NIOPosix
public import VPNKitBase

/// One qemu `-netdev stream` connection. Use it on its event loop only.
///
/// Reading starts when `onFrame` is set. A clean end of the stream gives `onClose(nil)`; a length
/// over `SocketTransportOptions.maxFrameSize`, or an end inside a frame, gives
/// `onClose(TransportError.framing)`; a socket error gives `onClose(error)`.
public final class QemuStreamTransport: FrameTransport {
    /// The MTU given at creation; the qemu framing does not carry one.
    public let mtu: Int
    /// Always nil: the qemu stream framing does not carry the guest's MAC address.
    public var guestAddress: MACAddress? { nil }
    /// Called on the event loop for every frame received. Setting it starts reading.
    public var onFrame: ((ByteBuffer) -> Void)? {
        get { handler.onFrame }
        set { handler.onFrame = newValue }
    }
    /// Called once when the connection ends by itself (see the type's description); not after `close()`.
    public var onClose: (((any Error)?) -> Void)? {
        get { handler.onClose }
        set { handler.onClose = newValue }
    }
    /// This connection's counters.
    public var statistics: TransportStatistics { handler.statistics }

    let handler: FramedStreamHandler

    init(handler: FramedStreamHandler, mtu: Int) {
        self.handler = handler
        self.mtu = mtu
    }

    static func makeHandler(options: SocketTransportOptions) -> FramedStreamHandler {
        FramedStreamHandler(prefix: .uint32BigEndian, maxReceiveFrame: options.maxFrameSize, maxSendFrame: options.maxFrameSize)
    }

    /// Queues one frame behind its 4-byte length; small frames are batched and flushed once per
    /// event-loop turn. Returns false, counted in `sendDrops`, when the connection is closed, the frame
    /// is longer than `SocketTransportOptions.maxFrameSize`, or the pending output is over
    /// `maxPendingBytes`.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool { handler.send(frame) }

    /// Flushes queued frames and closes the connection, without calling `onClose`. Idempotent.
    public func close() { handler.close() }

    /// Connects to the unix stream socket at `path` (where qemu listens with server=on). The
    /// transport is bound to `eventLoop`; the future completes there. May be called from any thread.
    public static func connect(
        path: String, mtu: Int = 1500, options: SocketTransportOptions = .init(), on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<QemuStreamTransport>> {
        bootstrap(options: options, on: eventLoop)
            .connect(unixDomainSocketPath: path)
            .flatMapThrowing { channel in try transport(of: channel, mtu: mtu) }
    }

    /// Takes over `descriptor`, a connected stream socket carrying qemu's framing (what
    /// `qemu -netdev socket,fd=` or `-netdev stream` with an inherited descriptor use: each frame
    /// behind a 4-byte big-endian length). The transport owns the descriptor from now on and closes
    /// it. The future completes on `eventLoop`.
    public static func adopt(
        descriptor: Int32, mtu: Int = 1500, options: SocketTransportOptions = .init(), on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<QemuStreamTransport>> {
        bootstrap(options: options, on: eventLoop)
            .withConnectedSocket(descriptor)
            .flatMapThrowing { channel in try transport(of: channel, mtu: mtu) }
    }

    /// The client side of a qemu stream connection, whether it connects or adopts a descriptor.
    private static func bootstrap(options: SocketTransportOptions, on eventLoop: any EventLoop) -> ClientBootstrap {
        ClientBootstrap(group: eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.writeBufferWaterMark, value: options.writeBufferWaterMark)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(makeHandler(options: options))
                }
            }
    }

    private static func transport(of channel: any Channel, mtu: Int) throws -> NIOLoopBound<QemuStreamTransport> {
        let handler = try channel.pipeline.syncOperations.handler(type: FramedStreamHandler.self)
        handler.activateIfActive()
        return NIOLoopBound(QemuStreamTransport(handler: handler, mtu: mtu), eventLoop: channel.eventLoop)
    }
}

/// Listens on a unix stream socket for qemu (`-netdev stream,server=off,...`) and hands each accepted
/// connection's transport to `onConnection`, on the event loop, as soon as it is connected. The
/// listener does not keep the connections: closing it stops accepting and removes the socket file;
/// the transports live on until closed.
public final class QemuStreamListener {
    /// The socket file's path.
    public let path: String
    private let server: UnixStreamServer

    private init(server: UnixStreamServer) {
        self.server = server
        self.path = server.path
    }

    /// Binds `path`, first removing a stale socket file there (any other kind of file makes the bind
    /// fail); the file has the mode `options.socketFileMode` from the moment it appears. Call on
    /// `eventLoop`: `onConnection` is called there.
    public static func bind(
        path: String, mtu: Int = 1500, options: SocketTransportOptions = .init(), on eventLoop: any EventLoop,
        onConnection: @escaping (QemuStreamTransport) -> Void
    ) -> EventLoopFuture<NIOLoopBound<QemuStreamListener>> {
        UnixStreamServer.bind(path: path, options: options, on: eventLoop) { channel in
            let handler = QemuStreamTransport.makeHandler(options: options)
            let transport = QemuStreamTransport(handler: handler, mtu: mtu)
            handler.onReady = { onConnection(transport) }
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        .map { server in NIOLoopBound(QemuStreamListener(server: server.value), eventLoop: eventLoop) }
    }

    /// Hears when the listener ran out of descriptors and paused (see `PausingListener`), and
    /// accepts that failed. Called on the event loop.
    public var onListenerEvent: ((PausingListener.Event) -> Void)? {
        get { server.report }
        set { server.report = newValue }
    }

    /// Stops accepting and removes the socket file. Idempotent.
    public func close() { server.close() }
}
