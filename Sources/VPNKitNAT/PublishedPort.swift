// A published port's text form and the rule that picks the guest address (and so the family) a
// host connection or datagram goes to.

public import VPNKitBase

/// A host port forwarded into the guest: `tcp:127.0.0.1:8080:80` listens on the host's
/// 127.0.0.1:8080 and opens a connection to the guest's port 80 through the stack, from the host
/// alias (no helper inside the guest; a client from another machine, on a port published on another
/// address, from its own address: `NATConfiguration.preservesClientAddress`). Without a host address (`tcp:8080:80`) the port is published
/// on both loopbacks, 127.0.0.1 and ::1 (::1 left out when the host has no IPv6). Which family
/// reaches the guest is `GuestAddresses.address(forHostFamily:)`'s rule: the host connection's own
/// family when the guest has an address of it, else the other.
public struct PublishedPort: Sendable, Hashable, CustomStringConvertible {
    /// The protocol of a published port: `tcp` or `udp`, as written in the text form.
    public enum Transport: String, Sendable { case tcp, udp }
    /// TCP or UDP.
    public var transport: Transport
    /// The host address to listen on, of either family; nil (the default) for both loopbacks,
    /// 127.0.0.1 and ::1, reachable from the host only.
    public var hostAddress: IPAddress?
    /// The host port to listen on.
    public var hostPort: UInt16
    /// The guest port that connections and datagrams go to.
    public var guestPort: UInt16

    /// Creates a published port. Unlike the text form, it accepts port 0 (with no host address, ::1
    /// then takes the port 127.0.0.1 was given).
    public init(transport: Transport, hostAddress: IPAddress? = nil, hostPort: UInt16, guestPort: UInt16) {
        self.transport = transport
        self.hostAddress = hostAddress
        self.hostPort = hostPort
        self.guestPort = guestPort
    }

    /// Parses `tcp|udp:[HOSTIP:]HOSTPORT:GUESTPORT`, where HOSTIP is a dotted quad or an IPv6
    /// address in brackets (`tcp:[::1]:8080:80`); without HOSTIP both loopbacks are meant.
    public init?(_ text: String) {
        guard let colon = text.firstIndex(of: ":"), let transport = Transport(rawValue: text[..<colon].lowercased()) else { return nil }
        var rest = text[text.index(after: colon)...]
        var host: IPAddress?
        let bracketed = rest.first == "["
        if bracketed {
            guard let close = rest.firstIndex(of: "]"), let address = IPv6Address(rest[rest.index(after: rest.startIndex)..<close])
            else { return nil }
            host = .v6(address)
            rest = rest[rest.index(after: close)...]
            guard rest.first == ":" else { return nil }
            rest = rest.dropFirst()
        }
        var parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        if !bracketed, parts.count == 3 {
            guard let address = IPv4Address(parts[0]) else { return nil }
            host = .v4(address)
            parts.removeFirst()
        }
        guard parts.count == 2, let hostPort = UInt16(parts[0]), hostPort != 0, let guestPort = UInt16(parts[1]), guestPort != 0
        else { return nil }
        self.init(transport: transport, hostAddress: host, hostPort: hostPort, guestPort: guestPort)
    }

    /// The text form, such as `tcp:127.0.0.1:8080:80`, `tcp:[::1]:8080:80` or `tcp:8080:80`, which
    /// `init(_:)` parses back.
    public var description: String {
        switch hostAddress {
        case .v4(let address)?: return "\(transport.rawValue):\(address):\(hostPort):\(guestPort)"
        case .v6(let address)?: return "\(transport.rawValue):[\(address)]:\(hostPort):\(guestPort)"
        case nil: return "\(transport.rawValue):\(hostPort):\(guestPort)"
        }
    }

    /// The host addresses to listen on: `hostAddress`, or 127.0.0.1 and ::1 without one.
    public var hostAddresses: [IPAddress] {
        hostAddress.map { [$0] } ?? [.v4(.loopback), .v6(.loopback)]
    }
}

/// The guest's addresses a published port can reach, at most one per family, and the rule that
/// picks one for a host connection or datagram.
public struct GuestAddresses: Sendable, Hashable {
    /// The guest's IPv4 address (its DHCP lease, say), if it has one.
    public var ipv4: IPv4Address?
    /// The guest's IPv6 address in the link's prefix (learned from its traffic), if it has one.
    public var ipv6: IPv6Address?

    /// Creates the pair; either may be nil.
    public init(ipv4: IPv4Address? = nil, ipv6: IPv6Address? = nil) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    /// One address, whatever the host connection's family (the caller's own choice).
    public init(_ address: IPAddress) {
        switch address {
        case .v4(let v4): self.init(ipv4: v4)
        case .v6(let v6): self.init(ipv6: v6)
        }
    }

    /// The guest address for a connection or datagram that reached a host listener of `family`: the
    /// guest's address of that family when it has one, else its address of the other family; nil
    /// when it has none.
    public func address(forHostFamily family: IPAddress.Family) -> IPAddress? {
        switch family {
        case .v4: return ipv4.map(IPAddress.v4) ?? ipv6.map(IPAddress.v6)
        case .v6: return ipv6.map(IPAddress.v6) ?? ipv4.map(IPAddress.v4)
        }
    }
}
