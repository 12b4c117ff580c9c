public import Logging
public import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import VPNKitBase
public import VPNKitStack
public import VPNKitRuntime

/// The NAT: guest TCP, UDP and ping to addresses off the guest's subnet (and to the host alias)
/// become ordinary host sockets opened with SwiftNIO on the stack's own event loop. Attach it to a
/// running `StackDriver`; it lives as long as the driver. Confined to the driver's event loop.
///
/// How what the NAT does reaches the link, one way: NAT code that begins outside the driver's own
/// calls (a host socket's event, the NAT's pump and sweep tasks, a public method) and acts on the
/// stack runs inside `driver.perform`, which at its end sends the frames produced and re-arms the
/// stack's timer (an action on a connection can arm a timer without sending anything). NAT code the
/// stack calls (a forwarder method, a guest socket's callback) already runs inside a call of the
/// driver's, which does the same when it returns. The NAT and its flows never flush the driver.
public final class NAT {
    /// The configuration given at creation.
    public let configuration: NATConfiguration
    let driver: StackDriver
    let logger: Logger
    /// Holds back lines a guest can trigger per packet or connection (refusals, evictions, failed
    /// host connects) beyond a burst of 10 and then one a second per kind; the sweep says how many.
    var logLimiter = LogRateLimiter()
    var stack: NetworkStack { driver.stack }
    var eventLoop: any EventLoop { driver.eventLoop }
    /// What the NAT has done so far, updated on the driver's event loop.
    public internal(set) var counters = NATCounters()
    var tcpFlows: [TCPConnectionRequest: TCPFlow] = [:]
    var udpFlows: [UDPFlowKey: UDPFlow] = [:]
    var icmp: ICMPForwarder?
    var icmp6: ICMPForwarder?
    var publishers: [PortPublisher] = []
    /// Where host TCP connects bind, per destination family (`NATConfiguration.outboundAddress`,
    /// `outboundAddress6`), made once.
    let outboundTCPSource: (v4: SocketAddress?, v6: SocketAddress?)
    /// The id the next publication gets (ids are never reused while the NAT lives).
    var nextPublishedPortID: UInt64 = 1
    private var sweeper: RepeatedTask?
    private var closed = false

    /// Attaches a NAT to `driver` (call on its event loop). Ping to outside addresses needs a raw
    /// ICMP socket (CAP_NET_RAW) or an ICMP datagram socket (the host's `net.ipv4.ping_group_range`);
    /// `icmpAvailable` says whether either could be opened.
    public init(driver: StackDriver, configuration: NATConfiguration = NATConfiguration(), logger: Logger = Logger(label: "vpnkit.nat")) {
        driver.eventLoop.preconditionInEventLoop()
        self.driver = driver
        self.configuration = configuration
        self.logger = logger
        outboundTCPSource = (
            configuration.outbound(.v4).flatMap { SocketAddress.ip($0, port: 0) }, configuration.outbound(.v6).flatMap { SocketAddress.ip($0, port: 0) }
        )
        driver.stack.forwarder = self
        // The IPv6 host alias is answered for (neighbour discovery) like the IPv4 one is by ARP.
        if case .v6(let alias6)? = configuration.hostAlias6, driver.stack.configuration.ipv6?.onLink(alias6) == true {
            driver.stack.addIPv6Address(alias6)
        }
        driver.attachments.append(self)
        let weakSelf = NIOLoopBound(WeakNAT(self), eventLoop: driver.eventLoop)
        sweeper = driver.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { task in
            guard let nat = weakSelf.value.nat else { return task.cancel() }
            nat.sweep(now: .now())
        }
    }

    /// Opens the ICMP echo forwarders (ICMPv6's too when the stack has IPv6); returns a description
    /// of their modes, or nil when ping to outside addresses is unavailable (no raw socket, no ICMP
    /// datagram socket, of either family).
    public func startICMP() -> EventLoopFuture<String?> {
        ICMPForwarder.open(nat: self)
    }

    /// Closes every host socket and stops the timers.
    public func close() {
        guard !closed else { return }
        closed = true
        sweeper?.cancel()
        driver.perform { _, now in
            for flow in tcpFlows.values { flow.abort(now: now) }
        }
        tcpFlows.removeAll()
        for flow in udpFlows.values { flow.close() }
        udpFlows.removeAll()
        icmp?.close()
        icmp6?.close()
        for publisher in publishers { publisher.close() }
        publishers.removeAll()
        if stack.forwarder === self { stack.forwarder = nil }
    }

    /// Closes every flow of the guest at `address` (it went away: its VM stopped). TCP host sockets
    /// are reset, UDP ones closed; other guests' flows are untouched.
    public func closeFlows(ofGuest address: IPAddress) {
        driver.perform { _, now in
            for (request, flow) in tcpFlows where request.guestAddress == address { flow.abort(now: now) }
        }
        for (key, flow) in udpFlows where key.guestAddress == address {
            udpFlows[key] = nil
            flow.close()
        }
    }

    /// TCP flows whose guest connection became readable during this turn of the loop: each is
    /// pumped once, after the turn's frames are all handed over, so a burst of segments reaches the
    /// host socket in one pass (one read from the stack, one window update) rather than one per
    /// segment. The two lists swap, so neither is copied (no allocation per turn).
    private var flowsToPump: [TCPFlow] = []
    private var flowsPumping: [TCPFlow] = []
    /// Received pieces on their way to a host socket; its storage is reused from pass to pass.
    var chunkScratch: [ByteBuffer] = []
    /// Flows' action lists, reused (see `takeActionList`).
    var actionLists: [[NATTCPFlowMachine.Action]] = []

    /// The task `pumpSoon` schedules, made once (as `StackDriver`'s flush is), not per turn.
    private lazy var scheduledPump: () -> Void = { [weak self] in self?.pumpFlows() }

    func pumpSoon(_ flow: TCPFlow) {
        if flowsToPump.isEmpty { eventLoop.assumeIsolated().execute(scheduledPump) }
        flowsToPump.append(flow)
    }

    private func pumpFlows() {
        swap(&flowsToPump, &flowsPumping)
        driver.perform { _, now in
            // By index: a for-in copy of the list would keep its storage shared while it is emptied.
            var index = 0
            while index < flowsPumping.count {
                flowsPumping[index].handle(.pump, now: now)
                index += 1
            }
        }
        flowsPumping.removeAll(keepingCapacity: true)
    }

    /// The host address a guest destination maps to: the host alias becomes the loopback address of
    /// its family (127.0.0.1, ::1); nil when `hostLoopback` is off.
    func hostAddress(for destination: IPAddress) -> IPAddress? {
        if isHostAlias(destination) { return configuration.hostLoopback ? .loopback(destination.family) : nil }
        return destination
    }

    /// Whether `address` is one of the host aliases (IPv4 or IPv6).
    func isHostAlias(_ address: IPAddress) -> Bool { address == configuration.hostAlias || address == configuration.hostAlias6 }

    /// The guest-side address a host source maps back to: a loopback source becomes the host alias
    /// of its family; nil when there is none or `hostLoopback` is off.
    func guestSideAddress(for hostSource: IPAddress) -> IPAddress? {
        if hostSource.isLoopback {
            guard configuration.hostLoopback else { return nil }
            // No array made: this runs for every datagram from the host.
            if let alias = configuration.hostAlias6, alias.family == hostSource.family { return alias }
            if let alias = configuration.hostAlias, alias.family == hostSource.family { return alias }
            return nil
        }
        return hostSource
    }

    /// The open TCP and UDP flows, for stats; `now` sets their ages.
    public func flows(now: NIODeadline = .now()) -> [NATFlowSnapshot] {
        tcpFlows.values.map { $0.snapshot(now: now) } + udpFlows.values.map { $0.snapshot(now: now) }
    }

    /// TCP flows in the table now, connecting or open, published-port connections included.
    public var openTCPFlows: Int { tcpFlows.count }
    /// UDP flows with a host socket now.
    public var openUDPFlows: Int { udpFlows.count }

    func sweep(now: NIODeadline) {
        expireUDP(now: now)
        icmp?.expire(now: now)
        icmp6?.expire(now: now)
        driver.perform { _, _ in
            for publisher in publishers { publisher.sweep(now: now, configuration: configuration) }
        }
        logger.logSuppressed(.notice, limiter: &logLimiter, now: now)
    }
}

extension NAT: StackDriverAttachment {
    /// Closes the NAT when its driver stops.
    public func driverDidStop() { close() }
}

final class WeakNAT {
    weak var nat: NAT?
    init(_ nat: NAT) { self.nat = nat }
}

extension NAT: PacketForwarder {
    /// Whether the NAT takes traffic to `destination`: the host aliases, any IPv4 address that is not
    /// the stack's own, loopback, multicast, or on the guest's subnet, and any IPv6 address that
    /// `isForwardableIPv6` admits and the stack does not own.
    public func forwards(_ destination: IPAddress) -> Bool {
        if isHostAlias(destination) { return true }
        if stack.owns(destination) { return false }
        switch destination {
        case .v4(let destination):
            if destination.isLoopback || destination.isMulticast { return false }
            // Other addresses on the guest's own subnet are not routed anywhere.
            return !stack.configuration.subnet.contains(destination)
        case .v6(let destination):
            return Self.isForwardableIPv6(destination, prefix: stack.configuration.ipv6?.prefix)
        }
    }

    /// A guest SYN to a forwarded address: the NAT connects a host socket and completes or refuses the
    /// guest's connection when the connect succeeds or fails.
    public func tcpConnectionRequested(_ request: TCPConnectionRequest, now: NIODeadline) {
        openTCP(request, now: now)
    }

    /// A guest datagram to a forwarded address: sent from the host socket of its guest address and port,
    /// opened on first use.
    public func udpDatagramReceived(_ message: UDPMessage, now: NIODeadline) {
        forwardUDP(message, now: now)
    }

    /// A guest ping to a forwarded address: sent from the host ICMP (or ICMPv6) socket, or dropped
    /// and counted when `startICMP()` has not opened one.
    public func icmpEchoRequested(_ request: ICMPEchoRequest, now: NIODeadline) {
        guard let forwarder = request.destination.family == .v6 ? icmp6 : icmp else {
            counters.icmpEchoDropped &+= 1
            return
        }
        forwarder.forward(request, now: now)
    }
}
