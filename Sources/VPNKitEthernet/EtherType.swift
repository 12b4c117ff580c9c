/// The EtherType field of an Ethernet II frame.
public struct EtherType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let ipv4 = EtherType(rawValue: 0x0800)
    public static let arp = EtherType(rawValue: 0x0806)
    public static let vlan = EtherType(rawValue: 0x8100)
    public static let ipv6 = EtherType(rawValue: 0x86DD)

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
    @inlinable public init(controlInformation: UInt16) { self.controlInformation = controlInformation }
    public init(id: UInt16, priority: UInt8 = 0, dropEligible: Bool = false) {
        self.controlInformation = UInt16(priority & 7) << 13 | (dropEligible ? 0x1000 : 0) | (id & 0x0FFF)
    }
    public var id: UInt16 { controlInformation & 0x0FFF }
    public var priority: UInt8 { UInt8(controlInformation >> 13) }
    public var dropEligible: Bool { controlInformation & 0x1000 != 0 }
}
