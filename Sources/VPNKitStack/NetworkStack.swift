public import NIOCore
public import VPNKitARP
public import VPNKitBase
import VPNKitEthernet
public import VPNKitIPv4
import VPNKitUDP
import VPNKitTCP

/// A received UDP datagram, as handed to a socket.
public struct UDPMessage: Sendable {
    /// The sender's IPv4 address.
    public var source: IPv4Address
    /// The sender's UDP port.
    public var sourcePort: UInt16
    /// The address the datagram was sent to: an owned address, a broadcast address, or an address
    /// the stack forwards.
    public var destination: IPv4Address
    /// The UDP port the datagram was sent to.
    public var destinationPort: UInt16
    /// The data, a slice of the frame it arrived in (or of the reassembled datagram).
    public var payload: ByteBuffer
    /// The stack's time when it arrived.
    public var receivedAt: NIODeadline
    /// The MAC address of the frame's sender.
    public var linkSource: MACAddress

    /// Creates a message from its addresses and ports, its payload, its arrival time and the MAC
    /// address of the frame that carried it.
    public init(
        source: IPv4Address, sourcePort: UInt16, destination: IPv4Address, destinationPort: UInt16, payload: ByteBuffer,
        receivedAt: NIODeadline, linkSource: MACAddress
    ) {
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
        self.payload = payload
        self.receivedAt = receivedAt
        self.linkSource = linkSource
    }
}

/// Errors from the stack's socket API.
public enum StackError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The port is taken: a UDP port already bound on that address (nil: on every address) or by an
    /// overlapping wildcard bind, a TCP port that already has a listener (address nil), or, when
    /// connecting, a local port already used toward the same remote address and port.
    case addressInUse(IPv4Address?, UInt16)
    /// A socket was bound to, or a datagram or connection sent from, an address the stack does not own.
    case addressNotOwned(IPv4Address)
    /// A UDP destination is off the stack's subnet and no default router is configured.
    case noRoute(IPv4Address)
    /// A UDP payload of this many bytes does not fit in one IPv4 datagram (at most 65,507 bytes:
    /// 65,535 less the IPv4 and UDP headers).
    case datagramTooLarge(Int)
    /// An outgoing TCP connection was refused because `maximumTCPConnections` are already open.
    case tooManyConnections

    /// A one-line explanation of the error, naming the address, port or size involved.
    public var description: String {
        switch self {
        case .addressInUse(let address, let port): return "UDP port \(port) on \(address.map(\.description) ?? "all addresses") is already bound"
        case .addressNotOwned(let address): return "\(address) is not an address of this stack"
        case .noRoute(let address): return "no route to \(address): it is not on the stack's subnet"
        case .datagramTooLarge(let size): return "datagram of \(size) bytes exceeds the IPv4 maximum"
        case .tooManyConnections: return "the TCP connection limit is reached"
        }
    }
}

/// The stack's core: Ethernet, ARP, IPv4 (with reassembly and fragmentation), ICMPv4, UDP and TCP,
/// for one link; traffic to addresses it forwards goes to its `forwarder`. A state machine: frames
/// and the time go in (`receive`, `poll`), frames to transmit come out (`takeOutput`), and
/// `nextDeadline` says when `poll` has work. No I/O, no clock, no threads:
/// the same object runs under a virtual clock in simulations and under an event loop in the daemon.
/// Not thread-safe; confine it to one thread.
public final class NetworkStack {
    /// The configuration in force: the one given to `init`, with the addresses, subnet and default
    /// router as changed since by `configure` and `unconfigure`.
    public private(set) var configuration: StackConfiguration
    package var counters = StackCounters()
    /// The ARP table, with the datagrams held while their next hop is resolved (read-only, for
    /// inspection).
    public internal(set) var arpCache: ARPCache
    /// The IPv4 datagrams being reassembled from fragments (read-only, for inspection).
    public private(set) var reassembler: IPv4Reassembler
    var icmpErrors: TokenBucket
    private var outbox: [OutgoingFrame] = []
    /// Buffers of header-only frames (ACKs, the heads of gathered segments) the link has taken,
    /// written into again for the next such frame instead of a new allocation. One the link still
    /// holds is not written over: ByteBuffer copies on write, so clearing it gives fresh storage,
    /// which is what a new buffer costs anyway. At most `headerBufferLimit`.
    private var headerBuffers: [ByteBuffer] = []
    private static let headerBufferLimit = 512
    /// The largest buffer kept for reuse as a header-only frame's.
    private static let headerBufferCapacity = 512
    /// Set while a frame whose transport checksum the link vouches for is being handled.
    var receivingTrustedChecksum = false
    /// Offloads the link takes for frames we send (see `FrameOffload`). Set by whoever attaches the
    /// link (`StackDriver` asks its transport), before connections open: with `.tcpSegmentation`,
    /// TCP sends segments of up to 64 KiB whatever the MTU, with partial checksums, and the link cuts
    /// them to the MSS. Empty by default: every frame fits the MTU and carries complete checksums.
    public var linkOffloads: LinkOffloads = []
    private var nextIdentification: UInt16 = 1
    private var started = false
    private var owned: Set<IPv4Address>
    /// Sees every valid ARP packet received (a DHCP client's conflict detection).
    public var arpObserver: ((ARPHeader, NIODeadline) -> Void)?
    /// Who holds an address now: the MAC of a bound, unexpired lease (or of a reservation), or nil.
    /// Set by the DHCP server on this stack (`DHCPService`); ARP for an address it names is learned
    /// only from that MAC (`arpNotFromLeaseHolder`), so one guest cannot take over another's address
    /// in the cache.
    public var leaseHolder: ((IPv4Address, NIODeadline) -> MACAddress?)?
    var udpSockets: [UDPSocketKey: UDPSocketEntry] = [:]
    var tcpConnections: [TCPKey: TCPEntry] = [:]
    /// Whether TCP connections hold the pure ACK they owe for data received in order until
    /// `sendHeldACKs(now:)`, so that a burst of segments read from the link at once draws one ACK
    /// per connection (see `TCPConnection.receive(_:now:holdingACK:)`). Off by default. Whoever
    /// turns it on must call `sendHeldACKs(now:)` whenever `hasHeldACKs` is true after the frames
    /// of one read are handed over; `StackDriver` does so at the end of each event-loop turn.
    public var holdsACKs = false
    /// Connections holding an ACK, in the order they began to.
    var entriesHoldingACK: [(TCPKey, TCPEntry)] = []
    /// Where received TCP options are parsed (its storage reused from segment to segment).
    var tcpOptionScratch: [TCPOption] = []
    var tcpListeners: [UInt16: (TCPSocket) -> Void] = [:]
    var pendingAccepts: [TCPKey: (TCPSocket) -> Void] = [:]
    var pendingTCPRequests: [TCPKey: PendingTCPRequest] = [:]
    var tcpTimers = TCPTimerHeap()
    /// Takes the traffic for addresses the stack forwards (the NAT); held weakly.
    public weak var forwarder: (any PacketForwarder)?
    var nextEphemeralPort: UInt16 = 32768
    private var timerClients: [WeakTimerClient] = []

    /// Creates a stack with `configuration` (by default 192.168.65.0/24 with the gateway at .1). It
    /// sends nothing until it is started or asked to.
    public init(configuration: StackConfiguration = StackConfiguration()) {
        self.configuration = configuration
        self.arpCache = ARPCache(configuration: configuration.arp)
        self.reassembler = IPv4Reassembler(configuration: configuration.reassembly)
        self.icmpErrors = TokenBucket(rate: configuration.icmpErrorsPerSecond, burst: configuration.icmpErrorBurst)
        self.owned = Set(configuration.addresses)
    }

    /// The stack's own MAC address: unicast frames to any other address are dropped.
    public var macAddress: MACAddress { configuration.macAddress }

    /// Every counter; ARP queue drops are read from the cache.
    public var statistics: StackCounters {
        var snapshot = counters
        snapshot[.arpQueueFull] = arpCache.queueFullDrops &+ arpCache.tableFullDrops
        return snapshot
    }

    /// Whether the stack answers for `address`.
    public func owns(_ address: IPv4Address) -> Bool { owned.contains(address) }

    /// Takes an address (and the subnet and default router that come with it), as a DHCP client does
    /// when it binds a lease; announces it with a gratuitous ARP.
    public func configure(address: IPv4Address, subnet: IPv4Subnet, router: IPv4Address?, now: NIODeadline) {
        if !configuration.addresses.contains(address) { configuration.addresses.append(address) }
        owned.insert(address)
        configuration.subnet = subnet
        configuration.defaultRouter = router
        emitARP(
            ARPHeader(
                operation: .request, senderHardwareAddress: macAddress, senderProtocolAddress: address,
                targetHardwareAddress: .zero, targetProtocolAddress: address), to: .broadcast)
    }

    /// Answers for one more address on the current subnet (ARP and ping, and TCP/UDP for sockets
    /// bound to it), announced with a gratuitous ARP: the NAT's host alias, say. Does nothing when the
    /// address is already owned.
    public func addAddress(_ address: IPv4Address) {
        guard !owned.contains(address) else { return }
        configuration.addresses.append(address)
        owned.insert(address)
        emitARP(
            ARPHeader(
                operation: .request, senderHardwareAddress: macAddress, senderProtocolAddress: address,
                targetHardwareAddress: .zero, targetProtocolAddress: address), to: .broadcast)
    }

    /// Gives up an address (a lease lost or released).
    public func unconfigure(address: IPv4Address) {
        configuration.addresses.removeAll { $0 == address }
        owned.remove(address)
        if configuration.addresses.isEmpty {
            configuration.subnet = IPv4Subnet(address: .any, prefixLength: 0)!
            configuration.defaultRouter = nil
        }
    }

    /// Sends an ARP probe for `address` (RFC 5227: sender address 0.0.0.0), to find out whether
    /// anyone uses it before we do.
    public func sendARPProbe(for address: IPv4Address) {
        counters.increment(.arpRequestsSent)
        emitARP(
            ARPHeader(
                operation: .request, senderHardwareAddress: macAddress, senderProtocolAddress: .any,
                targetHardwareAddress: .zero, targetProtocolAddress: address), to: .broadcast)
    }

    /// Starts the stack: announces every owned address with a gratuitous ARP (if configured). Later
    /// calls do nothing.
    public func start(now: NIODeadline) {
        guard !started else { return }
        started = true
        guard configuration.gratuitousARPOnStart else { return }
        for address in configuration.addresses {
            emitARP(
                ARPHeader(
                    operation: .request, senderHardwareAddress: macAddress, senderProtocolAddress: address,
                    targetHardwareAddress: .zero, targetProtocolAddress: address), to: .broadcast)
        }
    }

    /// Called when a frame is queued for transmission while none were waiting: the owner should
    /// call `drainOutput(_:)` soon. `StackDriver` uses it so that output produced outside its own
    /// calls (a socket written from a task, a service's reply) is sent without waiting for the next
    /// frame or timer.
    public var onOutput: (() -> Void)?

    /// The stack's one way out: hands every frame waiting to be sent to `body`, in order, each with
    /// the offloads it asks of the link (always `.none` unless `linkOffloads` allows some), then
    /// empties the queue keeping its storage (no array per flush). Frames queued while it runs are
    /// handed over in the same call. A frame's buffer may be reused by the stack once `body`
    /// returns, so a caller that keeps it keeps a copy-on-write reference, never shared bytes.
    public func drainOutput(_ body: (OutgoingFrame) -> Void) {
        var index = 0
        while index < outbox.count {
            let frame = outbox[index]
            index += 1
            body(frame)
            let capacity = frame.frame.capacity
            if capacity >= Headroom.maximum, capacity <= Self.headerBufferCapacity, headerBuffers.count < Self.headerBufferLimit {
                headerBuffers.append(frame.frame)
            }
        }
        outbox.removeAll(keepingCapacity: true)
    }

    /// An empty buffer with `Headroom.maximum` in front, for a frame that is only headers: a
    /// recycled one when there is one.
    func headerBuffer() -> ByteBuffer {
        guard var buffer = headerBuffers.popLast() else { return .withHeadroom(capacity: 0) }
        buffer.clear()
        buffer.moveWriterIndex(to: Headroom.maximum)
        buffer.moveReaderIndex(to: Headroom.maximum)
        return buffer
    }

    /// Whether frames are waiting in `takeOutput()`.
    public var hasOutput: Bool { !outbox.isEmpty }

    /// When `poll(now:)` next has work (ARP retries and expiry, reassembly timeouts, TCP timers, the
    /// timers of services attached to the stack), if ever.
    public var nextDeadline: NIODeadline? {
        // Read on every flush: no array, no allocation.
        var earliest = arpCache.nextDeadline
        func consider(_ time: NIODeadline?) {
            guard let time else { return }
            if earliest.map({ time < $0 }) ?? true { earliest = time }
        }
        consider(reassembler.nextDeadline)
        consider(tcpNextDeadline)
        for client in timerClients { consider(client.value?.nextDeadline) }
        return earliest
    }

    /// Runs the timers due at `now`; frames they produce wait in `takeOutput()`.
    public func poll(now: NIODeadline) {
        for action in arpCache.poll(now: now) { handle(action, now: now) }
        counters.increment(.ipv4ReassemblyTimeout, by: UInt64(reassembler.poll(now: now)))
        pollTCP(now: now)
        timerClients.removeAll { $0.value == nil }
        for client in timerClients {
            if let service = client.value, let due = service.nextDeadline, due <= now { service.poll(now: now) }
        }
    }

    /// Attaches a service's timers to the stack's: its deadline joins `nextDeadline` and `poll` runs
    /// it when due. Held weakly.
    public func registerTimerClient(_ client: any StackTimerClient) {
        timerClients.append(WeakTimerClient(value: client))
    }

    // MARK: - Input

    /// Handles one frame from the link at stack time `now`: any replies are queued for `takeOutput()`,
    /// and the forwarder and socket handlers are called before it returns. A frame that is malformed
    /// or not for the stack is dropped and counted.
    public func receive(_ buffer: ByteBuffer, now: NIODeadline) {
        receive(buffer, offload: .none, now: now)
    }

    /// Like `receive(_:now:)`, for a frame that came with offload metadata: with
    /// `checksumTrusted` its TCP or UDP checksum is not verified (the guest's kernel left it partial
    /// for the link to fill in, which on a local link nobody does).
    public func receive(_ buffer: ByteBuffer, offload: FrameOffload, now: NIODeadline) {
        receivingTrustedChecksum = offload.checksumTrusted
        defer { receivingTrustedChecksum = false }
        counters.increment(.framesReceived)
        let frame: EthernetFrame
        do { frame = try EthernetFrame(buffer) } catch {
            counters.increment(.ethernetMalformed)
            return
        }
        let destination = frame.destination
        guard destination == macAddress || destination.isBroadcast else {
            counters.increment(.ethernetNotForUs)
            return
        }
        // The guest link is untagged; a tagged frame is for a VLAN we are not on.
        guard frame.vlan == nil else {
            counters.increment(.ethernetUnsupportedType)
            return
        }
        switch frame.etherType {
        case .arp: receiveARP(frame, now: now)
        case .ipv4: receiveIPv4(frame.payload, linkSource: frame.source, linkBroadcast: destination.isBroadcast, now: now)
        default: counters.increment(.ethernetUnsupportedType)
        }
    }

    func transmit(_ frame: ByteBuffer, offload: FrameOffload = .none, payload: ByteBuffer? = nil) {
        counters.increment(.framesSent)
        let first = outbox.isEmpty
        outbox.append(OutgoingFrame(frame: frame, offload: offload, payload: payload))
        if first { onOutput?() }
    }

    // MARK: - IPv4 input

    private func receiveIPv4(_ bytes: ByteView, linkSource: MACAddress, linkBroadcast: Bool, now: NIODeadline) {
        counters.increment(.ipv4Received)
        let packet: IPv4Packet
        do { packet = try IPv4Packet(bytes) } catch {
            counters.increment(.ipv4Malformed)
            return
        }
        if !packet.isHeaderChecksumValid {
            guard packet.headerChecksum == 0, Self.isDHCPClientMessage(packet) else {
                counters.increment(.ipv4BadChecksum)
                return
            }
            counters.increment(.ipv4ZeroChecksumAccepted)
        }
        let source = packet.source
        if source.isMulticast || source == .broadcast || source == configuration.subnet.broadcast || owns(source)
            || source.isLoopback || (source != .any && source == configuration.subnet.network && configuration.subnet.prefixLength < 31)
        {
            counters.increment(.ipv4BadSource)
            return
        }
        let destination = packet.destination
        let local = owns(destination)
        let broadcast = destination == .broadcast || destination == configuration.subnet.broadcast
        // RFC 1122 §3.3.6: a unicast datagram that came as a link-layer broadcast is discarded.
        if linkBroadcast && !broadcast {
            counters.increment(.ipv4NotForUs)
            return
        }
        let forwarded = !broadcast && isForwarded(destination)
        guard local || broadcast || forwarded else {
            counters.increment(.ipv4NotForUs)
            return
        }
        // Only the guest's own subnet is carried to host sockets: a spoofed outside source would
        // make the NAT open flows whose replies go nowhere.
        if forwarded && !configuration.subnet.contains(source) {
            counters.increment(.forwardedBadSource)
            return
        }
        if packet.isFragment {
            counters.increment(.ipv4FragmentsReceived)
            switch reassembler.add(packet, now: now) {
            case .incomplete:
                return
            case .complete(let whole):
                counters.increment(.ipv4Reassembled)
                guard let complete = try? IPv4Packet(whole) else {
                    counters.increment(.ipv4Malformed)
                    return
                }
                deliver(complete, broadcast: broadcast, linkSource: linkSource, now: now)
            case .dropped(let reason):
                switch reason {
                case .overlap: counters.increment(.ipv4ReassemblyOverlap)
                case .oversized: counters.increment(.ipv4ReassemblyOversized)
                case .malformed: counters.increment(.ipv4ReassemblyMalformed)
                case .limit: counters.increment(.ipv4ReassemblyLimit)
                case .duplicate: counters.increment(.ipv4ReassemblyDuplicate)
                case .timeout: counters.increment(.ipv4ReassemblyTimeout)
                }
            }
            return
        }
        deliver(packet, broadcast: broadcast, linkSource: linkSource, now: now)
    }

    private func deliver(_ packet: IPv4Packet, broadcast: Bool, linkSource: MACAddress, now: NIODeadline) {
        switch packet.protocol {
        case .icmp: receiveICMP(packet, broadcast: broadcast, now: now)
        case .udp: receiveUDP(packet, broadcast: broadcast, linkSource: linkSource, now: now)
        case .tcp: receiveTCP(packet, broadcast: broadcast, now: now)
        default: counters.increment(.ipv4UnknownProtocol)
        }
    }

    // MARK: - IPv4 output

    /// A fresh IP identification.
    func makeIdentification() -> UInt16 {
        defer { nextIdentification &+= 1 }
        return nextIdentification
    }

    /// Sends an IPv4 datagram (a buffer whose readable bytes are the whole datagram, ideally with
    /// headroom for the Ethernet header) to its destination on the link: straight to
    /// `linkDestination` when given, otherwise to the next hop (the destination on the subnet, else
    /// the default router) resolved with ARP, holding the datagram whole meanwhile. It is fragmented
    /// when it exceeds the MTU and DF is clear; with DF set it is dropped, and "fragmentation needed"
    /// goes back to its source unless that is one of the stack's addresses. A datagram that does not
    /// parse, or has no route, is dropped and counted.
    public func sendIPv4(_ datagram: consuming ByteBuffer, linkDestination: MACAddress? = nil, now: NIODeadline) {
        sendIPv4(datagram, offload: .none, linkDestination: linkDestination, now: now)
    }

    /// `sendIPv4(_:linkDestination:now:)` for a datagram with offloads (a TCP segment larger than the
    /// MTU, a partial checksum), which only `linkOffloads` allows. Offsets in `offload` count from the
    /// start of the Ethernet frame.
    func sendIPv4(_ datagram: consuming ByteBuffer, offload: FrameOffload, linkDestination: MACAddress? = nil, now: NIODeadline) {
        // What routing needs is read from a view that ends before the datagram moves on: a live view
        // shares the storage, and the Ethernet header written later would then copy the whole
        // datagram.
        let destination: IPv4Address
        do {
            guard let packet = try? IPv4Packet(copy datagram) else {
                counters.increment(.ipv4Malformed)
                return
            }
            if packet.totalLength > configuration.mtu && packet.dontFragment && offload.segmentSize == 0 {
                counters.increment(.ipv4FragmentationNeeded)
                if !owns(packet.source) {
                    sendICMPError(
                        type: .destinationUnreachable, code: 4,
                        restOfHeader: UInt32(UInt16(clamping: configuration.mtu)), about: packet, now: now)
                }
                return
            }
            destination = packet.destination
        }
        if let linkDestination {
            transmitIPv4(datagram, to: linkDestination, offload: offload)
            return
        }
        if destination == .broadcast || destination == configuration.subnet.broadcast {
            transmitIPv4(datagram, to: .broadcast, offload: offload)
            return
        }
        guard let nextHop = nextHop(for: destination) else {
            counters.increment(.ipv4NoRoute)
            return
        }
        // Sent at once when resolved (the datagram moves straight on); otherwise held (or refused and
        // counted) by the cache.
        if let mac = arpCache.lookup(nextHop, now: now) {
            transmitIPv4(datagram, to: mac, offload: offload)
            return
        }
        // A held datagram leaves later as an ordinary one: its checksum is finished here (and one
        // larger than the MTU is fragmented when it goes).
        if offload.hasPartialChecksum {
            datagram.completePartialChecksum(start: Int(offload.checksumStart) - 14, offset: Int(offload.checksumOffset))
        }
        for action in arpCache.resolve(nextHop, holding: datagram, now: now) { handle(action, now: now) }
    }

    /// The address to resolve for `destination`: itself on the subnet, otherwise the default router;
    /// nil when there is no route.
    func nextHop(for destination: IPv4Address) -> IPv4Address? {
        guard !configuration.subnet.contains(destination) || configuration.addresses.isEmpty else { return destination }
        guard let router = configuration.defaultRouter, configuration.subnet.contains(router) else { return nil }
        return router
    }

    /// Frames a datagram for `mac`, fragmenting it to the MTU first when needed. The datagram is
    /// consumed: the Ethernet header goes into its headroom without copying it.
    func transmitIPv4(_ datagram: consuming ByteBuffer, to mac: MACAddress, offload: FrameOffload = .none) {
        let ethernet = EthernetHeader(destination: mac, source: macAddress, etherType: .ipv4)
        if offload != .none {
            ethernet.prepend(to: &datagram)
            transmit(datagram, offload: offload)
            return
        }
        if datagram.readableBytes > configuration.mtu, let packet = try? IPv4Packet(copy datagram), packet.totalLength > configuration.mtu {
            let pieces = fragment(packet, mtu: configuration.mtu)
            counters.increment(.ipv4FragmentsSent, by: UInt64(pieces.count))
            for var piece in pieces {
                ethernet.prepend(to: &piece)
                transmit(piece)
            }
            return
        }
        ethernet.prepend(to: &datagram)
        transmit(datagram)
    }

    /// Builds and sends a datagram from a transport payload that already has its transport header.
    func sendIPv4(
        payload: consuming ByteBuffer, protocol proto: IPProtocol, from source: IPv4Address, to destination: IPv4Address,
        dontFragment: Bool, dscp: UInt8 = 0, linkDestination: MACAddress? = nil, offload: FrameOffload = .none, now: NIODeadline
    ) {
        var header = IPv4Header(source: source, destination: destination, protocol: proto, timeToLive: 64)
        header.identification = makeIdentification()
        header.dontFragment = dontFragment
        header.dscp = dscp
        header.prepend(to: &payload)
        sendIPv4(consume payload, offload: offload, linkDestination: linkDestination, now: now)
    }
}

/// A service with timers of its own, driven through the stack's `nextDeadline` and `poll`.
public protocol StackTimerClient: AnyObject {
    /// When the service next needs `poll(now:)`; nil when no timer is pending. Read every time the
    /// stack computes its own `nextDeadline`, so it should be cheap.
    var nextDeadline: NIODeadline? { get }
    /// Runs the service's work due at `now`; the stack calls it from its own `poll(now:)` once
    /// `nextDeadline` has passed, on the stack's thread.
    func poll(now: NIODeadline)
}

struct WeakTimerClient {
    weak var value: (any StackTimerClient)?
}
