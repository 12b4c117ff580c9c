/// The TCP flags field (the low 12 bits of header bytes 12–13: 3 reserved bits, NS/AE, CWR … FIN).
public struct TCPFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The flag bits, in the low 12 bits (the data offset nibble is never included).
    public var rawValue: UInt16
    /// Creates a flag set from the header's bytes 12–13; the data offset in the top four bits is discarded.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0FFF }

    /// FIN: the sender has no more data.
    public static let fin = TCPFlags(rawValue: 0x001)
    /// SYN: synchronize sequence numbers (opens a connection).
    public static let syn = TCPFlags(rawValue: 0x002)
    /// RST: reset the connection.
    public static let rst = TCPFlags(rawValue: 0x004)
    /// PSH: push buffered data to the application.
    public static let psh = TCPFlags(rawValue: 0x008)
    /// ACK: the acknowledgment number is significant.
    public static let ack = TCPFlags(rawValue: 0x010)
    /// URG: the urgent pointer is significant.
    public static let urg = TCPFlags(rawValue: 0x020)
    /// ECE: ECN echo (congestion experienced, or ECN-capable in a SYN).
    public static let ece = TCPFlags(rawValue: 0x040)
    /// CWR: congestion window reduced.
    public static let cwr = TCPFlags(rawValue: 0x080)
    /// The former ECN-nonce bit, now AccECN's AE.
    public static let ns = TCPFlags(rawValue: 0x100)

    /// The set flags as tcpdump-style letters (`S`, `F`, `R`, `P`, `.` for ACK, `U`, `E`, `W`, `N`), such as
    /// `S.` for a SYN-ACK; `none` when empty.
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
    /// The 32-bit sequence number as on the wire.
    public var rawValue: UInt32
    /// Wraps a 32-bit sequence number.
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Wraps a 32-bit sequence number (the same as `init(rawValue:)`).
    @inlinable public init(_ value: UInt32) { self.rawValue = value }

    /// Whether `lhs` comes before `rhs` in modular order, that is, less than 2^31 behind it. Meaningful only
    /// for numbers within 2^31 of each other.
    @inlinable public static func < (lhs: Self, rhs: Self) -> Bool { Int32(bitPattern: lhs.rawValue &- rhs.rawValue) < 0 }
    /// The number `rhs` bytes further on, wrapping modulo 2^32; a negative `rhs` moves back.
    @inlinable public static func + (lhs: Self, rhs: Int) -> Self { Self(lhs.rawValue &+ UInt32(truncatingIfNeeded: rhs)) }
    /// The signed distance in bytes from `rhs` to `lhs`, in -2^31..<2^31, so `rhs + (lhs - rhs) == lhs`.
    @inlinable public static func - (lhs: Self, rhs: Self) -> Int { Int(Int32(bitPattern: lhs.rawValue &- rhs.rawValue)) }
    /// The sequence number in decimal.
    public var description: String { String(rawValue) }
}
