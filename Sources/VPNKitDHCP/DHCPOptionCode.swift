public import VPNKitBase

/// A DHCP option code (RFC 2132 and later).
public struct DHCPOptionCode: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The option's code byte.
    public var rawValue: UInt8
    /// Creates a code from its byte; every value is accepted.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Creates a code from its byte; every value is accepted.
    @inlinable public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    /// Option 0: one padding byte, with no length and no value.
    public static let pad = DHCPOptionCode(0)
    /// Option 1: the client's subnet mask (4 bytes).
    public static let subnetMask = DHCPOptionCode(1)
    /// Option 3: routers on the client's subnet, most preferred first (4 bytes each).
    public static let router = DHCPOptionCode(3)
    /// Option 6: DNS servers (4 bytes each).
    public static let domainNameServer = DHCPOptionCode(6)
    /// Option 12: the client's host name.
    public static let hostName = DHCPOptionCode(12)
    /// Option 15: the domain name the client should use to resolve host names.
    public static let domainName = DHCPOptionCode(15)
    /// Option 26: the MTU of the client's interface (2 bytes).
    public static let interfaceMTU = DHCPOptionCode(26)
    /// Option 28: the broadcast address of the client's subnet.
    public static let broadcastAddress = DHCPOptionCode(28)
    /// Option 50: the address a client asks for in a DISCOVER or REQUEST, or declines.
    public static let requestedIPAddress = DHCPOptionCode(50)
    /// Option 51: the lease duration in seconds (4 bytes).
    public static let leaseTime = DHCPOptionCode(51)
    /// Option 52: whether the `file` and `sname` fields hold more options.
    public static let overload = DHCPOptionCode(52)
    /// Option 53: the DHCP message type; see ``DHCPMessageType``.
    public static let messageType = DHCPOptionCode(53)
    /// Option 54: the address that identifies the server.
    public static let serverIdentifier = DHCPOptionCode(54)
    /// Option 55: the option codes a client wants in the reply, in its order of preference.
    public static let parameterRequestList = DHCPOptionCode(55)
    /// Option 56: an error text from a server (in a NAK) or a client (in a DECLINE).
    public static let message = DHCPOptionCode(56)
    /// Option 57: the longest DHCP message, in bytes, the client accepts (2 bytes).
    public static let maximumMessageSize = DHCPOptionCode(57)
    /// Option 58: T1, seconds from the lease's start until the client renews with its server.
    public static let renewalTime = DHCPOptionCode(58)
    /// Option 59: T2, seconds from the lease's start until the client rebinds with any server.
    public static let rebindingTime = DHCPOptionCode(59)
    /// Option 60: identifies the client's vendor and type.
    public static let vendorClassIdentifier = DHCPOptionCode(60)
    /// Option 61: a client identifier that servers key leases by instead of the hardware address.
    public static let clientIdentifier = DHCPOptionCode(61)
    /// Option 119: the DNS search list in compressed name form (RFC 3397); see ``DomainNameList``.
    public static let domainSearch = DHCPOptionCode(119)
    /// Option 121: classless static routes (RFC 3442); see ``ClasslessStaticRoute``.
    public static let classlessStaticRoute = DHCPOptionCode(121)
    /// Option 255: marks the end of the options area, with no length and no value.
    public static let end = DHCPOptionCode(255)

    /// Orders codes by their numeric value.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    /// The code in decimal, such as `53`.
    public var description: String { String(rawValue) }
}

/// The DHCP message type (option 53).
public struct DHCPMessageType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value byte of option 53.
    public var rawValue: UInt8
    /// Creates a type from its byte; values other than 1…8 are kept as they are.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// DHCPDISCOVER (1): a client looking for servers.
    public static let discover = DHCPMessageType(rawValue: 1)
    /// DHCPOFFER (2): a server offering an address in answer to a DISCOVER.
    public static let offer = DHCPMessageType(rawValue: 2)
    /// DHCPREQUEST (3): a client asking for an offered address, or to keep or extend its lease.
    public static let request = DHCPMessageType(rawValue: 3)
    /// DHCPDECLINE (4): a client reporting that the address it was given is already in use.
    public static let decline = DHCPMessageType(rawValue: 4)
    /// DHCPACK (5): a server granting a lease (or answering an INFORM) with the configuration.
    public static let ack = DHCPMessageType(rawValue: 5)
    /// DHCPNAK (6): a server refusing a REQUEST: the address is wrong for the link or no longer the client's.
    public static let nak = DHCPMessageType(rawValue: 6)
    /// DHCPRELEASE (7): a client giving its address back.
    public static let release = DHCPMessageType(rawValue: 7)
    /// DHCPINFORM (8): a client with an address asking only for configuration.
    public static let inform = DHCPMessageType(rawValue: 8)

    /// The RFC name in capitals, such as `DISCOVER`, or `type N` for an unknown value.
    public var description: String {
        let names = ["DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"]
        return (1...8).contains(rawValue) ? names[Int(rawValue) - 1] : "type \(rawValue)"
    }
}

/// A classless static route (option 121, RFC 3442).
public struct ClasslessStaticRoute: Sendable, Hashable {
    /// The destination network. Only its first `(prefixLength + 7) / 8` bytes are encoded; the others
    /// decode as zero.
    public var destination: IPv4Address
    /// The destination's prefix length, 0…32; 0 is a default route. Encoding clamps other values into that range.
    public var prefixLength: Int
    /// The router (next hop) for the destination.
    public var router: IPv4Address
    /// Creates a route to `destination`/`prefixLength` through `router`.
    public init(destination: IPv4Address, prefixLength: Int, router: IPv4Address) {
        self.destination = destination
        self.prefixLength = prefixLength
        self.router = router
    }
}

