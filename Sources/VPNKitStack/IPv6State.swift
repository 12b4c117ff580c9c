// What the stack keeps for IPv6 beside its configuration: the addresses and groups it answers
// for, the neighbour cache, reassembly, and the schedule of its router advertisements.

import NIOCore
import VPNKitBase
import VPNKitIPv6

struct IPv6State {
    var configuration: IPv6LinkConfiguration
    var neighbors: NeighborCache
    var reassembler: IPv6Reassembler
    /// Unicast addresses we own.
    private(set) var owned: Set<IPv6Address>
    /// Multicast groups we listen to: all nodes, all routers, and our solicited-node groups.
    private(set) var groups: Set<IPv6Address>
    /// When the next unsolicited router advertisement is due (nil before the stack starts).
    var nextAdvertisement: NIODeadline?
    /// Unsolicited advertisements still to send at the short initial interval.
    var initialAdvertisementsLeft = 3
    /// When the last advertisement to all nodes left (RFC 4861 §6.2.6 spaces them ≥ 3 s apart).
    var lastMulticastAdvertisement: NIODeadline?
    /// Path MTUs below the link's, learned from packet too big messages (RFC 8201), each until it
    /// expires; at most `maximumPathMTUs` destinations.
    private(set) var pathMTUs: [IPv6Address: (mtu: Int, expires: NIODeadline)] = [:]
    static let maximumPathMTUs = 256
    static let pathMTULifetime = TimeAmount.minutes(10)
    /// The guest's address in the prefix most recently seen: the source of its packets, or the
    /// target of its duplicate address detection (what published ports reach it at over IPv6).
    var guestAddress: IPv6Address?
    private var random: SplitMix64
    private var fragmentIdentification: UInt32

    init(configuration: IPv6LinkConfiguration, reassembly: ReassemblyConfiguration) {
        self.configuration = configuration
        self.neighbors = NeighborCache(configuration: configuration.neighbors)
        self.reassembler = IPv6Reassembler(configuration: reassembly)
        self.owned = Set(configuration.addresses)
        self.groups = Set([.allNodes, .allRouters] + configuration.addresses.map(\.solicitedNode))
        self.random = SplitMix64(seed: configuration.advertisementSeed)
        self.fragmentIdentification = UInt32(truncatingIfNeeded: random.next())
    }

    /// Takes one more address (the NAT's host alias): answered for, and its solicited-node group
    /// listened to.
    mutating func add(_ address: IPv6Address) {
        guard !owned.contains(address) else { return }
        configuration.additionalAddresses.append(address)
        owned.insert(address)
        groups.insert(address.solicitedNode)
    }

    /// Listens to one more multicast group (All_DHCP_Relay_Agents_and_Servers, say).
    mutating func join(_ group: IPv6Address) {
        guard group.isMulticast else { return }
        groups.insert(group)
    }

    func owns(_ address: IPv6Address) -> Bool { owned.contains(address) }
    func listens(to address: IPv6Address) -> Bool { groups.contains(address) }

    /// Records that packets to `destination` must fit `mtu` bytes, until the entry expires. At the
    /// bound, the entry that expires first gives way.
    mutating func learnPathMTU(_ mtu: Int, to destination: IPv6Address, now: NIODeadline) {
        if pathMTUs[destination] == nil, pathMTUs.count >= Self.maximumPathMTUs,
            let oldest = pathMTUs.min(by: { $0.value.expires < $1.value.expires })?.key
        {
            pathMTUs[oldest] = nil
        }
        pathMTUs[destination] = (mtu, now + Self.pathMTULifetime)
    }

    /// Forgets the path MTUs that expired.
    mutating func expirePathMTUs(now: NIODeadline) {
        guard !pathMTUs.isEmpty else { return }
        pathMTUs = pathMTUs.filter { $0.value.expires > now }
    }

    /// A fragment identification for a packet we split.
    mutating func nextFragmentIdentification() -> UInt32 {
        fragmentIdentification &+= 1
        return fragmentIdentification
    }

    /// The delay before the next unsolicited advertisement: 4 s for the first three, then uniformly
    /// random between a third of the maximum interval and the maximum (RFC 4861 §6.2.4).
    mutating func advertisementDelay() -> TimeAmount {
        if initialAdvertisementsLeft > 0 {
            initialAdvertisementsLeft -= 1
            return .seconds(4)
        }
        let maximum = configuration.maximumAdvertisementInterval.nanoseconds
        let minimum = maximum / 3
        let span = UInt64(max(1, maximum - minimum))
        return .nanoseconds(minimum + Int64(random.next() % span))
    }
}
