// A TAP device in a network namespace, driven from one SwiftNIO event loop. Linux only: elsewhere
// TAPTransport and ReceiveSteering do not exist (and neither does UserspaceStack.Link.tap).
//
// Why this file is safe: it is the only place that reads and writes the TAP fd directly.
// - Reads go into a ByteBuffer's writable region through `writeWithUnsafeMutableBytes`, with the
//   region's own length passed to read(2), so the kernel cannot write past it; the buffer only
//   counts the bytes read(2) reported.
// - Writes pass a ByteBuffer's readable bytes and their length from `withUnsafeReadableBytes`.
// - The fd is owned by the NIO channel (registered for input only, so NIO never writes to it), or on
//   the daemon's reactor by this transport, and is used only on that loop while open; after close
//   nothing touches it.
// - With offloads, the 10-byte virtio-net header is read from the front of each buffer only after
//   checking the read returned at least header + Ethernet header bytes, and written from a local
//   tuple whose size is passed to writev(2) with the frame's own length.
// Facts this relies on (docs/platform-facts.md): with IFF_NO_PI one read(2) is one frame and one
// write(2) (or writev(2)) is one frame; NIO's stream write path would merge frames, so it is never used.

#if os(Linux)

import CVPNKitLinux
public import NIOCore
import NIOPosix
public import VPNKitBase
public import VPNKitReactor
import VPNKitSystem

#if canImport(Glibc)
import Glibc
#endif

/// Receive packet steering (RPS) on a TAP device: where the guest's kernel processes the frames we
/// write.
///
/// Without it, a write(2) to a TAP runs the guest's whole receive path (IP, TCP, ACKs, waking the
/// reader) inside the call, on our thread. With an RPS mask the kernel queues each frame for the CPU
/// its flow hashes to and returns; that CPU does the work, as it would for a NIC. It matters where the
/// guest is a network namespace on this host; a VM's frames travel another way.
///
/// It pays only where a CPU is to spare for that work; where none is, the cross-CPU hand-off per
/// frame costs more than it saves (BENCHMARKS.md). Hence it is asked for, not assumed.
public enum ReceiveSteering: Sendable, Equatable, CustomStringConvertible {
    /// `open` was asked not to touch the device's RPS setting.
    case notRequested
    /// rps_cpus was set on every receive queue, to a mask of `cpus` CPUs.
    case spread(cpus: Int)
    /// Only one CPU is available: there is nothing to spread over, so nothing was set.
    case singleCPU
    /// Setting rps_cpus failed (without CAP_SYS_ADMIN and CAP_NET_ADMIN, say): the device works as before.
    case failed(String)

    /// For logs: "spread over 2 CPUs", "failed: ...".
    public var description: String {
        switch self {
        case .notRequested: "not requested"
        case .spread(let cpus): "spread over \(cpus) CPUs"
        case .singleCPU: "one CPU, nothing to spread"
        case .failed(let reason): "failed: \(reason)"
        }
    }
}

/// A Linux TAP device as a ``FrameTransport``: one read(2) or write(2) per frame, on the event loop that
/// owns the device's descriptor.
///
/// Create it with `open(namespace:device:mtu:on:)` and use it on that event loop only.
public final class TAPTransport: OffloadingFrameTransport {
    /// The MTU given to `open`; frames are read into buffers of MTU + 18 bytes.
    public let mtu: Int
    /// The device name the kernel reports (as asked, or assigned when a pattern like "tap%d" was given).
    public let deviceName: String
    /// Always nil: a TAP device does not tell the guest's MAC address.
    public var guestAddress: MACAddress? { nil }
    /// Called on the event loop for every frame read from the device (unless `onOffloadedFrame` is set).
    /// With offloads on, a frame whose checksum the guest left partial is finished here first.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// With offloads on: called instead of `onFrame` when set, with what the virtio-net header said.
    public var onOffloadedFrame: ((ByteBuffer, FrameOffload) -> Void)?
    /// What the device takes: frames gathered from two buffers always; partial checksums and TCP
    /// segmentation when it was opened with offloads.
    public let offloads: LinkOffloads
    /// Received frames whose partial checksum was finished here (delivered through `onFrame`).
    public private(set) var checksumsCompleted: UInt64 = 0
    /// Frames received that were longer than the MTU allows (TCP segments the guest did not cut).
    public private(set) var oversizedFramesReceived: UInt64 = 0
    /// Frames sent for the guest's kernel to cut into MSS-sized segments.
    public private(set) var segmentationOffloadFramesSent: UInt64 = 0
    /// Called once, with nil, when the device's channel closes other than through `close()`.
    public var onClose: (((any Error)?) -> Void)?
    /// The device's counters. `sendDrops` counts every failed write (see `writeWouldBlock` and
    /// `writeErrors`); `receiveErrors` counts failed reads.
    public private(set) var statistics = TransportStatistics()
    /// Writes that failed with EAGAIN (the guest's queue was full).
    public private(set) var writeWouldBlock: UInt64 = 0
    /// Writes that failed with another errno (EIO while the guest's link is down, say).
    public private(set) var writeErrors: UInt64 = 0
    /// Whether `open` spread the guest's receive processing over the CPUs, and if not, why.
    public fileprivate(set) var receiveSteering = ReceiveSteering.notRequested

    private let fd: Int32
    /// The channel reading the device on a SwiftNIO loop; nil on a reactor.
    private let channel: (any Channel)?
    /// On a reactor: the loop and the device's registration with it.
    private let reactor: Reactor?
    private var registration: ReactorRegistration?
    private static let allocator = ByteBufferAllocator()
    private let readCapacity: Int
    /// Each read and write carries a virtio-net header (the device was opened with IFF_VNET_HDR).
    private let vnetHeader: Bool
    /// A read buffer kept between reads: a short frame is copied out of it into a buffer of its size,
    /// so the large buffer a frame of up to 64 KiB needs is allocated again only when a large frame
    /// was handed on.
    private var spare: ByteBuffer?
    /// Read buffers already handed on, to read into again once the stack let them go (about 2 MiB
    /// of them, at most 128); and the buffers short frames were copied into (128 of 2 KiB).
    private var recycled: BufferRing
    private var recycledShort = BufferRing(limit: 128)
    private var closed = false
    /// Extra non-blocking reads per wakeup before returning to the loop.
    static let drainLimit = 64
    /// Whether a wakeup drains the fd past the frame NIO read: not for request-and-answer traffic,
    /// whose drains find nothing (see `ReadBatching`).
    private var batching = ReadBatching()
    /// The virtio-net header's length (struct virtio_net_hdr, without num_buffers).
    static let vnetHeaderLength = 10
    /// Frames up to this long are copied out of a large read buffer (cheaper than a fresh large
    /// buffer); with buffers of at most four times this, every frame keeps its read buffer.
    static let copyOutLimit = 2048

    init(
        fd: Int32, channel: (any Channel)?, reactor: Reactor? = nil, mtu: Int, deviceName: String, readCapacity: Int, vnetHeader: Bool,
        offloads: LinkOffloads
    ) {
        self.recycled = BufferRing(limit: max(2, min(128, (2 << 20) / max(1, readCapacity))))
        self.fd = fd
        self.channel = channel
        self.reactor = reactor
        self.mtu = mtu
        self.deviceName = deviceName
        self.readCapacity = readCapacity
        self.vnetHeader = vnetHeader
        self.offloads = offloads
    }

    /// The read buffer size: MTU + 18 bytes; with offloads the largest frame TCP segmentation can
    /// produce (a 65,535-byte datagram in an Ethernet frame) plus the virtio-net header.
    static func readCapacity(mtu: Int, offloads: Bool) -> Int {
        offloads ? max(mtu + 18, 65_535 + 18) + vnetHeaderLength : mtu + 18
    }

    /// Opens (attaching to, or creating) the TAP device `device` inside the network namespace
    /// `namespace` — a name under /var/run/netns or a path — or in our own namespace when nil.
    /// A short-lived child process enters the namespace and opens the device; none of our threads
    /// changes namespace.
    /// `mtu` is the guest interface's MTU (set it on the device yourself); reads use buffers of
    /// MTU + 18 bytes. The transport is bound to `eventLoop`.
    ///
    /// With `offloads`, the device carries a virtio-net header and the guest's interface gets
    /// checksum and TCP segmentation offload over both families (TUN_F_CSUM | TUN_F_TSO4 |
    /// TUN_F_TSO6): it hands over TCP segments of up to 64 KiB whatever the MTU, and takes them from
    /// us: a bulk transfer pays the per-frame work once per 64 KiB rather than
    /// once per MSS. `offloads` reports what was switched on.
    ///
    /// With `receiveSteering`, the device's receive queues get an RPS mask of every CPU we may run
    /// on (see ``ReceiveSteering``): the guest's kernel then processes the frames we write on the CPU
    /// their flow hashes to, not inside our write(2). The setting stays on the device after the
    /// transport closes. It needs CAP_SYS_ADMIN (to enter the namespace and mount its sysfs) and CAP_NET_ADMIN in the initial user namespace (to write rps_cpus); where it fails the device works as before and
    /// `receiveSteering` says why.
    ///
    /// With `userNamespace` (a path such as /proc/PID/ns/user), the user namespace that owns the
    /// network namespace is entered first, by a short-lived child process (a multithreaded process
    /// cannot change user namespace): an unprivileged daemon so opens a TAP in a rootless container's
    /// namespace, as slirp4netns does. A path naming our own user namespace is not entered.
    public static func open(
        namespace: String?, userNamespace: String? = nil, device: String, mtu: Int = 1500, offloads: Bool = false,
        receiveSteering: Bool = false, on eventLoop: any EventLoop
    ) -> EventLoopFuture<NIOLoopBound<TAPTransport>> {
        let path = namespace.map { $0.contains("/") ? $0 : "/var/run/netns/" + $0 }
        var nameOut = [CChar](repeating: 0, count: 16)
        var step: UnsafePointer<CChar>?
        let fd = vpnkit_open_tap_joining(userNamespace, path, device, offloads ? 1 : 0, &nameOut, &step)
        guard fd >= 0 else {
            let err = errno
            let what = step.map { String(cString: $0) } ?? "open tap"
            return eventLoop.makeFailedFuture(TransportError.systemCall("\(what) (\(device) in \(path ?? "own namespace"))", errno: err))
        }
        let deviceName = nameOut.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var granted: LinkOffloads = [.gather]
        if offloads {
            // TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6. Without them the header still travels, with nothing
            // offloaded.
            if vpnkit_tap_set_offload(fd, 0x01 | 0x02 | 0x04) == 0 {
                granted.formUnion([.partialChecksum, .tcpSegmentation, .tcpSegmentationIPv6])
            }
        }
        var steering = ReceiveSteering.notRequested
        if receiveSteering {
            var failedStep: UnsafePointer<CChar>?
            let cpus = vpnkit_tap_spread_receive(path, deviceName, &failedStep)
            if cpus > 0 {
                steering = .spread(cpus: Int(cpus))
            } else if cpus == 0 {
                steering = .singleCPU
            } else {
                let err = errno
                let what = failedStep.map { String(cString: $0) } ?? "rps_cpus"
                steering = .failed(TransportError.systemCall("\(what) (\(deviceName))", errno: err).description)
            }
        }
        let capacity = readCapacity(mtu: mtu, offloads: offloads)
        let grantedOffloads = granted
        let grantedSteering = steering
        if let reactor = eventLoop as? Reactor {
            // Made and registered on the reactor's thread (the caller may be anywhere).
            return eventLoop.submit {
                let transport = TAPTransport(
                    fd: fd, channel: nil, reactor: reactor, mtu: mtu, deviceName: deviceName, readCapacity: capacity, vnetHeader: offloads,
                    offloads: grantedOffloads)
                transport.receiveSteering = grantedSteering
                guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 else {
                    let err = errno
                    SystemCall.close(fd)
                    throw TransportError.systemCall("fcntl O_NONBLOCK (\(deviceName))", errno: err)
                }
                do throws(SystemError) {
                    transport.registration = try reactor.register(fd, transport)
                } catch {
                    SystemCall.close(fd)
                    throw TransportError.systemCall("epoll_ctl (\(deviceName))", errno: error.errno)
                }
                return NIOLoopBound(transport, eventLoop: eventLoop)
            }
        }
        return NIOPipeBootstrap(group: eventLoop)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: capacity))
            .channelOption(.autoRead, value: true)
            .takingOwnershipOfDescriptor(input: fd)
            .flatMapThrowing { channel in
                let transport = TAPTransport(
                    fd: fd, channel: channel, mtu: mtu, deviceName: deviceName, readCapacity: capacity, vnetHeader: offloads,
                    offloads: grantedOffloads)
                transport.receiveSteering = grantedSteering
                try channel.pipeline.syncOperations.addHandler(TAPReadHandler(transport: transport))
                return NIOLoopBound(transport, eventLoop: eventLoop)
            }
    }

    /// One frame from NIO's read, then drain the fd without going back to the loop.
    fileprivate func channelRead(_ frame: ByteBuffer) {
        deliver(frame)
        guard batching.shouldReadPastFirst() else { return }
        var drained = 0
        while drained < Self.drainLimit, !closed, readOne() { drained += 1 }
        batching.record(foundMore: drained > 0)
    }

    /// Reads one frame from the fd and hands it on; false when there was none (or the read failed).
    private func readOne() -> Bool {
        var buffer = spare.take() ?? recycled.take() ?? Self.allocator.buffer(capacity: readCapacity)
        buffer.clear()
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
            spare = buffer
            return false
        }
        if count <= Self.copyOutLimit && readCapacity > 4 * Self.copyOutLimit {
            var small = recycledShort.take() ?? Self.allocator.buffer(capacity: Self.copyOutLimit)
            small.clear()
            small.writeImmutableBuffer(buffer)
            spare = buffer
            deliver(small)
            recycledShort.put(small)
        } else {
            deliver(buffer)
            recycled.put(buffer)
        }
        return true
    }

    /// On a reactor: drains the fd (edge-triggered, so until EAGAIN), `drainLimit` frames per turn of
    /// the loop so that host sockets get theirs; the rest on the next turn.
    private func reactorDrain() {
        var drained = 0
        while !closed {
            if drained == Self.drainLimit {
                reactor?.enqueueLocal(drainTask)
                return
            }
            guard readOne() else { return }
            drained += 1
        }
    }

    /// The task `reactorDrain` queues, made once.
    private lazy var drainTask: () -> Void = { [weak self] in self?.reactorDrain() }

    private func deliver(_ frame: ByteBuffer) {
        guard vnetHeader else {
            statistics.countReceived(frame.readableBytes)
            if let onOffloadedFrame { onOffloadedFrame(frame, .none) } else { onFrame?(frame) }
            return
        }
        guard frame.readableBytes >= Self.vnetHeaderLength + 14 else {
            statistics.receiveErrors &+= 1
            return
        }
        // struct virtio_net_hdr, little-endian on a TAP (the host's order here): flags, gso_type,
        // hdr_len, gso_size, csum_start, csum_offset.
        let (flags, gsoSize, checksumStart, checksumOffset) = frame.withUnsafeReadableBytes { raw in
            (raw.load(as: UInt8.self),
             UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt16.self)),
             UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 6, as: UInt16.self)),
             UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        }
        var frame = frame
        frame.moveReaderIndex(forwardBy: Self.vnetHeaderLength)
        statistics.countReceived(frame.readableBytes)
        if frame.readableBytes > mtu + 18 { oversizedFramesReceived &+= 1 }
        // VIRTIO_NET_HDR_F_NEEDS_CSUM = 1, VIRTIO_NET_HDR_F_DATA_VALID = 2.
        let partial = flags & 1 != 0
        if let onOffloadedFrame {
            onOffloadedFrame(frame, FrameOffload(checksumTrusted: flags & 3 != 0, segmentSize: gsoSize))
            return
        }
        if partial {
            frame.completePartialChecksum(start: Int(checksumStart), offset: Int(checksumOffset))
            checksumsCompleted &+= 1
        }
        onFrame?(frame)
    }

    /// One write(2) per frame. EAGAIN and EIO are counted drops, never the end of the link.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        send(frame, payload: nil, offload: .none)
    }

    /// One writev(2) per frame: the virtio-net header asking for `offload` (with offloads on), the
    /// frame, then `payload` when given. Without offloads `offload` must be `.none`.
    @discardableResult
    public func send(_ frame: ByteBuffer, payload: ByteBuffer?, offload: FrameOffload) -> Bool {
        guard !closed else {
            statistics.sendDrops &+= 1
            return false
        }
        var failure: Int32 = 0
        var header = VirtioNetHeader(offload)
        let headerLength = vnetHeader ? Self.vnetHeaderLength : 0
        let total = frame.readableBytes + (payload?.readableBytes ?? 0)
        let fd = self.fd
        let written = frame.withUnsafeReadableBytes { raw -> Int in
            withUnsafeBytes(of: &header) { head -> Int in
                let write = { (second: UnsafeRawBufferPointer?) -> Int in
                    let n = vpnkit_tap_writev3(
                        fd, head.baseAddress, UInt(headerLength), raw.baseAddress, UInt(raw.count), second?.baseAddress, UInt(second?.count ?? 0))
                    if n < 0 { failure = errno; return -1 }
                    return n - headerLength
                }
                guard let payload else { return write(nil) }
                return payload.withUnsafeReadableBytes { write($0) }
            }
        }
        if written == total {
            if offload.segmentSize > 0 { segmentationOffloadFramesSent &+= 1 }
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
        recycled.removeAll()
        recycledShort.removeAll()
        spare = nil
        let callback = onClose
        onClose = nil
        callback?(error)
    }

    /// Closes the device's descriptor through its channel, without calling `onClose`; later sends drop.
    /// Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        recycled.removeAll()
        recycledShort.removeAll()
        spare = nil
        onClose = nil
        if let channel {
            channel.close(promise: nil)
        } else {
            if let registration { reactor?.deregister(registration, fd: fd) }
            registration = nil
            SystemCall.close(fd)
        }
    }
}

extension TAPTransport: ReactorSource {
    /// The device's readiness on a reactor: frames to read. (Writes never wait: a full queue drops.)
    public func reactorEvents(_ events: ReactorEvents) {
        if events.contains(.readable), !closed { reactorDrain() }
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

/// struct virtio_net_hdr as the TAP reads it: 10 bytes, little-endian, no padding (five 16-bit
/// fields' worth: two bytes, then four 16-bit values).
struct VirtioNetHeader {
    var flags: UInt8 = 0
    var gsoType: UInt8 = 0
    var headerLength: UInt16 = 0
    var gsoSize: UInt16 = 0
    var checksumStart: UInt16 = 0
    var checksumOffset: UInt16 = 0

    init(_ offload: FrameOffload) {
        if offload.hasPartialChecksum {
            flags = 1  // VIRTIO_NET_HDR_F_NEEDS_CSUM
            checksumStart = offload.checksumStart.littleEndian
            checksumOffset = offload.checksumOffset.littleEndian
        }
        if offload.segmentSize > 0 {
            gsoType = offload.ipv6 ? 4 : 1  // VIRTIO_NET_HDR_GSO_TCPV6 or _TCPV4
            gsoSize = offload.segmentSize.littleEndian
            headerLength = offload.headerLength.littleEndian
        }
    }
}

#endif  // os(Linux): TAP devices and network namespaces are Linux's
