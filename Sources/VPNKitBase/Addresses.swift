/// An IPv4 address, held as a host-order `UInt32`.
public struct IPv4Address: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The address as a host-order integer; the first dotted-quad octet is the most significant byte.
    public var rawValue: UInt32

    /// Creates an address from a host-order integer (for example `0xC0A8_4101` for 192.168.65.1).
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Creates an address from its four octets in dotted-quad order, so `IPv4Address(10, 0, 0, 1)` is
    /// 10.0.0.1.
    @inlinable
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text ("192.168.65.1"); nil for anything else.
    public init?(_ text: some StringProtocol) {
        var value: UInt32 = 0
        var octets = 0
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard part.count >= 1, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let octet = UInt32(part), octet <= 255
            else { return nil }
            value = value << 8 | octet
            octets += 1
        }
        guard octets == 4 else { return nil }
        self.rawValue = value
    }

    /// The unspecified address 0.0.0.0, used as a source before an address is assigned or as a wildcard.
    public static let any = IPv4Address(rawValue: 0)
    /// The limited broadcast address 255.255.255.255.
    public static let broadcast = IPv4Address(rawValue: 0xFFFF_FFFF)
    /// The loopback address 127.0.0.1.
    public static let loopback = IPv4Address(rawValue: 0x7F00_0001)

    /// The four octets in network order.
    @inlinable
    public var octets: [UInt8] {
        [UInt8(truncatingIfNeeded: rawValue >> 24), UInt8(truncatingIfNeeded: rawValue >> 16),
         UInt8(truncatingIfNeeded: rawValue >> 8), UInt8(truncatingIfNeeded: rawValue)]
    }

    /// Whether the address is in the multicast range 224.0.0.0/4.
    public var isMulticast: Bool { rawValue >> 28 == 0xE }
    /// Whether the address is in the loopback range 127.0.0.0/8.
    public var isLoopback: Bool { rawValue >> 24 == 127 }

    /// The address in dotted-quad form, such as `192.168.65.1`.
    public var description: String {
        "\(rawValue >> 24).\(rawValue >> 16 & 0xFF).\(rawValue >> 8 & 0xFF).\(rawValue & 0xFF)"
    }

    /// Orders addresses numerically, so a range of addresses sorts in ascending order.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An IEEE 802 MAC address, held in the low 48 bits of a `UInt64`.
public struct MACAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address in the low 48 bits, first octet most significant; the high 16 bits are zero when set
    /// through an initializer.
    public var rawValue: UInt64

    /// Creates an address from the low 48 bits of `rawValue`; higher bits are discarded.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    /// Creates an address from its six octets in transmission order.
    public init(_ bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        self.init(rawValue: UInt64(bytes.0) << 40 | UInt64(bytes.1) << 32 | UInt64(bytes.2) << 24
            | UInt64(bytes.3) << 16 | UInt64(bytes.4) << 8 | UInt64(bytes.5))
    }

    /// Parses "aa:bb:cc:dd:ee:ff" (or with '-'); nil for anything else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var value: UInt64 = 0
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            value = value << 8 | UInt64(byte)
        }
        self.rawValue = value
    }

    /// The broadcast address ff:ff:ff:ff:ff:ff.
    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)
    /// The all-zero address 00:00:00:00:00:00, used as "unknown" (for example the target hardware address in
    /// an ARP request).
    public static let zero = MACAddress(rawValue: 0)

    /// Whether this is the broadcast address ff:ff:ff:ff:ff:ff.
    public var isBroadcast: Bool { rawValue == 0xFFFF_FFFF_FFFF }
    /// The group bit (I/G) of the first octet.
    public var isMulticast: Bool { rawValue >> 40 & 1 == 1 }

    /// The six octets in transmission order, as a new array.
    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * $0)) } }

    /// The address as six lowercase, zero-padded hex pairs separated by colons, such as `02:50:00:00:00:01`.
    public var description: String {
        bytes.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}
