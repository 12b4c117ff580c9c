// The stack's IPv6 side of the link: its addresses, the prefix it advertises for SLAAC, what its
// router advertisements say and how often, and the bounds of neighbour discovery and extension
// headers.

public import NIOCore
public import VPNKitBase
public import VPNKitIPv6

/// How the stack speaks IPv6 on its link: it is the router of a /64 the guests configure themselves
/// in by SLAAC (RFC 4862) from its router advertisements.
public struct IPv6LinkConfiguration: Sendable {
    /// The advertised /64 prefix (host bits zero); `fd00:65::/64` by default.
    public var prefix: IPv6Address
    /// The stack's address in the prefix (the gateway, `prefix::1`), answered for and advertised as
    /// the DNS server.
    public var gateway: IPv6Address
    /// The stack's link-local address, the source of its router advertisements: `fe80::1`.
    public var linkLocal: IPv6Address = IPv6Address(0xFE80, 0, 0, 0, 0, 0, 0, 1)
    /// Further addresses the stack owns in the prefix (the NAT's host alias, say).
    public var additionalAddresses: [IPv6Address] = []
    /// Router lifetime in advertisements, in seconds (how long guests keep us as default router).
    public var routerLifetime: UInt16 = 1800
    /// Unsolicited advertisements go out at random intervals between a third of this and this
    /// (RFC 4861 §6.2.4, MaxRtrAdvInterval); 600 s by default. The first three go 4 s apart.
    public var maximumAdvertisementInterval: TimeAmount = .seconds(600)
    /// Lifetimes of the advertised prefix, in seconds (RFC 4861's defaults: 30 and 7 days).
    public var prefixValidLifetime: UInt32 = 2_592_000
    /// How long addresses formed in the prefix stay preferred, in seconds.
    public var prefixPreferredLifetime: UInt32 = 604_800
    /// Advertise the gateway as recursive DNS server (RFC 8106).
    public var advertisesDNS = true
    /// The DNS server advertised (RDNSS, DHCPv6); nil, the default, is `gateway`. One that is not
    /// the gateway must be an address the DNS service answers on (slirp4netns's fd00::3).
    public var dnsServer: IPv6Address?
    /// The O flag of router advertisements (RFC 4861 §4.2): other configuration (DNS, the search
    /// list) is available by stateless DHCPv6. Off by default; a DHCPv6 service turns it on.
    public var otherConfiguration = false
    /// The DNS search list advertised (RFC 8106 DNSSL); none by default.
    public var searchDomains: [String] = []
    /// The neighbour cache's limits and timers.
    public var neighbors = NeighborCacheConfiguration()
    /// The bounds on a received packet's extension headers.
    public var extensionHeaders = IPv6ExtensionLimits()
    /// Seed of the jitter between unsolicited advertisements (random per stack by default).
    public var advertisementSeed = UInt64.random(in: 0...UInt64.max)

    /// A link on `prefix` (a /64; host bits are cleared), the gateway at `prefix::1`.
    public init(prefix: IPv6Address = IPv6Address(0xFD00, 0x65, 0, 0, 0, 0, 0, 0)) {
        self.prefix = IPv6Address(high: prefix.high, low: 0)
        self.gateway = IPv6Address(high: prefix.high, low: 1)
    }

    /// Every address the stack owns: link-local, gateway, then the others.
    public var addresses: [IPv6Address] { [linkLocal, gateway] + additionalAddresses }

    /// Whether `address` lies in the advertised /64.
    public func onLink(_ address: IPv6Address) -> Bool { address.high == prefix.high || address.isLinkLocal }
}

extension IPv6Address {
    /// The solicited-node multicast address of this one (RFC 4291 §2.7.1): ff02::1:ffXX:XXXX with
    /// its low 24 bits.
    public var solicitedNode: IPv6Address { IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (low & 0xFF_FFFF)) }

    /// The all-nodes link-local multicast address, ff02::1.
    public static let allNodes = IPv6Address(high: 0xFF02_0000_0000_0000, low: 1)
    /// The all-routers link-local multicast address, ff02::2.
    public static let allRouters = IPv6Address(high: 0xFF02_0000_0000_0000, low: 2)

    /// The Ethernet multicast address a packet to this multicast address goes to (RFC 2464 §7):
    /// 33:33 followed by the address's last 32 bits.
    public var multicastMAC: MACAddress { MACAddress(rawValue: 0x3333_0000_0000 | (low & 0xFFFF_FFFF)) }
}
