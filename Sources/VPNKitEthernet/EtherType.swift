/// The EtherType field of an Ethernet II frame.
public struct EtherType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The 16-bit value as it appears on the wire (host order).
    public var rawValue: UInt16
    /// Wraps any 16-bit value; unknown types are kept, not rejected.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IPv4, 0x0800.
    public static let ipv4 = EtherType(rawValue: 0x0800)
    /// ARP, 0x0806.
    public static let arp = EtherType(rawValue: 0x0806)
    /// An 802.1Q VLAN tag follows, 0x8100; the payload's own type comes after the tag.
    public static let vlan = EtherType(rawValue: 0x8100)
    /// IPv6, 0x86DD.
    public static let ipv6 = EtherType(rawValue: 0x86DD)

    /// `IPv4`, `ARP`, `802.1Q` or `IPv6` for the known types, otherwise the value in hex, such as `0x88cc`.
    public var description: String {
        switch self {
        case .ipv4: return "IPv4"
        case .arp: return "ARP"
        case .vlan: return "802.1Q"
        case .ipv6: return "IPv6"
        default: return "0x" + String(rawValue, radix: 16)
        }
    }
}

/// An 802.1Q tag: priority, drop-eligible bit and VLAN id.
public struct VLANTag: Sendable, Hashable {
    /// The 16-bit tag control information as on the wire.
    public var controlInformation: UInt16
    /// Creates a tag from the 16-bit tag control information as read from the wire.
    @inlinable public init(controlInformation: UInt16) { self.controlInformation = controlInformation }
    /// Creates a tag from its parts; only the low 12 bits of `id` and the low 3 bits of `priority` are used.
    public init(id: UInt16, priority: UInt8 = 0, dropEligible: Bool = false) {
        self.controlInformation = UInt16(priority & 7) << 13 | (dropEligible ? 0x1000 : 0) | (id & 0x0FFF)
    }
    /// The VLAN identifier, 0…4095 (the low 12 bits).
    public var id: UInt16 { controlInformation & 0x0FFF }
    /// The 802.1p priority code point, 0…7 (the top 3 bits).
    public var priority: UInt8 { UInt8(controlInformation >> 13) }
    /// The drop-eligible indicator bit: the frame may be dropped first under congestion.
    public var dropEligible: Bool { controlInformation & 0x1000 != 0 }
}
