public import NIOCore
public import VPNKitBase

/// How the NAT carries guest flows to host sockets. Defaults follow vpnkit.
public struct NATConfiguration: Sendable {
    /// The guest-side address that stands for the host's loopback (127.0.0.1); nil: none.
    public var hostAlias: IPv4Address? = IPv4Address("192.168.65.2")
    /// Whether the host alias reaches the host's loopback; when false, connections to it are refused
    /// with RST and its datagrams answered with ICMP unreachable.
    public var hostLoopback = true
    /// TCP connections through the NAT at once (connecting and open); further SYNs are answered with
    /// RST and counted.
    public var maximumConnections = 4096
    /// How long a host connect may take before the guest's SYN is refused.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// UDP flows (guest address and port) at once; beyond, the least recently used one is closed.
    public var maximumUDPFlows = 1024
    /// A UDP flow with no datagram either way for this long is closed.
    public var udpIdleTimeout: TimeAmount = .seconds(60)
    /// Datagrams from the guest held per UDP flow while its host socket is being opened.
    public var udpPendingDatagramLimit = 64
    /// Receive and send buffer sizes of each UDP flow's host socket (0: the system's defaults).
    public var udpSocketBufferBytes: UInt32 = 1 << 20
    /// Bytes read from a host TCP socket in one read (bounds what waits for the guest's window).
    public var tcpReadChunkBytes = 262_144
    /// Guest pings to outside addresses: each waits this long for its reply.
    public var icmpEchoTimeout: TimeAmount = .seconds(30)
    /// Pings waiting for replies at once; beyond, requests are dropped and counted.
    public var maximumICMPEchoesInFlight = 4096

    public init() {}
}

/// What the NAT counts.
public struct NATCounters: Sendable, Hashable, Codable {
    public var tcpConnectsStarted: UInt64 = 0
    public var tcpConnectsSucceeded: UInt64 = 0
    public var tcpConnectsRefused: UInt64 = 0
    public var tcpConnectsFailed: UInt64 = 0
    public var tcpConnectsTimedOut: UInt64 = 0
    public var tcpRefusedAtLimit: UInt64 = 0
    public var tcpRefusedHostLoopback: UInt64 = 0
    public var tcpResetsFromHost: UInt64 = 0
    public var tcpResetsFromGuest: UInt64 = 0
    public var tcpBytesToHost: UInt64 = 0
    public var tcpBytesToGuest: UInt64 = 0
    public var tcpFlowsClosed: UInt64 = 0
    public var udpFlowsOpened: UInt64 = 0
    public var udpFlowsExpired: UInt64 = 0
    public var udpFlowsEvicted: UInt64 = 0
    public var udpDatagramsToHost: UInt64 = 0
    public var udpDatagramsToGuest: UInt64 = 0
    public var udpBytesToHost: UInt64 = 0
    public var udpBytesToGuest: UInt64 = 0
    public var udpDropsPending: UInt64 = 0
    public var udpDropsHostBusy: UInt64 = 0
    public var udpDropsSocketError: UInt64 = 0
    public var udpUnreachablesToGuest: UInt64 = 0
    public var udpRefusedHostLoopback: UInt64 = 0
    public var icmpEchoRequests: UInt64 = 0
    public var icmpEchoReplies: UInt64 = 0
    public var icmpEchoDropped: UInt64 = 0
    public var icmpEchoTimedOut: UInt64 = 0
    public var publishedConnections: UInt64 = 0
    public var publishedRefused: UInt64 = 0
    public var publishedDatagrams: UInt64 = 0

    public init() {}
}

/// One flow in the NAT's table, for stats.
public struct NATFlowSnapshot: Sendable, Hashable, Codable {
    public var `protocol`: String
    public var guest: String
    public var remote: String
    public var state: String
    public var bytesToHost: UInt64
    public var bytesToGuest: UInt64
    public var ageSeconds: Double
}
