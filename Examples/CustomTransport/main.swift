// Writing a transport: Ethernet frames over a unix stream socketpair, each frame preceded by its
// length (2 bytes, big-endian). Two stacks, one on each end of the pair, on two event loops: one
// serves DHCP and a TCP echo, the other takes a lease from it and talks to the echo.
//
//   custom-transport [MESSAGE]
import Glibc
import NIOCore
import NIOPosix
import VPNKit

/// Frames over a byte-stream file descriptor with a 2-byte length before each. The descriptor is
/// driven by a SwiftNIO channel (NIOPipeBootstrap), so reads and writes happen on the stack's event
/// loop like every other socket. The contract of `FrameTransport`, in short: one frame per
/// `onFrame` call; `send` never blocks (it drops and counts when the peer is not keeping up); after
/// `close`, nothing more is delivered.
final class LengthPrefixedTransport: FrameTransport {
    let mtu: Int
    var guestAddress: MACAddress? { nil }
    var onFrame: ((ByteBuffer) -> Void)?
    var onClose: (((any Error)?) -> Void)?
    private(set) var statistics = TransportStatistics()

    private let eventLoop: any EventLoop
    private var channel: (any Channel)?
    /// Frames sent while the channel was still being set up (at most `pendingLimit`).
    private var pending: [ByteBuffer] = []
    private let pendingLimit = 256
    private var flushScheduled = false
    private var closed = false

    /// Takes ownership of `descriptor`; must be called on `eventLoop`.
    init(descriptor: CInt, mtu: Int, on eventLoop: any EventLoop) {
        self.mtu = mtu
        self.eventLoop = eventLoop
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        let largestFrame = mtu + 18
        NIOPipeBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthPrefixDecoder(largestFrame: largestFrame)))
                    try channel.pipeline.syncOperations.addHandler(FrameHandler(transport: this.value))
                }
            }
            .takingOwnershipOfDescriptor(inputOutput: descriptor)
            .whenComplete { result in
                let transport = this.value
                switch result {
                case .success(let channel): transport.ready(channel)
                case .failure(let error): transport.ended(error)
                }
            }
    }

    private func ready(_ channel: any Channel) {
        guard !closed else { return channel.close(promise: nil) }
        self.channel = channel
        for frame in pending { write(frame, on: channel) }
        pending.removeAll()
        channel.flush()
    }

    @discardableResult
    func send(_ frame: ByteBuffer) -> Bool {
        guard !closed, frame.readableBytes <= mtu + 18 else {
            statistics.sendDrops &+= 1
            return false
        }
        guard let channel else {
            guard pending.count < pendingLimit else {
                statistics.sendDrops &+= 1
                return false
            }
            pending.append(frame)
            return true
        }
        // The peer is not reading: drop rather than buffer without bound (TCP above retransmits).
        guard channel.isWritable else {
            statistics.sendDrops &+= 1
            return false
        }
        write(frame, on: channel)
        // One flush (one writev) per turn of the loop, however many frames the stack sent.
        if !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().execute { [weak self] in
                guard let self else { return }
                self.flushScheduled = false
                self.channel?.flush()
            }
        }
        return true
    }

    private func write(_ frame: ByteBuffer, on channel: any Channel) {
        var prefix = channel.allocator.buffer(capacity: 2)
        prefix.writeInteger(UInt16(frame.readableBytes))
        channel.write(prefix, promise: nil)
        channel.write(frame, promise: nil)
        statistics.countSent(frame.readableBytes)
    }

    func close() {
        guard !closed else { return }
        closed = true
        onFrame = nil
        onClose = nil
        pending.removeAll()
        channel?.close(promise: nil)
    }

    fileprivate func received(_ frame: ByteBuffer) {
        guard !closed else { return }
        statistics.countReceived(frame.readableBytes)
        onFrame?(frame)
    }

    fileprivate func ended(_ error: (any Error)?) {
        guard !closed else { return }
        closed = true
        let callback = onClose
        onClose = nil
        onFrame = nil
        callback?(error)
    }

    fileprivate func framingError() { statistics.receiveErrors &+= 1 }
}

/// Splits the byte stream into frames. A length larger than the largest frame means the stream is
/// corrupt: the decoder throws and the channel closes.
struct LengthPrefixDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let largestFrame: Int

    struct FrameTooLong: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return .needMoreData }
        guard Int(length) <= largestFrame else { throw FrameTooLong() }
        guard buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(NIOAny(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// Hands decoded frames to the transport; tells it when the stream ends.
final class FrameHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let transport: LengthPrefixedTransport
    init(transport: LengthPrefixedTransport) { self.transport = transport }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        transport.received(unwrapInboundIn(data))
    }
    func channelInactive(context: ChannelHandlerContext) { transport.ended(nil) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is LengthPrefixDecoder.FrameTooLong { transport.framingError() }
        transport.ended(error)
        context.close(promise: nil)
    }
}

// MARK: - Two stacks over one socketpair

let message = CommandLine.arguments.dropFirst().first ?? "hello over a socketpair"
var descriptors: [CInt] = [-1, -1]
guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &descriptors) == 0 else {
    print("socketpair failed: errno \(errno)")
    exit(1)
}
let (gatewayEnd, guestEnd) = (descriptors[0], descriptors[1])
let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

let gateway = try await UserspaceStack.start(
    configuration: StackConfiguration(subnet: IPv4Subnet("10.88.0.0/24")!),
    link: .custom { loop in LengthPrefixedTransport(descriptor: gatewayEnd, mtu: 1500, on: loop) },
    on: group.next())
try await gateway.serveDHCP(gateway.defaultDHCPServerConfiguration)
let listener = try await gateway.listenTCP(port: 7)
let echo = Task {
    for await connection in listener {
        while let bytes = try await connection.read() { try await connection.write(bytes) }
        await connection.shutdown()
    }
}

let guest = try await UserspaceStack.start(
    configuration: .unconfigured(macAddress: MACAddress(rawValue: 0x0200_0000_0202)),
    link: .custom { loop in LengthPrefixedTransport(descriptor: guestEnd, mtu: 1500, on: loop) },
    on: group.next())
let lease = try await guest.configureWithDHCP(timeout: .seconds(20))
print("guest leased \(lease.address) from \(lease.serverIdentifier)")

let connection = try await guest.connectTCP(to: .v4(gateway.configuration.gateway), port: 7)
try await connection.write(ByteBuffer(string: message))
await connection.shutdown()
var reply = ByteBuffer()
while var bytes = try await connection.read() { reply.writeBuffer(&bytes) }
let echoed = String(buffer: reply)
print("echoed: \(echoed)")

let link = try await guest.snapshot().link
print("guest link: \(link)")
await listener.close()
echo.cancel()
await guest.shutdown()
await gateway.shutdown()
try await group.shutdownGracefully()
exit(echoed == message ? 0 : 1)
