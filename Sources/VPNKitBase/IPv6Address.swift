/// An IPv6 address, held as two host-order `UInt64` halves.
///
/// Text is parsed as RFC 4291 §2.2 writes it (groups of one to four hex digits, at most one `::`,
/// an optional dotted IPv4 address in the last 32 bits) and printed in the canonical form of
/// RFC 5952 §4: lowercase, no leading zeros, the longest run of two or more zero groups (the first
/// of equal runs) written `::`. An IPv4-mapped address (`::ffff:0:0/96`) prints in the mixed form
/// RFC 5952 §5 recommends, such as `::ffff:192.0.2.1`.
public struct IPv6Address: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The first 64 bits (groups 0–3); the first octet is the most significant byte.
    public var high: UInt64
    /// The last 64 bits (groups 4–7); the last octet is the least significant byte.
    public var low: UInt64

    /// Creates an address from its two 64-bit halves, in host order.
    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an address from its eight 16-bit groups in text order, so
    /// `IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)` is 2001:db8::1.
    @inlinable
    public init(
        _ g0: UInt16, _ g1: UInt16, _ g2: UInt16, _ g3: UInt16, _ g4: UInt16, _ g5: UInt16, _ g6: UInt16, _ g7: UInt16
    ) {
        self.high = UInt64(g0) << 48 | UInt64(g1) << 32 | UInt64(g2) << 16 | UInt64(g3)
        self.low = UInt64(g4) << 48 | UInt64(g5) << 32 | UInt64(g6) << 16 | UInt64(g7)
    }

    /// Creates an address from its 16 octets in network order; nil unless there are exactly 16.
    public init?(octets: some Collection<UInt8>) {
        guard octets.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, octet) in octets.enumerated() {
            if index < 8 {
                high = high << 8 | UInt64(octet)
            } else {
                low = low << 8 | UInt64(octet)
            }
        }
        self.init(high: high, low: low)
    }

    /// The IPv4-mapped address of `address` (RFC 4291 §2.5.5.2), `::ffff:a.b.c.d`.
    @inlinable
    public init(ipv4Mapped address: IPv4Address) {
        self.init(high: 0, low: 0xFFFF_0000_0000 | UInt64(address.rawValue))
    }

    /// Parses RFC 4291 §2.2 text: eight groups of one to four hex digits (either case) separated by
    /// colons, one `::` standing for one or more zero groups, and optionally a dotted-quad IPv4
    /// address as the last 32 bits (`::ffff:192.0.2.1`, decimal octets without leading zeros). Nil
    /// for anything else, including zone identifiers (`fe80::1%eth0`), brackets, prefixes (`/64`)
    /// and surrounding spaces.
    public init?(_ text: some StringProtocol) {
        guard let address = IPv6TextParser.parse(text.utf8) else { return nil }
        self = address
    }

    /// The unspecified address `::`, used as a source before an address is assigned or as a wildcard.
    public static let any = IPv6Address(high: 0, low: 0)
    /// The unspecified address `::` (the same value as `any`, by its RFC 4291 name).
    public static let unspecified = IPv6Address(high: 0, low: 0)
    /// The loopback address `::1`.
    public static let loopback = IPv6Address(high: 0, low: 1)

    /// The sixteen octets in network order.
    public var octets: [UInt8] {
        (0..<16).map { index in
            let half = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: half >> (56 - 8 * (index % 8)))
        }
    }

    /// The eight 16-bit groups in text order.
    public var groups: [UInt16] { (0..<8).map(group) }

    /// Group `index` (0…7) in text order.
    func group(_ index: Int) -> UInt16 {
        let half = index < 4 ? high : low
        return UInt16(truncatingIfNeeded: half >> (48 - 16 * (index % 4)))
    }

    /// Whether this is the unspecified address `::`.
    public var isUnspecified: Bool { high == 0 && low == 0 }
    /// Whether this is the loopback address `::1`.
    public var isLoopback: Bool { high == 0 && low == 1 }
    /// Whether the address is in the multicast range ff00::/8.
    public var isMulticast: Bool { high >> 56 == 0xFF }
    /// Whether the address is in the link-local unicast range fe80::/10.
    public var isLinkLocal: Bool { high >> 54 == 0xFE80 >> 6 }
    /// The IPv4 address of an IPv4-mapped address (`::ffff:a.b.c.d`), nil for any other.
    public var ipv4Mapped: IPv4Address? {
        guard high == 0, low >> 32 == 0xFFFF else { return nil }
        return IPv4Address(rawValue: UInt32(truncatingIfNeeded: low))
    }

    /// The RFC 5952 canonical text: lowercase hex without leading zeros, the longest run of two or
    /// more zero groups (the first one when runs tie) compressed to `::`, and IPv4-mapped addresses
    /// in mixed form, such as `2001:db8::1` or `::ffff:192.0.2.1`.
    public var description: String {
        if let mapped = ipv4Mapped { return "::ffff:\(mapped)" }
        var bestStart = 0
        var bestLength = 0
        var index = 0
        while index < 8 {
            guard group(index) == 0 else {
                index += 1
                continue
            }
            var end = index + 1
            while end < 8, group(end) == 0 { end += 1 }
            if end - index > bestLength {
                bestStart = index
                bestLength = end - index
            }
            index = end
        }
        func text(_ range: Range<Int>) -> String {
            range.map { String(group($0), radix: 16) }.joined(separator: ":")
        }
        guard bestLength >= 2 else { return text(0..<8) }
        return text(0..<bestStart) + "::" + text((bestStart + bestLength)..<8)
    }

    /// Orders addresses numerically, so a range of addresses sorts in ascending order.
    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}

/// RFC 4291 §2.2 text to an address, over UTF-8 bytes: every index is checked against the count,
/// and nothing is longer than the 45 bytes of the longest valid form, so no input can trap.
enum IPv6TextParser {
    /// The longest valid text: seven four-digit groups and a 15-byte dotted quad.
    static let maximumLength = 45

    static func parse(_ utf8: some Sequence<UInt8>) -> IPv6Address? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(maximumLength)
        for byte in utf8 {
            guard bytes.count < maximumLength else { return nil }
            bytes.append(byte)
        }
        let colon = UInt8(ascii: ":")
        let count = bytes.count
        // Groups before the `::` (all of them when there is none), and after it.
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var compressed = false
        var index = 0
        guard count >= 2 else { return nil }
        if bytes[0] == colon {
            guard bytes[1] == colon else { return nil }
            compressed = true
            index = 2
        }
        while index < count {
            var end = index
            while end < count, bytes[end] != colon { end += 1 }
            let piece = bytes[index..<end]
            guard !piece.isEmpty else { return nil }
            if piece.contains(UInt8(ascii: ".")) {
                // A dotted quad only as the very last piece.
                guard end == count, let v4 = dottedQuad(piece) else { return nil }
                let pair = [UInt16(truncatingIfNeeded: v4 >> 16), UInt16(truncatingIfNeeded: v4)]
                if compressed { tail += pair } else { head += pair }
            } else {
                guard let group = hexGroup(piece) else { return nil }
                if compressed { tail.append(group) } else { head.append(group) }
            }
            guard end < count else { break }
            // At a colon: another piece must follow, or a `::` (at most one) may.
            index = end + 1
            if index < count, bytes[index] == colon {
                guard !compressed else { return nil }
                compressed = true
                index += 1
            } else if index == count {
                return nil
            }
        }
        let groups: [UInt16]
        if compressed {
            guard head.count + tail.count <= 7 else { return nil }
            groups = head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            groups = head
        }
        return IPv6Address(groups[0], groups[1], groups[2], groups[3], groups[4], groups[5], groups[6], groups[7])
    }

    /// One to four hex digits.
    static func hexGroup(_ piece: ArraySlice<UInt8>) -> UInt16? {
        guard piece.count >= 1, piece.count <= 4 else { return nil }
        var value: UInt16 = 0
        for byte in piece {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }

    /// Four decimal octets (0–255, no leading zeros, as inet_pton takes them) separated by dots.
    static func dottedQuad(_ piece: ArraySlice<UInt8>) -> UInt32? {
        var value: UInt32 = 0
        var octets = 0
        var octet: UInt32 = 0
        var digits = 0
        for byte in piece {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, octets < 3 else { return nil }
                value = value << 8 | octet
                octets += 1
                octet = 0
                digits = 0
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            // A leading zero is allowed only as the whole octet ("0", not "01").
            guard !(digits == 1 && octet == 0) else { return nil }
            octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
            digits += 1
            guard digits <= 3, octet <= 255 else { return nil }
        }
        guard digits > 0, octets == 3 else { return nil }
        return value << 8 | octet
    }
}
