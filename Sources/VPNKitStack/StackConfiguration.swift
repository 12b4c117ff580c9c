import NIOCore
public import VPNKitARP
public import VPNKitBase
public import VPNKitIPv4
public import VPNKitTCP

/// Everything a stack needs to know about its link and its limits. Defaults follow vpnkit: the
/// 192.168.65.0/24 subnet with the gateway at .1.
public struct StackConfiguration: Sendable {
    /// The stack's MAC address on the link.
    public var macAddress: MACAddress
    /// The subnet shared with the guest.
    public var subnet: IPv4Subnet
    /// The addresses the stack owns (answers ARP and ping for): the gateway first.
    public var addresses: [IPv4Address]
    /// The link MTU in bytes (largest IP datagram per frame); larger datagrams are fragmented or,
    /// with DF set, refused.
    public var mtu: Int
    /// Limits and timers of the ARP cache: table size, datagrams held per unresolved address,
    /// retries and entry lifetime.
    public var arp = ARPCacheConfiguration()
    /// Limits of IPv4 reassembly: datagrams, fragments and bytes in progress, and the timeout.
    public var reassembly = ReassemblyConfiguration()
    /// ICMP errors sent per second on average (port unreachable, fragmentation needed, unreachables
    /// for forwarded traffic); errors beyond the rate are dropped and counted as rate-limited.
    public var icmpErrorsPerSecond: Double = 100
    /// ICMP errors that may go out back to back before the rate applies (the token bucket's depth,
    /// at least 1).
    public var icmpErrorBurst: Double = 50
    /// Datagrams queued per UDP socket for a reader that is behind (non-async sockets deliver at once).
    public var udpSocketQueueLimit = 256
    /// Settings of new TCP connections (the MSS is capped to the MTU − 40).
    public var tcp = TCPConfiguration()
    /// TCP connections at once. Incoming SYNs beyond it (held forwarded requests count too) are
    /// dropped and counted in `tcpConnectionsRefused`; `connectTCP` throws `tooManyConnections`.
    public var maximumTCPConnections = 4096
    /// Half-open (SYN-RECEIVED) connections per listening port; further SYNs are dropped and counted.
    public var tcpSYNBacklog = 256
    /// The secret of RFC 6528 initial sequence numbers (random per stack by default).
    public var tcpSecret = UInt64.random(in: 0...UInt64.max)
    /// Send a gratuitous ARP for every owned address when the stack starts.
    public var gratuitousARPOnStart = true
    /// IPv6 on the link: the prefix advertised for SLAAC, the stack's addresses in it, neighbour
    /// discovery. Nil (the default of a bare stack) leaves IPv6 frames unhandled.
    public var ipv6: IPv6LinkConfiguration?

    /// The defaults: 192.168.65.0/24, gateway 192.168.65.1, MTU 1500; IPv6 only when `ipv6` is given.
    public init(
        macAddress: MACAddress = MACAddress(rawValue: 0x5A94_EFE4_0CEE), subnet: IPv4Subnet = IPv4Subnet("192.168.65.0/24")!,
        gateway: IPv4Address? = nil, additionalAddresses: [IPv4Address] = [], mtu: Int = 1500, ipv6: IPv6LinkConfiguration? = nil
    ) {
        self.ipv6 = ipv6
        self.macAddress = macAddress
        self.subnet = subnet
        self.addresses = [gateway ?? subnet.address(at: 1)!] + additionalAddresses
        self.mtu = mtu
    }

    /// Where datagrams to addresses off the subnet go (a stack configured as a DHCP client learns
    /// it); nil: they are dropped as "no route".
    public var defaultRouter: IPv4Address?

    /// The gateway address (the first owned address; 0.0.0.0 before any is configured).
    public var gateway: IPv4Address { addresses.first ?? .any }

    /// A stack with no address yet, for a host that will configure itself (a DHCP client).
    public static func unconfigured(macAddress: MACAddress, mtu: Int = 1500) -> StackConfiguration {
        var c = StackConfiguration(macAddress: macAddress, subnet: IPv4Subnet(address: .any, prefixLength: 0)!, gateway: .any, mtu: mtu)
        c.addresses = []
        c.gratuitousARPOnStart = false
        return c
    }
}
