// TCP sequence numbers and their modular arithmetic (RFC 9293 §3.4).

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
