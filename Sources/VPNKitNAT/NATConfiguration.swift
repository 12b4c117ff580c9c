public import NIOCore
public import VPNKitBase

/// How the NAT carries guest flows to host sockets. Defaults follow vpnkit.
public struct NATConfiguration: Sendable {
    /// The guest-side address that stands for the host's loopback (127.0.0.1, or ::1 for an IPv6
    /// alias); default 192.168.65.2, nil for none. Published ports connect into the guest from it
    /// (from the gateway when nil), but for clients shown as themselves (`preservesClientAddress`).
    public var hostAlias: IPAddress? = .v4(IPv4Address(192, 168, 65, 2))
    /// The IPv6 guest-side address of the host's loopback (::1); default fd00:65::2, nil for none.
    /// The NAT makes the stack own it when it lies in the stack's IPv6 prefix.
    public var hostAlias6: IPAddress? = .v6(IPv6Address(0xFD00, 0x65, 0, 0, 0, 0, 0, 2))
    /// Whether the host aliases (IPv4 and IPv6) reach the host's loopback; default true. When false,
    /// connections to them are refused with RST and their datagrams answered with ICMP port unreachable.
    public var hostLoopback = true
    /// Whether a published port's host client that is not on the host's loopback reaches the guest
    /// from its own address and port (the guest's server sees who really connected) rather than from
    /// the host alias; default true. Loopback clients come from the host alias either way, and so do
    /// clients the stack cannot speak for: of the other family than the guest address used, on the
    /// guest's own subnet or prefix, or an address the NAT never forwards to (link-local, say). The
    /// guest's replies go to its default route, the gateway, where the stack matches them to the
    /// connection. `vpnkit run --publish-source alias` turns it off.
    public var preservesClientAddress = true
    /// The host address the NAT's TCP connections and UDP flows to IPv4 destinations leave from
    /// (slirp4netns's `--outbound-addr`); nil, the default, lets the host's routing choose. Ping and
    /// the DNS service's own upstream queries are not bound. UDP flows are bound on Linux only.
    public var outboundAddress: IPv4Address?
    /// The same for IPv6 destinations (`--outbound-addr6`); nil by default.
    public var outboundAddress6: IPv6Address?
    /// TCP connections through the NAT at once (connecting and open, published ports included); default
    /// 4096. Further guest SYNs are answered with RST and counted in `tcpRefusedAtLimit`.
    public var maximumConnections = 4096
    /// How long a connection may take to open; default 10 s. A host connect for a guest SYN: then the
    /// guest gets RST. A guest that does not answer a published port's connection: then the host
    /// client gets RST (checked every second).
    public var connectTimeout: TimeAmount = .seconds(10)
    /// UDP flows (guest address and port) at once; default 1024. Opening one more closes the least
    /// recently used one.
    public var maximumUDPFlows = 1024
    /// A UDP flow with no datagram either way for this long is closed (checked every second); default 60
    /// s. Published UDP ports' clients expire the same way.
    public var udpIdleTimeout: TimeAmount = .seconds(60)
    /// Guest datagrams held per UDP flow while its host socket is being opened; default 64. Further ones
    /// are dropped and counted in `udpDropsPending`.
    public var udpPendingDatagramLimit = 64
    /// Receive and send buffer size, in bytes, of each UDP flow's host socket; default 1 MiB, 0 for the
    /// system's defaults.
    public var udpSocketBufferBytes: UInt32 = 1 << 20
    /// The most bytes read from a host TCP socket at once; default 256 KiB. It bounds what waits for the
    /// guest's window, per flow. Reads start at 16 KiB and grow toward this while a flow is busy.
    public var tcpReadChunkBytes = 262_144
    /// How long a guest ping to an outside address waits for its reply before it is forgotten; default 30 s.
    public var icmpEchoTimeout: TimeAmount = .seconds(30)
    /// Pings waiting for replies at once; default 4096. Further requests are dropped and counted in
    /// `icmpEchoDropped`.
    public var maximumICMPEchoesInFlight = 4096

    /// Creates a configuration with vpnkit's defaults, given on each property.
    public init() {}
}

/// What the NAT counts.
public struct NATCounters: Sendable, Hashable, Codable {
    /// Host connects begun for guest SYNs.
    public var tcpConnectsStarted: UInt64 = 0
    /// Host connects that succeeded and were handed to the guest's connection.
    public var tcpConnectsSucceeded: UInt64 = 0
    /// Host connects the destination refused (ECONNREFUSED); the guest got RST.
    public var tcpConnectsRefused: UInt64 = 0
    /// Host connects that failed otherwise. Network and host unreachable give the guest ICMP unreachable,
    /// other errors RST.
    public var tcpConnectsFailed: UInt64 = 0
    /// Host connects that took longer than `NATConfiguration.connectTimeout`; the guest got RST.
    public var tcpConnectsTimedOut: UInt64 = 0
    /// Guest SYNs refused with RST because `maximumConnections` flows were open.
    public var tcpRefusedAtLimit: UInt64 = 0
    /// Guest SYNs to the host alias refused with RST because `hostLoopback` is off.
    public var tcpRefusedHostLoopback: UInt64 = 0
    /// Flows reset because the host socket failed, or closed while the guest had sent data it would never read.
    public var tcpResetsFromHost: UInt64 = 0
    /// Flows whose guest connection ended other than by an orderly close (reset, timed out); the host
    /// socket was reset.
    public var tcpResetsFromGuest: UInt64 = 0
    /// Payload bytes read from guest connections and written to host sockets, published ports included.
    public var tcpBytesToHost: UInt64 = 0
    /// Payload bytes read from host sockets and taken by guest connections, published ports included.
    public var tcpBytesToGuest: UInt64 = 0
    /// TCP flows removed from the table, however they ended (failed connects included).
    public var tcpFlowsClosed: UInt64 = 0
    /// UDP flows (a guest address and port) given a host socket.
    public var udpFlowsOpened: UInt64 = 0
    /// UDP flows closed after `udpIdleTimeout` without a datagram either way.
    public var udpFlowsExpired: UInt64 = 0
    /// UDP flows closed, least recently used first, to make room when `maximumUDPFlows` were open.
    public var udpFlowsEvicted: UInt64 = 0
    /// Guest datagrams sent from host sockets.
    public var udpDatagramsToHost: UInt64 = 0
    /// Datagrams received on host sockets and passed to the guest.
    public var udpDatagramsToGuest: UInt64 = 0
    /// Payload bytes of `udpDatagramsToHost`.
    public var udpBytesToHost: UInt64 = 0
    /// Payload bytes of `udpDatagramsToGuest`.
    public var udpBytesToGuest: UInt64 = 0
    /// Guest datagrams dropped because `udpPendingDatagramLimit` were already waiting for the flow's host
    /// socket to open.
    public var udpDropsPending: UInt64 = 0
    /// Guest datagrams dropped because the host socket could not take more (its channel was not writable).
    public var udpDropsHostBusy: UInt64 = 0
    /// Guest datagrams dropped because their flow's host socket could not be opened.
    public var udpDropsSocketError: UInt64 = 0
    /// Guest datagrams dropped because their destination's family differs from their source's (the
    /// flow's host socket is of the guest's family).
    public var udpDropsAddressFamily: UInt64 = 0
    /// ICMP destination-unreachable errors reported on host sockets and relayed to the guest.
    public var udpUnreachablesToGuest: UInt64 = 0
    /// Guest datagrams to the host alias answered with ICMP port unreachable because `hostLoopback` is off.
    public var udpRefusedHostLoopback: UInt64 = 0
    /// Guest pings sent from the host ICMP socket.
    public var icmpEchoRequests: UInt64 = 0
    /// Echo replies matched to a guest ping and passed to the guest.
    public var icmpEchoReplies: UInt64 = 0
    /// Guest pings dropped: no ICMP socket of their family is open (see `NAT.startICMP()`),
    /// `maximumICMPEchoesInFlight` were already waiting, or source and destination families differ.
    public var icmpEchoDropped: UInt64 = 0
    /// Forwarded pings that got no reply within `icmpEchoTimeout`.
    public var icmpEchoTimedOut: UInt64 = 0
    /// Host connections to published TCP ports forwarded into the guest.
    public var publishedConnections: UInt64 = 0
    /// Host connections to published TCP ports closed at once: no guest address, the connection limit
    /// reached, or the stack refused the connect.
    public var publishedRefused: UInt64 = 0
    /// Host connections to published TCP ports reset because the guest did not answer within
    /// `NATConfiguration.connectTimeout`.
    public var publishedTimedOut: UInt64 = 0
    /// Host datagrams to published UDP ports forwarded into the guest.
    public var publishedDatagrams: UInt64 = 0
    /// Published TCP connections and UDP clients that reach the guest from the host client's own
    /// address and port (`NATConfiguration.preservesClientAddress`) rather than the host alias.
    public var publishedClientAddresses: UInt64 = 0

    /// Creates counters that are all zero.
    public init() {}
}

/// One flow in the NAT's table, for stats.
public struct NATFlowSnapshot: Sendable, Hashable, Codable {
    /// `tcp` or `udp`.
    public var `protocol`: String
    /// The guest's end, as `address:port` (`[address]:port` for IPv6).
    public var guest: String
    /// The far end as the guest addresses it, `address:port` (`[address]:port` for IPv6); `*` for UDP, whose flows take datagrams
    /// from any remote.
    public var remote: String
    /// TCP: the guest connection's state, or `connecting` while the host connect is under way. UDP:
    /// `open` or `closed`.
    public var state: String
    /// Payload bytes passed from the guest to the host socket.
    public var bytesToHost: UInt64
    /// Payload bytes passed from the host socket to the guest.
    public var bytesToGuest: UInt64
    /// Seconds since the flow was opened.
    public var ageSeconds: Double
}

extension NATConfiguration {
    /// What the NAT sets on every host TCP socket it connects, from the channel's initializer: reads
    /// only when asked (the guest's window paces them), half-close, keepalive, one read per wakeup,
    /// write watermarks, and a receive buffer that starts small and grows to `tcpReadChunkBytes`.
    /// Set synchronously, not as bootstrap options: each of those is a chain of futures per
    /// connection, which every short connection would pay for. TCP_NODELAY is not among them:
    /// `ClientBootstrap` sets it by default, and `ServerBootstrap` on the listener, whose accepted
    /// sockets inherit it.
    public func configureHostTCPChannel(_ channel: any Channel) throws {
        let marks = Self.hostWriteMarks
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        try options.setOption(.autoRead, value: false)
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.socketOption(.so_keepalive), value: 1)
        try options.setOption(.maxMessagesPerRead, value: 1)
        try options.setOption(.writeBufferWaterMark, value: .init(low: marks.low, high: marks.high))
        // Start small and let bulk flows grow to the chunk: the receive buffer lives as long as the
        // channel, so an initial 256 KiB would cost every idle flow that much, and a guest can open
        // thousands of flows that carry nothing (a SYN flood at the host alias).
        let chunk = tcpReadChunkBytes
        try options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: hostInitialRead, maximum: chunk))
    }

    /// A host socket's write queue marks, on either loop: above `high` the flow stops moving guest
    /// data to it; back under `low` it moves again.
    static let hostWriteMarks = (low: 128 * 1024, high: 512 * 1024)

    /// A host socket's first reads, on either loop; they grow to `tcpReadChunkBytes` while they fill.
    var hostInitialRead: Int { min(16_384, tcpReadChunkBytes) }
}

extension NATConfiguration {
    /// The outbound address of `family`, when one is set.
    func outbound(_ family: IPAddress.Family) -> IPAddress? {
        switch family {
        case .v4: return outboundAddress.map(IPAddress.v4)
        case .v6: return outboundAddress6.map(IPAddress.v6)
        }
    }
}
