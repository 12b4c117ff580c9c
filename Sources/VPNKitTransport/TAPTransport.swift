// A TAP device in a network namespace, driven from one SwiftNIO event loop.
//
// Why this file is safe: it is the only place that reads and writes the TAP fd directly.
// - Reads go into a ByteBuffer's writable region through `writeWithUnsafeMutableBytes`, with the
//   region's own length passed to read(2), so the kernel cannot write past it; the buffer only
//   counts the bytes read(2) reported.
// - Writes pass a ByteBuffer's readable bytes and their length from `withUnsafeReadableBytes`.
// - The fd is owned by the NIO channel (registered for input only, so NIO never writes to it) and is
//   used only on the channel's event loop, while the channel is open; after close nothing touches it.
// Facts this relies on (../shared/notes/linux-tap.md): with IFF_NO_PI one read(2) is one frame and one
// write(2) is one frame; NIO's stream write path would merge frames, so it is never used.

import CVPNKitLinux
public import NIOCore
import NIOPosix
public import VPNKitBase

#if canImport(Glibc)
import Glibc
#endif

/// A Linux TAP device as a ``FrameTransport``: one read(2) or write(2) per frame, on the event loop that
/// owns the device's descriptor.
///
/// Create it with `open(namespace:device:mtu:on:)` and use it on that event loop only.
public final class TAPTransport: FrameTransport {
    /// The MTU given to `open`; frames are read into buffers of MTU + 18 bytes.
    public let mtu: Int
    /// The device name the kernel reports (as asked, or assigned when a pattern like "tap%d" was given).
    public let deviceName: String
    /// Always nil: a TAP device does not tell the guest's MAC address.
    public var guestAddress: MACAddress? { nil }
    /// Called on the event loop for every frame read from the device.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// Called once, with nil, when the device's channel closes other than through `close()`.
    public var onClose: (((any Error)?) -> Void)?
    /// The device's counters. `sendDrops` counts every failed write (see `writeWouldBlock` and
    /// `writeErrors`); `receiveErrors` counts failed reads.
    public private(set) var statistics = TransportStatistics()
    /// Writes that failed with EAGAIN (the guest's queue was full).
    public private(set) var writeWouldBlock: UInt64 = 0
    /// Writes that failed with another errno (EIO while the guest's link is down, say).
    public private(set) var writeErrors: UInt64 = 0

    private let fd: Int32
    private let channel: any Channel
    private let readCapacity: Int
    private var closed = false
    /// Extra non-blocking reads per wakeup before returning to the loop.
    static let drainLimit = 64

    init(fd: Int32, channel: any Channel, mtu: Int, deviceName: String) {
        self.fd = fd
        self.channel = channel
        self.mtu = mtu
        self.deviceName = deviceName
        self.readCapacity = mtu + 18
    }

    /// Opens (attaching to, or creating) the TAP device `device` inside the network namespace
    /// `namespace` — a name under /var/run/netns or a path — or in our own namespace when nil.
    /// Only the calling thread enters the namespace, and it returns before this function does.
    /// `mtu` is the guest interface's MTU (set it on the device yourself); reads use buffers of
    /// MTU + 18 bytes. The transport is bound to `eventLoop`.
    public static func open(
        namespace: String?, device: String, mtu: Int = 1500, on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<TAPTransport>> {
        let path = namespace.map { $0.contains("/") ? $0 : "/var/run/netns/" + $0 }
        var nameOut = [CChar](repeating: 0, count: 16)
        var step: UnsafePointer<CChar>?
        let fd = vpnkit_open_tap(path, device, 0, &nameOut, &step)
        guard fd >= 0 else {
            let err = errno
            let what = step.map { String(cString: $0) } ?? "open tap"
            return eventLoop.makeFailedFuture(TransportError.systemCall("\(what) (\(device) in \(path ?? "own namespace"))", errno: err))
        }
        let deviceName = nameOut.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let capacity = mtu + 18
        return NIOPipeBootstrap(group: eventLoop)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: capacity))
            .channelOption(.autoRead, value: true)
            .takingOwnershipOfDescriptor(input: fd)
            .flatMapThrowing { channel in
                let transport = TAPTransport(fd: fd, channel: channel, mtu: mtu, deviceName: deviceName)
                try channel.pipeline.syncOperations.addHandler(TAPReadHandler(transport: transport))
                return NIOLoopBound(transport, eventLoop: eventLoop)
            }
    }

    /// One frame from NIO's read, then drain the fd without going back to the loop.
    fileprivate func channelRead(_ frame: ByteBuffer) {
        deliver(frame)
        var drained = 0
        while drained < Self.drainLimit, !closed {
            var buffer = channel.allocator.buffer(capacity: readCapacity)
            var failure: Int32 = 0
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: readCapacity) { raw -> Int in
                let n = read(fd, raw.baseAddress, raw.count)
                if n < 0 { failure = errno }
                return max(0, n)
            }
            if count == 0 {
                if failure != EAGAIN && failure != EWOULDBLOCK && failure != EINTR && failure != 0 {
                    statistics.receiveErrors &+= 1
                }
                break
            }
            deliver(buffer)
            drained += 1
        }
    }

    private func deliver(_ frame: ByteBuffer) {
        statistics.countReceived(frame.readableBytes)
        onFrame?(frame)
    }

    /// One write(2) per frame. EAGAIN and EIO are counted drops, never the end of the link.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        guard !closed else {
            statistics.sendDrops &+= 1
            return false
        }
        var failure: Int32 = 0
        let written = frame.withUnsafeReadableBytes { raw -> Int in
            while true {
                let n = write(fd, raw.baseAddress, raw.count)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { failure = errno }
                return n
            }
        }
        if written == frame.readableBytes {
            statistics.countSent(written)
            return true
        }
        statistics.sendDrops &+= 1
        if failure == EAGAIN || failure == EWOULDBLOCK { writeWouldBlock &+= 1 } else { writeErrors &+= 1 }
        return false
    }

    fileprivate func channelClosed(_ error: (any Error)?) {
        guard !closed else { return }
        closed = true
        let callback = onClose
        onClose = nil
        callback?(error)
    }

    /// Closes the device's descriptor through its channel, without calling `onClose`; later sends drop.
    /// Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        onClose = nil
        channel.close(promise: nil)
    }
}

/// Hands NIO's reads to the transport; reports the channel's end.
private final class TAPReadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let transport: TAPTransport

    init(transport: TAPTransport) { self.transport = transport }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        transport.channelRead(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A read error (EIO while the guest's link is down) is not fatal for a TAP device: count it.
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        transport.channelClosed(nil)
        context.fireChannelInactive()
    }
}
