public import VPNKitBase

/// An IPv4 network: a base address and a prefix length ("192.168.65.0/24").
public struct IPv4Subnet: Sendable, Hashable, CustomStringConvertible {
    /// The network address: the address given at creation with the host bits cleared.
    public let network: IPv4Address
    /// The number of leading network bits, 0…32.
    public let prefixLength: Int

    /// Masks `address` to the prefix; nil for a prefix outside 0…32.
    public init?(address: IPv4Address, prefixLength: Int) {
        guard (0...32).contains(prefixLength) else { return nil }
        self.prefixLength = prefixLength
        self.network = IPv4Address(rawValue: address.rawValue & Self.mask(prefixLength))
    }

    /// Parses "a.b.c.d/n"; nil when malformed.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(parts[0]), let length = Int(parts[1]) else { return nil }
        self.init(address: address, prefixLength: length)
    }

    static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length) }

    /// The netmask as an address, such as 255.255.255.0 for a /24.
    public var mask: IPv4Address { IPv4Address(rawValue: Self.mask(prefixLength)) }
    /// The directed broadcast address: the network with every host bit set.
    public var broadcast: IPv4Address { IPv4Address(rawValue: network.rawValue | ~Self.mask(prefixLength)) }
    /// Whether `address` lies in this subnet, network and broadcast addresses included.
    public func contains(_ address: IPv4Address) -> Bool { address.rawValue & Self.mask(prefixLength) == network.rawValue }
    /// The `n`th address of the subnet (network + n), nil past its end.
    public func address(at n: UInt32) -> IPv4Address? {
        let hosts = prefixLength == 0 ? UInt32.max : ~Self.mask(prefixLength)
        guard n <= hosts else { return nil }
        return IPv4Address(rawValue: network.rawValue | n)
    }
    /// The subnet in CIDR notation, such as `192.168.65.0/24`.
    public var description: String { "\(network)/\(prefixLength)" }
}
