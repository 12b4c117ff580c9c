/// IP protocol numbers: the IPv4 header's protocol field, IPv6's next header.
public struct IPProtocol: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The protocol number as carried in the IPv4 protocol field or the IPv6 next-header field.
    public var rawValue: UInt8
    /// Wraps any protocol number; numbers without a named constant are kept, not rejected.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// ICMP, 1.
    public static let icmp = IPProtocol(rawValue: 1)
    /// TCP, 6.
    public static let tcp = IPProtocol(rawValue: 6)
    /// UDP, 17.
    public static let udp = IPProtocol(rawValue: 17)
    /// ICMPv6, 58.
    public static let icmpv6 = IPProtocol(rawValue: 58)
    /// `ICMP`, `TCP`, `UDP` or `ICMPv6` for the named protocols, otherwise `proto` and the number,
    /// such as `proto 47`.
    public var description: String {
        switch self {
        case .icmp: return "ICMP"
        case .tcp: return "TCP"
        case .udp: return "UDP"
        case .icmpv6: return "ICMPv6"
        default: return "proto \(rawValue)"
        }
    }
}
