/// The TCP flags field (the low 12 bits of header bytes 12–13: 3 reserved bits, NS/AE, CWR … FIN).
public struct TCPFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0FFF }

    public static let fin = TCPFlags(rawValue: 0x001)
    public static let syn = TCPFlags(rawValue: 0x002)
    public static let rst = TCPFlags(rawValue: 0x004)
    public static let psh = TCPFlags(rawValue: 0x008)
    public static let ack = TCPFlags(rawValue: 0x010)
    public static let urg = TCPFlags(rawValue: 0x020)
    public static let ece = TCPFlags(rawValue: 0x040)
    public static let cwr = TCPFlags(rawValue: 0x080)
    /// The former ECN-nonce bit, now AccECN's AE.
    public static let ns = TCPFlags(rawValue: 0x100)

    public var description: String {
        let names: [(TCPFlags, String)] = [
            (.syn, "S"), (.fin, "F"), (.rst, "R"), (.psh, "P"), (.ack, "."), (.urg, "U"), (.ece, "E"), (.cwr, "W"),
            (.ns, "N"),
        ]
        let text = names.filter { self.contains($0.0) }.map(\.1).joined()
        return text.isEmpty ? "none" : text
    }
}

/// TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 §3.4).
public struct SequenceNumber: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ value: UInt32) { self.rawValue = value }

    @inlinable public static func < (lhs: Self, rhs: Self) -> Bool { Int32(bitPattern: lhs.rawValue &- rhs.rawValue) < 0 }
    @inlinable public static func + (lhs: Self, rhs: Int) -> Self { Self(lhs.rawValue &+ UInt32(truncatingIfNeeded: rhs)) }
    @inlinable public static func - (lhs: Self, rhs: Self) -> Int { Int(Int32(bitPattern: lhs.rawValue &- rhs.rawValue)) }
    public var description: String { String(rawValue) }
}
