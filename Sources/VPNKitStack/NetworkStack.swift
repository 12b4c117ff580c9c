public import NIOCore
public import VPNKitARP
public import VPNKitBase
import VPNKitEthernet
public import VPNKitIPv4
import VPNKitUDP
import VPNKitTCP

/// The stack's core: Ethernet, ARP, IPv4 (with reassembly and fragmentation), ICMPv4, UDP and TCP,
/// for one link; traffic to addresses it forwards goes to its `forwarder`. A state machine: frames
/// and the time go in (`receive`, `poll`), frames to transmit come out (`drainOutput(_:)`), and
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
    /// The guest's IPv4 address on the subnet most recently seen as the source of its datagrams or
    /// the sender of its ARP (not 0.0.0.0, not ours); nil before any. With `guestIPv6Address`, what a
    /// published port reaches the guest at when it has no DHCP lease.
    public internal(set) var guestIPv4Address: IPv4Address?
    /// The IPv4 datagrams being reassembled from fragments (read-only, for inspection).
    public internal(set) var reassembler: IPv4Reassembler
    var icmpErrors: TokenBucket
    var outbox: [OutgoingFrame] = []
    /// Buffers of header-only frames (ACKs, the heads of gathered segments) the link has taken,
    /// written into again for the next such frame instead of a new allocation. One the link still
    /// holds is not written over: ByteBuffer copies on write, so clearing it gives fresh storage,
    /// which is what a new buffer costs anyway. At most `headerBufferLimit`.
    var headerBuffers: [ByteBuffer] = []
    static let headerBufferLimit = 512
    /// The largest buffer kept for reuse as a header-only frame's.
    static let headerBufferCapacity = 512
    /// Set while a frame whose transport checksum the link vouches for is being handled.
    var receivingTrustedChecksum = false
    /// Offloads the link takes for frames we send (see `FrameOffload`). Set by whoever attaches the
    /// link (`StackDriver` asks its transport), before connections open: with `.tcpSegmentation`,
    /// TCP sends segments of up to 64 KiB whatever the MTU, with partial checksums, and the link cuts
    /// them to the MSS. Empty by default: every frame fits the MTU and carries complete checksums.
    public var linkOffloads: LinkOffloads = []
    var nextIdentification: UInt16 = 1
    private var started = false
    private var owned: Set<IPv4Address>
    /// IPv6 on the link, when the configuration turns it on.
    var ipv6: IPv6State?
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
    var tcpTimers = DeadlineHeap<TCPKey>()
    /// Takes the traffic for addresses the stack forwards (the NAT); held weakly.
    public weak var forwarder: (any PacketForwarder)?
    var nextEphemeralPort: UInt16 = 32768
    private var timerClients: [WeakTimerClient] = []

    deinit {
        // Sockets hold their entries until the connection leaves the table: let go of those left.
        for entry in tcpConnections.values { entry.socket.entry = nil }
    }

    /// Creates a stack with `configuration` (by default 192.168.65.0/24 with the gateway at .1). It
    /// sends nothing until it is started or asked to.
    public init(configuration: StackConfiguration = StackConfiguration()) {
        self.configuration = configuration
        self.arpCache = ARPCache(configuration: configuration.arp)
        self.reassembler = IPv4Reassembler(configuration: configuration.reassembly)
        self.icmpErrors = TokenBucket(rate: configuration.icmpErrorsPerSecond, burst: configuration.icmpErrorBurst)
        self.owned = Set(configuration.addresses)
        self.ipv6 = configuration.ipv6.map { IPv6State(configuration: $0, reassembly: configuration.reassembly) }
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
        if ipv6 != nil { sendRouterAdvertisement(to: nil, now: now) }
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
        if let ipv6 {
            consider(ipv6.neighbors.nextDeadline)
            consider(ipv6.reassembler.nextDeadline)
            consider(ipv6.nextAdvertisement)
        }
        consider(tcpNextDeadline)
        for client in timerClients { consider(client.value?.nextDeadline) }
        return earliest
    }

    /// Runs the timers due at `now`; frames they produce wait for `drainOutput(_:)`.
    public func poll(now: NIODeadline) {
        for action in arpCache.poll(now: now) { handle(action, now: now) }
        counters.increment(.ipv4ReassemblyTimeout, by: UInt64(reassembler.poll(now: now)))
        if ipv6 != nil { pollIPv6(now: now) }
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

    /// Handles one frame from the link at stack time `now`: any replies are queued for `drainOutput(_:)`,
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
        guard destination == macAddress || destination.isBroadcast || (ipv6 != nil && destination.rawValue >> 32 == 0x3333) else {
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
        case .ipv6 where ipv6 != nil: receiveIPv6(frame.payload, linkSource: frame.source, now: now)
        default: counters.increment(.ethernetUnsupportedType)
        }
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
