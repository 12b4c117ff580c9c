// Length-prefixed frames over a SwiftNIO stream channel: the machinery shared by the qemu stream
// transport (4-byte big-endian length) and the vmnet transport (2-byte little-endian length, after
// a handshake).
//
// Receive: bytes are collected in one buffer and cut into frames; a frame is handed on as a slice of
// the buffer it was read into (no copy). A length over the maximum ends the connection at once (the
// stream is out of sync), without waiting for the bytes. Reading is off until the user sets
// `onFrame`, so no frame is lost or buffered without bound while nobody listens.
//
// Send: frames are appended, prefix and bytes, to one output buffer (large frames are written as
// their own buffer, without a copy); the buffer is written and flushed once per event-loop tick, or
// earlier when it reaches `flushBatchBytes`, so a burst of small frames costs a few syscalls. NIO's write-buffer high watermark is the pending-bytes
// budget: while the channel is not writable, `send` drops and counts.

public import NIOCore

/// Limits shared by the socket transports.
public struct SocketTransportOptions: Sendable, Hashable {
    /// The longest frame, in bytes, taken from the peer; default 65550. A longer one is a framing error
    /// (counted in `receiveErrors`; a stream connection is closed because it is out of sync). Also the
    /// longest frame `send` takes. The vmnet transport caps it at 65535 (its length field has 16 bits).
    public var maxFrameSize: Int
    /// Bytes that may wait to be written while the peer does not read; default 4 MiB. Beyond them `send` drops
    /// (counted in `sendDrops`). At most about this much plus one output batch plus one frame is held.
    public var maxPendingBytes: Int
    /// vmnet only: the time a client has to complete its handshake before the connection is closed; default 10 s.
    public var handshakeTimeout: TimeAmount
    /// Listeners and datagram sockets: the permission bits of the socket file they create; default
    /// 0o600, the owner only. The file appears at its path with these bits already set (it is bound
    /// in a private directory and linked into place), whatever the umask. Connecting to the socket,
    /// or sending to it, needs write permission, and whoever can reach the guest's socket can join
    /// its link: 0o660 lets the file's group in too (for a VM running as another user of it).
    public var socketFileMode: UInt32

    /// Creates the limits: 65550-byte frames, 4 MiB of pending output, a 10-second handshake and
    /// socket files for the owner only by default. Traps when `maxFrameSize` is negative,
    /// `maxPendingBytes` is not positive or `socketFileMode` has bits beyond 0o777.
    public init(
        maxFrameSize: Int = 65550, maxPendingBytes: Int = 4 << 20, handshakeTimeout: TimeAmount = .seconds(10),
        socketFileMode: UInt32 = 0o600
    ) {
        precondition(maxFrameSize >= 0 && maxPendingBytes > 0, "limits must be positive")
        precondition(socketFileMode & ~0o777 == 0, "socketFileMode holds permission bits only")
        self.maxFrameSize = maxFrameSize
        self.maxPendingBytes = maxPendingBytes
        self.handshakeTimeout = handshakeTimeout
        self.socketFileMode = socketFileMode
    }

    var writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark {
        .init(low: maxPendingBytes / 2, high: maxPendingBytes)
    }
}

/// How a stream framing encodes a frame's length.
package enum LengthPrefix {
    /// qemu `-netdev stream`: 4 bytes, big-endian (docs/platform-facts.md).
    case uint32BigEndian
    /// vmnet: 2 bytes, little-endian (moby/vpnkit src/hostnet/vmnet.ml, module Packet).
    case uint16LittleEndian

    var size: Int {
        switch self {
        case .uint32BigEndian: return 4
        case .uint16LittleEndian: return 2
        }
    }

    /// The largest length the prefix can express.
    var largestLength: Int {
        switch self {
        case .uint32BigEndian: return Int(UInt32.max)
        case .uint16LittleEndian: return Int(UInt16.max)
        }
    }

    /// The length at the buffer's reader index, nil when the prefix has not fully arrived.
    func peekLength(_ buffer: ByteBuffer) -> Int? {
        switch self {
        case .uint32BigEndian:
            return buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self).map { Int($0) }
        case .uint16LittleEndian:
            return buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt16.self).map { Int($0) }
        }
    }

    func write(_ length: Int, to buffer: inout ByteBuffer) {
        switch self {
        case .uint32BigEndian: buffer.writeInteger(UInt32(length), endianness: .big)
        case .uint16LittleEndian: buffer.writeInteger(UInt16(length), endianness: .little)
        }
    }
}

/// What a handshake that runs before frames flow decided after the bytes it was given.
package enum PreambleStep {
    case needMore
    case done
    case failed(TransportError)
}

/// A handshake run on a stream before frames flow (the vmnet negotiation).
package protocol StreamPreamble: AnyObject {
    /// Consumes handshake bytes from `input`, leaving any bytes that follow the handshake, and
    /// appends the replies to send to `reply`.
    func consume(_ input: inout ByteBuffer, reply: inout ByteBuffer) -> PreambleStep
}

/// The channel handler behind the stream transports. Lives on its channel's event loop only.
package final class FramedStreamHandler: ChannelInboundHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    /// Frames at least this long are written as their own buffer instead of being copied.
    static let zeroCopyThreshold = 16 << 10
    /// The output buffer is written and flushed once it holds this much, without waiting for the
    /// end of the tick.
    static let flushBatchBytes = 128 << 10

    private enum State {
        /// Waiting for the channel to become active.
        case inactive
        /// Running the handshake.
        case preamble
        /// Frames flow.
        case open
        /// Closed by the user, by the peer or by an error; nothing more happens.
        case closed
    }

    let prefix: LengthPrefix
    let maxReceiveFrame: Int
    let maxSendFrame: Int
    private(set) var statistics = TransportStatistics()

    package var onFrame: ((ByteBuffer) -> Void)? {
        didSet { if onFrame != nil { scheduleDelivery() } }
    }
    package var onClose: (((any Error)?) -> Void)?
    /// Called once when frames can flow (channel active, handshake done): where the transport is
    /// handed to its user.
    var onReady: (() -> Void)?
    /// Called instead of `onReady`/`onClose` when the connection ends before it was ready.
    package var onPreambleFailure: ((any Error) -> Void)?

    private var preamble: (any StreamPreamble)?
    private let preambleTimeout: TimeAmount
    private var preambleTimer: Scheduled<Void>?

    private var state = State.inactive
    private var context: ChannelHandlerContext?
    /// Kept after the handler is removed (NIO removes it after the channel closes), so that frames
    /// still waiting for `onFrame` can be delivered then.
    private var eventLoop: (any EventLoop)?
    /// Bytes read and not yet cut into frames.
    private var input: ByteBuffer?
    /// Frames coalesced since the last write.
    private var output: ByteBuffer?
    private var unflushed = false
    private var flushScheduled = false
    private var deliveryScheduled = false
    private var reading = false
    /// The peer closed while frames were still waiting for `onFrame`.
    private var peerEnded = false

    package init(prefix: LengthPrefix, maxReceiveFrame: Int, maxSendFrame: Int, preamble: (any StreamPreamble)? = nil,
         preambleTimeout: TimeAmount = .seconds(10)) {
        self.prefix = prefix
        self.maxReceiveFrame = min(maxReceiveFrame, prefix.largestLength)
        self.maxSendFrame = min(maxSendFrame, prefix.largestLength)
        self.preamble = preamble
        self.preambleTimeout = preambleTimeout
    }

    // MARK: NIO events

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.eventLoop = context.eventLoop
        if context.channel.isActive { activate() }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    package func channelActive(context: ChannelHandlerContext) {
        activate()
        context.fireChannelActive()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        switch state {
        case .preamble, .open: break
        case .inactive, .closed: return
        }
        if input == nil {
            input = buffer
        } else {
            // Move a partial frame to the front before appending so the buffer does not keep growing.
            if input!.readerIndex > 0 { input!.discardReadBytes() }
            input!.writeBuffer(&buffer)
        }
        if state == .preamble { runPreamble() }
        if state == .open, onFrame != nil { deliverFrames() }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .closed:
            break
        case .inactive, .preamble:
            fail(TransportError.handshake("the peer closed the connection during the handshake"))
        case .open:
            peerEnded = true
            if onFrame != nil { deliverFrames() }
            // Without onFrame, the end is reported once frames waiting for it have been delivered.
        }
        context.fireChannelInactive()
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
    }

    // MARK: Transport operations (on the event loop)

    /// Makes the handler ready if its channel is already active (the connect future completes before
    /// channelActive is fired).
    func activateIfActive() {
        if let context, context.channel.isActive { activate() }
    }

    func send(_ frame: ByteBuffer) -> Bool {
        guard state == .open, let context else {
            statistics.sendDrops &+= 1
            return false
        }
        let length = frame.readableBytes
        guard length <= maxSendFrame, context.channel.isWritable else {
            statistics.sendDrops &+= 1
            return false
        }
        if length >= Self.zeroCopyThreshold {
            var header = output ?? context.channel.allocator.buffer(capacity: prefix.size)
            output = nil
            prefix.write(length, to: &header)
            context.write(wrapOutboundOut(header), promise: nil)
            context.write(wrapOutboundOut(frame), promise: nil)
            unflushed = true
        } else {
            if output == nil {
                output = context.channel.allocator.buffer(capacity: max(2048, prefix.size + length))
            }
            prefix.write(length, to: &output!)
            output!.writeImmutableBuffer(frame)
            if output!.readableBytes >= Self.flushBatchBytes { flushNow() }
        }
        statistics.countSent(length)
        scheduleFlush()
        return true
    }

    func close() {
        guard state != .closed else { return }
        state = .closed
        flushNow()
        releaseResources()
        context?.close(promise: nil)
    }

    // MARK: Internals

    private func activate() {
        guard state == .inactive, let context else { return }
        if preamble != nil {
            state = .preamble
            preambleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: preambleTimeout) { [self] in
                if state == .preamble { fail(TransportError.handshake("timed out after \(preambleTimeout)")) }
            }
            setReading(true)
        } else {
            becomeOpen()
        }
    }

    private func becomeOpen() {
        state = .open
        setReading(onFrame != nil)
        let ready = onReady
        onReady = nil
        onPreambleFailure = nil
        ready?()
        if onFrame != nil { scheduleDelivery() }
    }

    private func runPreamble() {
        guard let preamble, let context, input != nil else { return }
        var reply = context.channel.allocator.buffer(capacity: 0)
        let step = preamble.consume(&input!, reply: &reply)
        if reply.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
        }
        switch step {
        case .needMore:
            break
        case .done:
            self.preamble = nil
            preambleTimer?.cancel()
            preambleTimer = nil
            becomeOpen()
        case .failed(let error):
            fail(error)
        }
    }

    /// Cuts complete frames out of `input` and hands them to `onFrame`.
    private func deliverFrames() {
        while state == .open, let deliver = onFrame, input != nil, let length = prefix.peekLength(input!) {
            guard length <= maxReceiveFrame else {
                statistics.receiveErrors &+= 1
                fail(TransportError.framing("the peer announced a frame of \(length) bytes; the maximum is \(maxReceiveFrame)"))
                return
            }
            guard input!.readableBytes >= prefix.size + length else { break }
            input!.moveReaderIndex(forwardBy: prefix.size)
            let frame = input!.readSlice(length: length)!
            statistics.countReceived(length)
            deliver(frame)
        }
        if let buffered = input, buffered.readableBytes == 0 { input = nil }
        if peerEnded, state == .open {
            if let buffered = input, buffered.readableBytes > 0 {
                statistics.receiveErrors &+= 1
                fail(TransportError.framing("the connection ended inside a frame (\(buffered.readableBytes) bytes left over)"))
            } else {
                finish(nil)
            }
        }
    }

    private func scheduleDelivery() {
        guard !deliveryScheduled, let eventLoop else { return }
        deliveryScheduled = true
        eventLoop.assumeIsolated().execute { [self] in
            deliveryScheduled = false
            guard state == .open, onFrame != nil else { return }
            setReading(true)
            deliverFrames()
        }
    }

    private func setReading(_ on: Bool) {
        guard on != reading, let context, context.channel.isActive else { return }
        reading = on
        try? context.channel.syncOptions?.setOption(.autoRead, value: on)
    }

    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flushNow()
        }
    }

    private func writeOutput() {
        guard let context, let buffer = output, buffer.readableBytes > 0 else { return }
        output = nil
        context.write(wrapOutboundOut(buffer), promise: nil)
        unflushed = true
    }

    private func flushNow() {
        writeOutput()
        guard unflushed, let context else { return }
        unflushed = false
        context.flush()
    }

    /// The link ended by itself: report it once (onClose, or onPreambleFailure before it was ready).
    private func fail(_ error: any Error) {
        guard state != .closed else { return }
        let wasOpen = state == .open
        state = .closed
        let reportClose = onClose
        let reportPreambleFailure = onPreambleFailure
        releaseResources()
        context?.close(promise: nil)
        if wasOpen {
            reportClose?(error)
        } else {
            reportPreambleFailure?(error as? TransportError ?? TransportError.handshake("connection failed: \(error)"))
        }
    }

    private func finish(_ error: (any Error)?) {
        guard state == .open else { return }
        state = .closed
        let reportClose = onClose
        releaseResources()
        context?.close(promise: nil)
        reportClose?(error)
    }

    private func releaseResources() {
        preambleTimer?.cancel()
        preambleTimer = nil
        preamble = nil
        input = nil
        output = nil
        onFrame = nil
        onClose = nil
        onReady = nil
        onPreambleFailure = nil
    }
}
