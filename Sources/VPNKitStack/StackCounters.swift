/// Every event the stack counts: frames and datagrams handled, and every reason for a drop.
public enum StackCounter: Int, CaseIterable, Sendable, CustomStringConvertible {
    case framesReceived, framesSent, transmitDrops
    // Ethernet
    case ethernetMalformed, ethernetNotForUs, ethernetUnsupportedType
    // ARP
    case arpMalformed, arpRequestsAnswered, arpRequestsIgnored, arpRepliesReceived, arpRequestsSent
    case arpResolutionFailed, arpQueueFull, arpHeldPacketsDropped
    // IPv4
    case ipv4Received, ipv4Malformed, ipv4BadChecksum, ipv4NotForUs, ipv4BadSource, ipv4NoRoute
    case ipv4FragmentsReceived, ipv4Reassembled, ipv4ReassemblyOverlap, ipv4ReassemblyOversized
    case ipv4ReassemblyMalformed, ipv4ReassemblyLimit, ipv4ReassemblyDuplicate, ipv4ReassemblyTimeout
    case ipv4FragmentsSent, ipv4FragmentationNeeded, ipv4UnknownProtocol
    // ICMP
    case icmpMalformed, icmpBadChecksum, icmpEchoRequestsReceived, icmpEchoRepliesSent, icmpOtherReceived
    case icmpErrorsSent, icmpErrorsRateLimited, icmpErrorsSuppressed
    // UDP
    case udpMalformed, udpBadChecksum, udpDelivered, udpPortUnreachable, udpSocketQueueFull, udpSent
    // TCP
    case tcpSegmentsReceived, tcpSegmentsSent, tcpMalformed, tcpBadChecksum, tcpResetsSent, tcpConnectionsOpened
    case tcpConnectionsClosed, tcpConnectionsRefused, tcpListenOverflows
    // Forwarding (the NAT)
    case forwardedTCPRequests, forwardedTCPDuplicateSYNs, forwardedTCPRefused, forwardedUDPDatagrams, forwardedICMPEchoRequests
    case forwardedBadSource

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
        "ipv4FragmentsReceived", "ipv4Reassembled", "ipv4ReassemblyOverlap", "ipv4ReassemblyOversized",
        "ipv4ReassemblyMalformed", "ipv4ReassemblyLimit", "ipv4ReassemblyDuplicate", "ipv4ReassemblyTimeout",
        "ipv4FragmentsSent", "ipv4FragmentationNeeded", "ipv4UnknownProtocol",
        "icmpMalformed", "icmpBadChecksum", "icmpEchoRequestsReceived", "icmpEchoRepliesSent", "icmpOtherReceived",
        "icmpErrorsSent", "icmpErrorsRateLimited", "icmpErrorsSuppressed",
        "udpMalformed", "udpBadChecksum", "udpDelivered", "udpPortUnreachable", "udpSocketQueueFull", "udpSent",
        "tcpSegmentsReceived", "tcpSegmentsSent", "tcpMalformed", "tcpBadChecksum", "tcpResetsSent", "tcpConnectionsOpened",
        "tcpConnectionsClosed", "tcpConnectionsRefused", "tcpListenOverflows",
        "forwardedTcpRequests", "forwardedTcpDuplicateSyns", "forwardedTcpRefused", "forwardedUdpDatagrams", "forwardedIcmpEchoRequests",
        "forwardedBadSource",
    ]
}

/// The stack's counters: a fixed array indexed by `StackCounter`, cheap to bump on the hot path.
public struct StackCounters: Sendable, Hashable {
    private var values = [UInt64](repeating: 0, count: StackCounter.allCases.count)

    public init() {}

    public subscript(counter: StackCounter) -> UInt64 {
        get { values[counter.rawValue] }
        set { values[counter.rawValue] = newValue }
    }

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
