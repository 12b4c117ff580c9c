import Benchmark
import NIOConcurrencyHelpers
import NIOCore
import VPNKit
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitTCP
import VPNKitTransport

// The gateway alone: the NAT'd stack and its host socket, in front of a guest that is a script, not a
// stack. The NAT benchmarks count two stacks and the link between them; these count what the daemon
// does per forwarded segment, which is the figure the "≤ 1 malloc per segment" goal is about. The
// guest's frames are built before the measurement starts (guest→host) or rewritten in place in a
// ring of buffers (its ACKs, host→guest), so the script itself allocates nothing per segment.

/// A guest reduced to a script over a `FrameTransport`: one bulk TCP connection (handshake, data in
/// order, cumulative ACKs, an ARP answer), nothing else. The gateway sees it as a link that can
/// gather (headers and payload in separate buffers, as a TAP without offloads takes them). Used only
/// on the gateway's event loop.
final class ScriptedGuest: OffloadingFrameTransport, @unchecked Sendable {
    static let mac = MACAddress(rawValue: 0x0200_0000_6503)
    static let address = IPv4Address(192, 168, 65, 3)
    static let hostAlias = IPv4Address(192, 168, 65, 2)
    static let port: UInt16 = 40000
    static let segmentSize = 1460
    /// The guest's window: 65535 << 7, 8 MiB; the gateway is never held back by it.
    static let windowScale: UInt8 = 7

    let mtu = 1500
    let guestAddress: MACAddress? = nil
    let offloads: LinkOffloads = .gather
    var onFrame: ((ByteBuffer) -> Void)?
    var onOffloadedFrame: ((ByteBuffer, FrameOffload) -> Void)?
    var onClose: (((any Error)?) -> Void)?
    private(set) var statistics = TransportStatistics()

    let loop: any EventLoop
    let gatewayMAC: MACAddress
    let gatewayAddress: IPv4Address
    let serverPort: UInt16
    let initialSequence: UInt32 = 1_000_000

    /// The handshake: completed by the gateway's SYN-ACK.
    private var connected: EventLoopPromise<Void>?
    /// The next byte expected from the gateway (its SYN, then its data).
    private var receiveNext: UInt32 = 0
    private var gatewayWindowScale: UInt8 = 0

    /// Guest → host: every data segment, built in advance; `sendLimit` of them may go.
    private var dataFrames: [ByteBuffer] = []
    private var nextFrame = 0
    private var sendLimit = 0
    /// The gateway's cumulative ACK and the right edge of the window it advertised.
    private var acknowledged: UInt32 = 0
    private var windowEdge: UInt32 = 0

    /// Host → guest: payload bytes received, the ends of segments not yet acknowledged (an ACK
    /// goes for every second one, as a Linux receiver's do), and who waits for a byte count.
    private(set) var receivedBytes = 0
    private var unacknowledgedEnds: [UInt32] = []
    private var receiveWaiter: (bytes: Int, promise: EventLoopPromise<Void>)?
    /// ACK frames, rewritten in place: the gateway keeps no reference to a pure ACK once it has
    /// processed it, so by the time the ring comes round each buffer is ours alone again.
    private var ackRing: [ByteBuffer] = []
    private var ackRingNext = 0
    private var ackPayloadStart = 0
    /// The gateway reset the connection.
    private(set) var wasReset = false
    /// An ARP answer owed to the gateway.
    private var arpReplyOwed = false

    private var pumpScheduled = false
    private lazy var pump: () -> Void = { [unowned self] in
        self.pumpScheduled = false
        self.run()
    }

    init(loop: any EventLoop, gatewayMAC: MACAddress, gatewayAddress: IPv4Address, serverPort: UInt16) {
        self.loop = loop
        self.gatewayMAC = gatewayMAC
        self.gatewayAddress = gatewayAddress
        self.serverPort = serverPort
        for _ in 0..<256 {
            let buffer = ByteBuffer.withHeadroom(capacity: 0)
            ackPayloadStart = buffer.readerIndex
            ackRing.append(buffer)
        }
        unacknowledgedEnds.reserveCapacity(8192)
    }

    // MARK: the transport's side

    func send(_ frame: ByteBuffer) -> Bool { send(frame, payload: nil, offload: .none) }

    func send(_ frame: ByteBuffer, payload: ByteBuffer?, offload: FrameOffload) -> Bool {
        statistics.countSent(frame.readableBytes + (payload?.readableBytes ?? 0))
        guard let etherType = frame.getInteger(at: frame.readerIndex + 12, as: UInt16.self) else { return true }
        if etherType == 0x0806 {
            // An ARP request for our address: answer on the next turn.
            if frame.getInteger(at: frame.readerIndex + 20, as: UInt16.self) == 1,
                frame.getInteger(at: frame.readerIndex + 38, as: UInt32.self) == Self.address.rawValue
            {
                arpReplyOwed = true
                schedule()
            }
            return true
        }
        guard etherType == 0x0800, let versionAndLength = frame.getInteger(at: frame.readerIndex + 14, as: UInt8.self),
            frame.getInteger(at: frame.readerIndex + 23, as: UInt8.self) == 6,
            let totalLength = frame.getInteger(at: frame.readerIndex + 16, as: UInt16.self)
        else { return true }
        let tcp = frame.readerIndex + 14 + Int(versionAndLength & 0x0F) * 4
        guard let sequence = frame.getInteger(at: tcp + 4, as: UInt32.self),
            let ack = frame.getInteger(at: tcp + 8, as: UInt32.self),
            let offsetByte = frame.getInteger(at: tcp + 12, as: UInt8.self),
            let flags = frame.getInteger(at: tcp + 13, as: UInt8.self),
            let window = frame.getInteger(at: tcp + 14, as: UInt16.self)
        else { return true }
        let headerLength = Int(offsetByte >> 4) * 4
        let payloadLength = Int(totalLength) - Int(versionAndLength & 0x0F) * 4 - headerLength
        let syn = flags & 0x02 != 0
        let ackFlag = flags & 0x10 != 0
        if flags & 0x04 != 0 {
            // The gateway resets the connection when it shuts down; before that, it is a failure.
            wasReset = true
            connected?.fail(GatewayRigError.reset)
            receiveWaiter?.promise.fail(GatewayRigError.reset)
            connected = nil
            receiveWaiter = nil
            return true
        }
        if syn {
            // SYN-ACK: its window scale (NOP NOP ... is Linux's layout; read the options properly).
            gatewayWindowScale = windowScaleOption(frame, from: tcp + 20, to: tcp + headerLength) ?? 0
            receiveNext = sequence &+ 1
            acknowledged = ack
            windowEdge = ack &+ UInt32(window)
            queueAck(receiveNext)
            connected?.succeed()
            connected = nil
            return true
        }
        if ackFlag, Int32(bitPattern: ack &- acknowledged) >= 0 {
            acknowledged = ack
            windowEdge = ack &+ (UInt32(window) << gatewayWindowScale)
            if nextFrame < sendLimit { schedule() }
        }
        if payloadLength > 0 {
            // The link loses nothing, but the gateway may still send something again (a loss probe
            // when our ACKs are late on a loaded machine): only bytes past `receiveNext` count, and
            // anything else draws a duplicate ACK, as a receiver's would.
            let end = sequence &+ UInt32(payloadLength)
            let startsInOrder = Int32(bitPattern: sequence &- receiveNext) <= 0
            let bringsNew = Int32(bitPattern: end &- receiveNext) > 0
            guard startsInOrder, bringsNew else {
                queueAck(receiveNext)
                return true
            }
            receivedBytes += Int(end &- receiveNext)
            receiveNext = end
            queueAck(receiveNext)
            if let waiter = receiveWaiter, receivedBytes >= waiter.bytes {
                receiveWaiter = nil
                waiter.promise.succeed()
            }
        }
        return true
    }

    func close() { onClose?(nil) }

    // MARK: the script

    /// Opens the connection: an ARP request (the gateway learns our address from it), then a SYN.
    func connect() -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        connected = promise
        var arp = ByteBuffer.withHeadroom(capacity: 28)
        writeARP(into: &arp, operation: 1, targetMAC: MACAddress(rawValue: 0), targetAddress: gatewayAddress)
        EthernetHeader(destination: .broadcast, source: Self.mac, etherType: .arp).prepend(to: &arp)
        deliver(arp)
        var syn = ByteBuffer.withHeadroom(capacity: 0)
        prependHeaders(
            to: &syn, sequence: initialSequence, ack: 0, flags: [.syn],
            options: TCPHeader.standardOptions(maximumSegmentSize: UInt16(Self.segmentSize), sackPermitted: true, windowScale: Self.windowScale))
        deliver(syn)
        return promise.futureResult
    }

    /// Builds `segments` data segments after those built before (outside any measurement).
    func prepareUpload(segments: Int) {
        let payload = ByteBuffer(repeating: 0x5A, count: Self.segmentSize)
        for _ in 0..<segments {
            var frame = ByteBuffer.withHeadroom(capacity: Self.segmentSize)
            frame.writeImmutableBuffer(payload)
            let sequence = initialSequence &+ 1 &+ UInt32(truncatingIfNeeded: dataFrames.count * Self.segmentSize)
            prependHeaders(to: &frame, sequence: sequence, ack: receiveNext, flags: [.ack, .psh], options: [])
            dataFrames.append(frame)
        }
    }

    /// Lets `segments` more of the prepared segments go, as the gateway's window allows.
    func upload(segments: Int) {
        sendLimit = min(dataFrames.count, sendLimit + segments)
        schedule()
    }

    /// Succeeds once `bytes` more have arrived from the gateway.
    func download(bytes: Int) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        receiveWaiter = (receivedBytes + bytes, promise)
        return promise.futureResult
    }

    private func schedule() {
        guard !pumpScheduled else { return }
        pumpScheduled = true
        loop.execute(pump)
    }

    /// One turn: what is owed (an ARP answer, ACKs), then up to 64 data segments (a TAP read
    /// batch), and another turn if the window allows more.
    private func run() {
        if arpReplyOwed {
            arpReplyOwed = false
            var arp = ByteBuffer.withHeadroom(capacity: 28)
            writeARP(into: &arp, operation: 2, targetMAC: gatewayMAC, targetAddress: gatewayAddress)
            EthernetHeader(destination: gatewayMAC, source: Self.mac, etherType: .arp).prepend(to: &arp)
            deliver(arp)
        }
        if !unacknowledgedEnds.isEmpty {
            // One ACK per two segments, and one for an odd last one.
            var index = 1
            while index < unacknowledgedEnds.count {
                sendAck(unacknowledgedEnds[index])
                index += 2
            }
            if unacknowledgedEnds.count % 2 == 1 { sendAck(unacknowledgedEnds[unacknowledgedEnds.count - 1]) }
            unacknowledgedEnds.removeAll(keepingCapacity: true)
        }
        var sent = 0
        while nextFrame < sendLimit, sent < 64 {
            let end = initialSequence &+ 1 &+ UInt32(truncatingIfNeeded: (nextFrame + 1) * Self.segmentSize)
            guard Int32(bitPattern: windowEdge &- end) >= 0 else { break }
            deliver(dataFrames[nextFrame])
            nextFrame += 1
            sent += 1
        }
        if sent == 64, nextFrame < sendLimit { schedule() }
    }

    private func queueAck(_ ack: UInt32) {
        unacknowledgedEnds.append(ack)
        schedule()
    }

    private func sendAck(_ ack: UInt32) {
        var buffer = ackRing[ackRingNext]
        ackRing[ackRingNext] = ByteBuffer.emptyPlaceholder
        buffer.moveReaderIndex(to: ackPayloadStart)
        buffer.moveWriterIndex(to: ackPayloadStart)
        let sequence = initialSequence &+ 1 &+ UInt32(truncatingIfNeeded: nextFrame * Self.segmentSize)
        prependHeaders(to: &buffer, sequence: sequence, ack: ack, flags: [.ack], options: [])
        ackRing[ackRingNext] = buffer
        ackRingNext = (ackRingNext + 1) % ackRing.count
        deliver(buffer)
    }

    private func deliver(_ frame: ByteBuffer) {
        statistics.countReceived(frame.readableBytes)
        onOffloadedFrame?(frame, .none)
    }

    private func prependHeaders(to buffer: inout ByteBuffer, sequence: UInt32, ack: UInt32, flags: TCPFlags, options: [TCPOption]) {
        TCPHeader(
            sourcePort: Self.port, destinationPort: serverPort, sequenceNumber: SequenceNumber(sequence),
            acknowledgmentNumber: SequenceNumber(ack), flags: flags, window: 65535, options: options
        ).prepend(to: &buffer, source: .v4(Self.address), destination: .v4(Self.hostAlias))
        IPv4Header(source: Self.address, destination: Self.hostAlias, protocol: .tcp, dontFragment: true).prepend(to: &buffer)
        EthernetHeader(destination: gatewayMAC, source: Self.mac, etherType: .ipv4).prepend(to: &buffer)
    }

    private func writeARP(into buffer: inout ByteBuffer, operation: UInt16, targetMAC: MACAddress, targetAddress: IPv4Address) {
        buffer.writeInteger(UInt16(1))
        buffer.writeInteger(UInt16(0x0800))
        buffer.writeInteger(UInt8(6))
        buffer.writeInteger(UInt8(4))
        buffer.writeInteger(operation)
        writeMAC(Self.mac, into: &buffer)
        buffer.writeInteger(Self.address.rawValue)
        writeMAC(targetMAC, into: &buffer)
        buffer.writeInteger(targetAddress.rawValue)
    }

    private func writeMAC(_ mac: MACAddress, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(truncatingIfNeeded: mac.rawValue >> 32))
        buffer.writeInteger(UInt32(truncatingIfNeeded: mac.rawValue))
    }

    /// The window-scale option between `start` and `end`, walking the option list.
    private func windowScaleOption(_ frame: ByteBuffer, from start: Int, to end: Int) -> UInt8? {
        var index = start
        while index < end, let kind = frame.getInteger(at: index, as: UInt8.self) {
            if kind == 0 { return nil }
            if kind == 1 {
                index += 1
                continue
            }
            guard let length = frame.getInteger(at: index + 1, as: UInt8.self), length >= 2 else { return nil }
            if kind == 3 { return frame.getInteger(at: index + 2, as: UInt8.self) }
            index += Int(length)
        }
        return nil
    }
}

enum GatewayRigError: Error { case reset }

extension ByteBuffer {
    /// Stands in an array slot while the buffer that lived there is being rewritten, so that the
    /// rewrite sees the only reference (made once).
    static let emptyPlaceholder = ByteBuffer()
}

/// The gateway (a `UserspaceStack` with the NAT, as the daemon runs it: 1 MiB TCP buffers) with a
/// scripted guest on its link and a plain-socket server on 127.0.0.1.
final class GatewayRig: @unchecked Sendable {
    let gateway: UserspaceStack
    let guest: NIOLoopBound<ScriptedGuest>
    let server: LoopbackServer
    let toHost: Bool
    private var uploaded = 0

    static let segmentsPerMiB = ((1 << 20) + ScriptedGuest.segmentSize - 1) / ScriptedGuest.segmentSize

    /// `mebibytes`: how much the guest→host rig prepares (warm-up and measurement together).
    init(toHost: Bool, mebibytes: Int) async throws {
        self.toHost = toHost
        server = try LoopbackServer(source: !toHost)
        var configuration = StackConfiguration(subnet: IPv4Subnet("192.168.65.0/24")!)
        configuration.tcp.sendBufferSize = 1 << 20
        configuration.tcp.receiveBufferSize = 1 << 20
        let gatewayMAC = configuration.macAddress
        let gatewayAddress = configuration.gateway
        let serverPort = server.port
        let made = NIOLockedValueBox<NIOLoopBound<ScriptedGuest>?>(nil)
        gateway = try await UserspaceStack.start(
            configuration: configuration,
            link: .custom { loop in
                let guest = ScriptedGuest(loop: loop, gatewayMAC: gatewayMAC, gatewayAddress: gatewayAddress, serverPort: serverPort)
                made.withLockedValue { $0 = NIOLoopBound(guest, eventLoop: loop) }
                return guest
            })
        var nat = NATConfiguration()
        nat.hostAlias = .v4(ScriptedGuest.hostAlias)
        try await gateway.attachNAT(nat, dns: nil)
        let guest = made.withLockedValue { $0 }!
        self.guest = guest
        try await guest.eventLoop.flatSubmit { guest.value.connect() }.get()
        // After the handshake: the segments carry the gateway's sequence number in their ACK field.
        let segments = toHost ? mebibytes * Self.segmentsPerMiB : 0
        try await guest.eventLoop.submit { guest.value.prepareUpload(segments: segments) }.get()
    }

    /// One MiB through the gateway: guest→host until the host server has read it, host→guest until
    /// the guest has.
    func transfer() async throws {
        let guest = self.guest
        if toHost {
            uploaded += Self.segmentsPerMiB * ScriptedGuest.segmentSize
            let done = server.waitForCount(uploaded, on: guest.eventLoop)
            guest.eventLoop.execute { guest.value.upload(segments: Self.segmentsPerMiB) }
            try await done.get()
        } else {
            try await guest.eventLoop.flatSubmit { guest.value.download(bytes: 1 << 20) }.get()
        }
    }

    func stop() async {
        await gateway.shutdown()
        server.stop()
    }
}

let gatewayBenchmarks: @Sendable () -> Void = {
    for (toHost, label) in [(true, "guest→host"), (false, "host→guest")] {
        Benchmark(
            "Gateway alone: forwarded TCP \(label), MTU 1500, a scripted guest (MiB; 719 segments each)",
            configuration: .init(scalingFactor: .one, maxDuration: smoke ? .milliseconds(50) : .seconds(5), maxIterations: smoke ? 2 : 40)
        ) { benchmark in
            // Two MiB of warm-up: windows open, the stack's buffer pools fill, the host socket's
            // send buffer grows; then the measured MiB(s).
            let rig = try await GatewayRig(toHost: toHost, mebibytes: 2 + benchmark.scaledIterations.count)
            for _ in 0..<2 { try await rig.transfer() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { try await rig.transfer() }
            benchmark.stopMeasurement()
            await rig.stop()
        }
    }
}
