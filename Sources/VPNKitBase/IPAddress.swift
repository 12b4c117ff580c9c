/// An IP address of either family: what identifies an endpoint above the IP layer (sockets,
/// connections, flows), so that a second family needs no new identity types.
///
/// Ordered IPv4 before IPv6, then numerically within a family.
public enum IPAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// An IPv4 address.
    case v4(IPv4Address)
    /// An IPv6 address.
    case v6(IPv6Address)

    /// An address family.
    public enum Family: Sendable, Hashable, CustomStringConvertible {
        /// IPv4 (AF_INET).
        case v4
        /// IPv6 (AF_INET6).
        case v6

        /// `IPv4` or `IPv6`.
        public var description: String {
            switch self {
            case .v4: return "IPv4"
            case .v6: return "IPv6"
            }
        }
    }

    /// Parses a dotted quad (`192.168.65.1`) as IPv4, or RFC 4291 text (`2001:db8::1`,
    /// `::ffff:192.0.2.1`) as IPv6; nil for anything else (see the two families' parsers).
    public init?(_ text: some StringProtocol) {
        if let v4 = IPv4Address(text) {
            self = .v4(v4)
        } else if let v6 = IPv6Address(text) {
            self = .v6(v6)
        } else {
            return nil
        }
    }

    /// The address's family.
    @inlinable
    public var family: Family {
        switch self {
        case .v4: return .v4
        case .v6: return .v6
        }
    }

    /// The IPv4 address, or nil for an IPv6 one (an IPv4-mapped IPv6 address included: it stays
    /// IPv6; see `IPv6Address.ipv4Mapped`).
    @inlinable
    public var ipv4: IPv4Address? {
        if case .v4(let address) = self { return address }
        return nil
    }

    /// The IPv6 address, or nil for an IPv4 one.
    @inlinable
    public var ipv6: IPv6Address? {
        if case .v6(let address) = self { return address }
        return nil
    }

    /// The unspecified address of `family`: 0.0.0.0 or `::`.
    public static func any(_ family: Family) -> IPAddress {
        switch family {
        case .v4: return .v4(.any)
        case .v6: return .v6(.any)
        }
    }

    /// The loopback address of `family`: 127.0.0.1 or `::1`.
    public static func loopback(_ family: Family) -> IPAddress {
        switch family {
        case .v4: return .v4(.loopback)
        case .v6: return .v6(.loopback)
        }
    }

    /// Whether this is the unspecified address of its family (0.0.0.0, `::`).
    public var isUnspecified: Bool {
        switch self {
        case .v4(let address): return address == .any
        case .v6(let address): return address.isUnspecified
        }
    }

    /// Whether the address is a loopback address (127.0.0.0/8, `::1`).
    public var isLoopback: Bool {
        switch self {
        case .v4(let address): return address.isLoopback
        case .v6(let address): return address.isLoopback
        }
    }

    /// Whether the address is multicast (224.0.0.0/4, ff00::/8).
    public var isMulticast: Bool {
        switch self {
        case .v4(let address): return address.isMulticast
        case .v6(let address): return address.isMulticast
        }
    }

    /// The dotted quad of an IPv4 address, the RFC 5952 form of an IPv6 one.
    public var description: String {
        switch self {
        case .v4(let address): return address.description
        case .v6(let address): return address.description
        }
    }

    /// The address with a port, as URLs and socket tools write it: `192.0.2.1:80`, `[2001:db8::1]:80`.
    public func description(port: UInt16) -> String {
        switch self {
        case .v4(let address): return "\(address):\(port)"
        case .v6(let address): return "[\(address)]:\(port)"
        }
    }
}
