/// Every event the stack counts: frames and datagrams handled, and every reason for a drop.
public enum StackCounter: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// `framesReceived`: each frame handed to `receive`; `framesSent`: each frame the stack queued
    /// for transmission; `transmitDrops`: queued frames the transport refused (counted by `StackDriver`).
    case framesReceived, framesSent, transmitDrops
    // Ethernet
    /// Frames dropped at the Ethernet layer: `ethernetMalformed`, too short to parse;
    /// `ethernetNotForUs`, addressed to another MAC (neither ours nor broadcast, nor with IPv6 on an
    /// IPv6 multicast MAC); `ethernetUnsupportedType`, VLAN-tagged or of an EtherType other than ARP
    /// and IPv4 (and IPv6 when it is on).
    case ethernetMalformed, ethernetNotForUs, ethernetUnsupportedType
    // ARP
    /// `arpMalformed`: ARP packets that do not parse or whose operation is neither request nor reply;
    /// `arpRequestsAnswered`: requests for an owned address, answered; `arpRequestsIgnored`: requests
    /// for any other address; `arpRepliesReceived`: replies received; `arpRequestsSent`: requests sent
    /// to resolve a next hop, and probes (gratuitous announcements are not counted).
    case arpMalformed, arpRequestsAnswered, arpRequestsIgnored, arpRepliesReceived, arpRequestsSent
    /// `arpResolutionFailed`: addresses given up on after the last retry; `arpQueueFull`: datagrams
    /// refused because a hold queue was full or the table held only pending entries (read from the
    /// ARP cache when `statistics` is taken); `arpHeldPacketsDropped`: datagrams that were held for a
    /// resolution that failed.
    case arpResolutionFailed, arpQueueFull, arpHeldPacketsDropped
    // IPv4
    /// `ipv4Received`: IPv4 packets in frames for the stack; `ipv4Malformed`: packets that do not
    /// parse (received, reassembled, or given to `sendIPv4`); `ipv4BadChecksum`: headers with a bad
    /// checksum; `ipv4NotForUs`: packets to an address the stack neither owns nor forwards and that is
    /// not a broadcast, or unicast packets sent as link-layer broadcasts; `ipv4BadSource`: packets from
    /// an impossible source (multicast, broadcast, loopback, the subnet's network address, or one of
    /// ours); `ipv4NoRoute`: outgoing datagrams off the subnet with no usable default router.
    case ipv4Received, ipv4Malformed, ipv4BadChecksum, ipv4NotForUs, ipv4BadSource, ipv4NoRoute
    /// DHCP client messages (UDP 68 → 67, unfragmented) whose IPv4 header checksum is 0, accepted:
    /// vpnkit's Go vmnet client (rootlesskit, Docker) sends its DISCOVER so, as if the checksum
    /// were offloaded. Any other bad header checksum is dropped as `ipv4BadChecksum`.
    case ipv4ZeroChecksumAccepted
    /// `ipv4FragmentsReceived`: fragments for the stack or for forwarded addresses; `ipv4Reassembled`:
    /// datagrams completed from fragments; `ipv4ReassemblyOverlap`: fragments overlapping one already
    /// held (the whole datagram is dropped); `ipv4ReassemblyOversized`: fragments running past the
    /// largest possible datagram.
    case ipv4FragmentsReceived, ipv4Reassembled, ipv4ReassemblyOverlap, ipv4ReassemblyOversized
    /// `ipv4ReassemblyMalformed`: fragments with impossible lengths (a non-final one not a multiple of
    /// 8 bytes, or lengths that contradict each other); `ipv4ReassemblyLimit`: fragments refused at a
    /// reassembly limit (datagrams, fragments or bytes in progress); `ipv4ReassemblyDuplicate`: repeated
    /// fragments, ignored; `ipv4ReassemblyTimeout`: datagrams dropped incomplete when the timeout ran out.
    case ipv4ReassemblyMalformed, ipv4ReassemblyLimit, ipv4ReassemblyDuplicate, ipv4ReassemblyTimeout
    /// `ipv4FragmentsSent`: fragments sent, one per piece of each datagram split to the MTU;
    /// `ipv4FragmentationNeeded`: outgoing datagrams dropped for exceeding the MTU with DF set;
    /// `ipv4UnknownProtocol`: datagrams for the stack of a protocol other than ICMP, UDP and TCP.
    case ipv4FragmentsSent, ipv4FragmentationNeeded, ipv4UnknownProtocol
    // ICMP
    /// `icmpMalformed`: ICMP messages that do not parse; `icmpBadChecksum`: messages with a bad
    /// checksum; `icmpEchoRequestsReceived`: echo requests to owned, broadcast or forwarded addresses;
    /// `icmpEchoRepliesSent`: echo replies sent, the stack's own and forwarded ones;
    /// `icmpOtherReceived`: ICMP messages other than echo requests, which are ignored.
    case icmpMalformed, icmpBadChecksum, icmpEchoRequestsReceived, icmpEchoRepliesSent, icmpOtherReceived
    /// `icmpErrorsSent`: ICMP errors sent (port unreachable, fragmentation needed, unreachables for
    /// forwarded traffic); `icmpErrorsRateLimited`: errors not sent because the rate limit was used up;
    /// `icmpErrorsSuppressed`: errors the rules forbid (about a broadcast or multicast, a non-initial
    /// fragment, an invalid source, or another ICMP error).
    case icmpErrorsSent, icmpErrorsRateLimited, icmpErrorsSuppressed
    // UDP
    /// `udpMalformed`: UDP datagrams that do not parse; `udpBadChecksum`: datagrams with a bad
    /// checksum; `udpDelivered`: datagrams handed to a socket's handler; `udpPortUnreachable`:
    /// datagrams for a port no socket binds (answered with port unreachable unless broadcast);
    /// `udpSocketQueueFull`: datagrams an async socket dropped because its reader fell behind;
    /// `udpSent`: datagrams sent, forwarded ones included.
    case udpMalformed, udpBadChecksum, udpDelivered, udpPortUnreachable, udpSocketQueueFull, udpSent
    // TCP
    /// `tcpSegmentsReceived`: TCP segments that parsed with a valid checksum; `tcpSegmentsSent`: every
    /// segment sent, resets included; `tcpMalformed`: segments that do not parse or came to a broadcast
    /// address; `tcpBadChecksum`: segments with a bad checksum; `tcpResetsSent`: RSTs the stack sent
    /// for segments to closed ports and for refused forwarded requests (not those of connections that
    /// abort); `tcpConnectionsOpened`: connections created, outgoing, accepted or forwarded.
    case tcpSegmentsReceived, tcpSegmentsSent, tcpMalformed, tcpBadChecksum, tcpResetsSent, tcpConnectionsOpened
    /// `tcpConnectionsClosed`: connections that reached CLOSED and were removed;
    /// `tcpConnectionsRefused`: SYNs dropped at the connection limit or a port's SYN backlog;
    /// `tcpListenOverflows`: accepted connections reset because the listener's queue of connections
    /// waiting to be taken was full; `tcpTimeWaitRecycled`: connections in TIME-WAIT that gave way to
    /// a new connection (a new SYN for the same addresses and ports, or a full table).
    case tcpConnectionsClosed, tcpConnectionsRefused, tcpListenOverflows, tcpTimeWaitRecycled
    /// Loss recovery, summed over connections as it happens: `tcpRetransmissions`: segments sent
    /// again (SYNs included); `tcpRetransmissionTimeouts`: retransmission timers that expired;
    /// `tcpFastRetransmits`: recoveries started by duplicate ACKs, SACK or a loss probe;
    /// `tcpLossProbes`: loss probes sent (RFC 8985). On a healthy link timeouts stay near zero.
    case tcpRetransmissions, tcpRetransmissionTimeouts, tcpFastRetransmits, tcpLossProbes
    // Forwarding (the NAT)
    /// `forwardedTCPRequests`: guest SYNs handed to the forwarder as connection requests;
    /// `forwardedTCPDuplicateSYNs`: retransmitted SYNs for a request still pending, absorbed;
    /// `forwardedTCPRefused`: requests the forwarder refused; `forwardedUDPDatagrams` and
    /// `forwardedICMPEchoRequests`: guest datagrams and echo requests handed to the forwarder.
    case forwardedTCPRequests, forwardedTCPDuplicateSYNs, forwardedTCPRefused, forwardedUDPDatagrams, forwardedICMPEchoRequests
    /// Packets to a forwarded address dropped because their source is not on the stack's subnet
    /// (a spoofed sender whose replies would go nowhere).
    case forwardedBadSource
    // Trust between guests
    /// ARP packets naming an address a DHCP lease or reservation holds (`NetworkStack.leaseHolder`),
    /// from a MAC other than its holder's (as the ARP sender or the frame's source): not learned.
    /// Requests among them are still answered, to the sender's MAC.
    case arpNotFromLeaseHolder
    // Address families
    /// Socket calls (binds, sends, connects) and forwarded replies given an address of a family the
    /// stack does not carry yet (IPv6), refused with `StackError.addressFamilyNotSupported` or
    /// dropped.
    case addressFamilyNotSupported
    // IPv6
    /// `ipv6Received`: IPv6 packets in frames for the stack; `ipv6Malformed`: packets that do not
    /// parse; `ipv6NotForUs`: packets to an address the stack neither owns nor listens to;
    /// `ipv6BadSource`: packets from a multicast source or from one of our addresses;
    /// `ipv6ExtensionHeaderDrops`: packets dropped for their extension headers (malformed, beyond the
    /// limits, or an option whose action is to drop); `ipv6UnknownNextHeader`: packets for the stack
    /// of an upper layer it does not speak (answered with a parameter problem).
    case ipv6Received, ipv6Malformed, ipv6NotForUs, ipv6BadSource, ipv6ExtensionHeaderDrops, ipv6UnknownNextHeader
    /// `ipv6FragmentsReceived`: fragments for the stack; `ipv6Reassembled`: packets completed from
    /// them; `ipv6ReassemblyDrops`: fragments or packets dropped by reassembly (overlap, limits,
    /// malformed, timeout); `ipv6FragmentsSent`: fragments sent for packets above the MTU.
    case ipv6FragmentsReceived, ipv6Reassembled, ipv6ReassemblyDrops, ipv6FragmentsSent
    /// `icmpv6Malformed`: ICMPv6 messages that do not parse; `icmpv6BadChecksum`: messages with a bad
    /// checksum; `icmpv6EchoRequestsReceived` and `icmpv6EchoRepliesSent`: pings to our addresses
    /// and their answers; `icmpv6OtherReceived`: other messages, ignored (errors, MLD, redirects,
    /// router advertisements from the guest).
    case icmpv6Malformed, icmpv6BadChecksum, icmpv6EchoRequestsReceived, icmpv6EchoRepliesSent, icmpv6OtherReceived
    /// `icmpv6ErrorsSent`: ICMPv6 errors sent (port unreachable, parameter problem, packet too big);
    /// `icmpv6ErrorsRateLimited`: errors over the rate limit (shared with ICMPv4's);
    /// `icmpv6ErrorsSuppressed`: errors RFC 4443 §2.4 forbids (about an error, or a packet from an
    /// unspecified or multicast source, or to a multicast address).
    case icmpv6ErrorsSent, icmpv6ErrorsRateLimited, icmpv6ErrorsSuppressed
    /// Neighbour discovery. `ndpInvalid`: messages failing RFC 4861's checks (hop limit not 255,
    /// options malformed, a DAD probe with a source link-layer address…); `ndpSolicitationsAnswered`:
    /// solicitations for our addresses, answered; `ndpSolicitationsIgnored`: for other addresses
    /// (we never claim a guest's); `ndpDuplicateAddressDefended`: DAD probes for one of our addresses,
    /// answered with an advertisement to all nodes; `ndpAdvertisementsReceived`: neighbour
    /// advertisements taken into the cache.
    case ndpInvalid, ndpSolicitationsAnswered, ndpSolicitationsIgnored, ndpDuplicateAddressDefended, ndpAdvertisementsReceived
    /// `ndpRouterSolicitationsReceived`; `ndpRouterAdvertisementsSent` (periodic and answers);
    /// `ndpSolicitationsSent`: solicitations to resolve or probe a neighbour; `ndpResolutionFailed`:
    /// neighbours given up on; `ndpHeldPacketsDropped`: packets held for a resolution that failed, or
    /// refused because a hold queue or the table was full.
    case ndpRouterSolicitationsReceived, ndpRouterAdvertisementsSent, ndpSolicitationsSent, ndpResolutionFailed, ndpHeldPacketsDropped
    /// Packet too big messages about our packets that lowered a destination's path MTU (RFC 8201).
    case ipv6PathMTUReduced
    /// Packets to IPv6 addresses beyond the link (there is no IPv6 route out yet), answered with
    /// destination unreachable, no route.
    case ipv6NoRoute

    /// The counter's name in snake case (`ipv4_bad_checksum`, `forwarded_tcp_requests`), as the
    /// statistics outputs print it.
    public var description: String {
        // camelCase → snake_case for output.
        var out = ""
        guard Self.names.indices.contains(rawValue) else { return "counter_\(rawValue)" }
        for character in Self.names[rawValue] {
            if character.isUppercase {
                out += "_" + character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }

    private static let names: [String] = [
        "framesReceived", "framesSent", "transmitDrops",
        "ethernetMalformed", "ethernetNotForUs", "ethernetUnsupportedType",
        "arpMalformed", "arpRequestsAnswered", "arpRequestsIgnored", "arpRepliesReceived", "arpRequestsSent",
        "arpResolutionFailed", "arpQueueFull", "arpHeldPacketsDropped",
        "ipv4Received", "ipv4Malformed", "ipv4BadChecksum", "ipv4NotForUs", "ipv4BadSource", "ipv4NoRoute",
        "ipv4ZeroChecksumAccepted",
        "ipv4FragmentsReceived", "ipv4Reassembled", "ipv4ReassemblyOverlap", "ipv4ReassemblyOversized",
        "ipv4ReassemblyMalformed", "ipv4ReassemblyLimit", "ipv4ReassemblyDuplicate", "ipv4ReassemblyTimeout",
        "ipv4FragmentsSent", "ipv4FragmentationNeeded", "ipv4UnknownProtocol",
        "icmpMalformed", "icmpBadChecksum", "icmpEchoRequestsReceived", "icmpEchoRepliesSent", "icmpOtherReceived",
        "icmpErrorsSent", "icmpErrorsRateLimited", "icmpErrorsSuppressed",
        "udpMalformed", "udpBadChecksum", "udpDelivered", "udpPortUnreachable", "udpSocketQueueFull", "udpSent",
        "tcpSegmentsReceived", "tcpSegmentsSent", "tcpMalformed", "tcpBadChecksum", "tcpResetsSent", "tcpConnectionsOpened",
        "tcpConnectionsClosed", "tcpConnectionsRefused", "tcpListenOverflows", "tcpTimeWaitRecycled",
        "tcpRetransmissions", "tcpRetransmissionTimeouts", "tcpFastRetransmits", "tcpLossProbes",
        "forwardedTcpRequests", "forwardedTcpDuplicateSyns", "forwardedTcpRefused", "forwardedUdpDatagrams", "forwardedIcmpEchoRequests",
        "forwardedBadSource",
        "arpNotFromLeaseHolder",
        "addressFamilyNotSupported",
        "ipv6Received", "ipv6Malformed", "ipv6NotForUs", "ipv6BadSource", "ipv6ExtensionHeaderDrops", "ipv6UnknownNextHeader",
        "ipv6FragmentsReceived", "ipv6Reassembled", "ipv6ReassemblyDrops", "ipv6FragmentsSent",
        "icmpv6Malformed", "icmpv6BadChecksum", "icmpv6EchoRequestsReceived", "icmpv6EchoRepliesSent", "icmpv6OtherReceived",
        "icmpv6ErrorsSent", "icmpv6ErrorsRateLimited", "icmpv6ErrorsSuppressed",
        "ndpInvalid", "ndpSolicitationsAnswered", "ndpSolicitationsIgnored", "ndpDuplicateAddressDefended", "ndpAdvertisementsReceived",
        "ndpRouterSolicitationsReceived", "ndpRouterAdvertisementsSent", "ndpSolicitationsSent", "ndpResolutionFailed", "ndpHeldPacketsDropped",
        "ipv6PathMTUReduced", "ipv6NoRoute",
    ]
}

/// The stack's counters: a fixed array indexed by `StackCounter`, cheap to bump on the hot path.
public struct StackCounters: Sendable, Hashable {
    private var values = [UInt64](repeating: 0, count: StackCounter.allCases.count)

    /// Creates a set of counters, all zero.
    public init() {}

    /// The value of `counter`. Setting it replaces the value.
    public subscript(counter: StackCounter) -> UInt64 {
        get { values[counter.rawValue] }
        set { values[counter.rawValue] = newValue }
    }

    /// Adds `amount` to `counter`, wrapping around to zero on overflow instead of trapping.
    public mutating func increment(_ counter: StackCounter, by amount: UInt64 = 1) {
        self[counter] &+= amount
    }

    /// Non-zero counters by name, in declaration order.
    public var nonZero: [(name: String, value: UInt64)] {
        StackCounter.allCases.compactMap { values[$0.rawValue] == 0 ? nil : ($0.description, values[$0.rawValue]) }
    }

    /// All counters by name.
    public var all: [(name: String, value: UInt64)] {
        StackCounter.allCases.map { ($0.description, values[$0.rawValue]) }
    }
}

/// Names for counters in output (stats JSON, Prometheus, metrics labels).
package enum CounterNames {
    /// `camelCase` → `snake_case`.
    package static func snakeCase(_ name: String) -> String {
        var out = ""
        for character in name {
            if character.isUppercase {
                out += "_" + character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }

    /// The `UInt64` fields of a counters struct (`NATCounters`, `DHCPServerCounters`, …), named in
    /// snake_case, in declaration order.
    package static func fields(of counters: Any) -> [(name: String, value: UInt64)] {
        Mirror(reflecting: counters).children.compactMap { child in
            guard let label = child.label, let value = child.value as? UInt64 else { return nil }
            return (snakeCase(label), value)
        }
    }
}
