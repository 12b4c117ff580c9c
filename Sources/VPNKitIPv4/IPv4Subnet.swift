public import VPNKitBase

/// An IPv4 network: a base address and a prefix length ("192.168.65.0/24").
public struct IPv4Subnet: Sendable, Hashable, CustomStringConvertible {
    public let network: IPv4Address
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

    public var mask: IPv4Address { IPv4Address(rawValue: Self.mask(prefixLength)) }
    public var broadcast: IPv4Address { IPv4Address(rawValue: network.rawValue | ~Self.mask(prefixLength)) }
    public func contains(_ address: IPv4Address) -> Bool { address.rawValue & Self.mask(prefixLength) == network.rawValue }
    /// The `n`th address of the subnet (network + n), nil past its end.
    public func address(at n: UInt32) -> IPv4Address? {
        let hosts = prefixLength == 0 ? UInt32.max : ~Self.mask(prefixLength)
        guard n <= hosts else { return nil }
        return IPv4Address(rawValue: network.rawValue | n)
    }
    public var description: String { "\(network)/\(prefixLength)" }
}
