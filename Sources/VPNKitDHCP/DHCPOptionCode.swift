public import VPNKitBase

/// A DHCP option code (RFC 2132 and later).
public struct DHCPOptionCode: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    public static let pad = DHCPOptionCode(0)
    public static let subnetMask = DHCPOptionCode(1)
    public static let router = DHCPOptionCode(3)
    public static let domainNameServer = DHCPOptionCode(6)
    public static let hostName = DHCPOptionCode(12)
    public static let domainName = DHCPOptionCode(15)
    public static let interfaceMTU = DHCPOptionCode(26)
    public static let broadcastAddress = DHCPOptionCode(28)
    public static let requestedIPAddress = DHCPOptionCode(50)
    public static let leaseTime = DHCPOptionCode(51)
    public static let overload = DHCPOptionCode(52)
    public static let messageType = DHCPOptionCode(53)
    public static let serverIdentifier = DHCPOptionCode(54)
    public static let parameterRequestList = DHCPOptionCode(55)
    public static let message = DHCPOptionCode(56)
    public static let maximumMessageSize = DHCPOptionCode(57)
    public static let renewalTime = DHCPOptionCode(58)
    public static let rebindingTime = DHCPOptionCode(59)
    public static let vendorClassIdentifier = DHCPOptionCode(60)
    public static let clientIdentifier = DHCPOptionCode(61)
    public static let domainSearch = DHCPOptionCode(119)
    public static let classlessStaticRoute = DHCPOptionCode(121)
    public static let end = DHCPOptionCode(255)

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { String(rawValue) }
}

/// The DHCP message type (option 53).
public struct DHCPMessageType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let discover = DHCPMessageType(rawValue: 1)
    public static let offer = DHCPMessageType(rawValue: 2)
    public static let request = DHCPMessageType(rawValue: 3)
    public static let decline = DHCPMessageType(rawValue: 4)
    public static let ack = DHCPMessageType(rawValue: 5)
    public static let nak = DHCPMessageType(rawValue: 6)
    public static let release = DHCPMessageType(rawValue: 7)
    public static let inform = DHCPMessageType(rawValue: 8)

    public var description: String {
        let names = ["DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"]
        return (1...8).contains(rawValue) ? names[Int(rawValue) - 1] : "type \(rawValue)"
    }
}

/// A classless static route (option 121, RFC 3442).
public struct ClasslessStaticRoute: Sendable, Hashable {
    public var destination: IPv4Address
    public var prefixLength: Int
    public var router: IPv4Address
    public init(destination: IPv4Address, prefixLength: Int, router: IPv4Address) {
        self.destination = destination
        self.prefixLength = prefixLength
        self.router = router
    }
}

