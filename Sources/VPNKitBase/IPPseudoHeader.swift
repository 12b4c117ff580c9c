// The pseudo-header that TCP, UDP and ICMPv6 checksums cover, for either IP family.

/// The part of the IP header a transport checksum covers: RFC 793/768's 12 bytes over IPv4
/// (addresses, a zero byte, the protocol, a 16-bit length), RFC 8200 §8.1's 40 bytes over IPv6
/// (addresses, a 32-bit upper-layer length, three zero bytes, the next header).
public struct IPPseudoHeader: Sendable, Hashable {
    /// The packet's source address.
    public var source: IPAddress
    /// The packet's destination address (over IPv6, the final one when a routing header names it).
    public var destination: IPAddress
    /// The transport protocol (the next header over IPv6).
    public var `protocol`: IPProtocol
    /// The transport length in bytes (header + payload).
    public var length: Int

    /// Creates a pseudo-header; `length` is the transport header plus payload in bytes.
    @inlinable
    public init(source: IPAddress, destination: IPAddress, protocol: IPProtocol, length: Int) {
        self.source = source
        self.destination = destination
        self.protocol = `protocol`
        self.length = length
    }

    /// A checksum accumulator already holding the pseudo-header. For two IPv4 addresses it is the
    /// same four additions as a bare IPv4 pseudo-header (addresses, protocol, 16-bit length); for
    /// anything else the IPv6 form. Addresses of mixed families are not a header any packet carries:
    /// they are summed as IPv6, the IPv4 one in its IPv4-mapped form, so the result is defined.
    /// Always inlined: where the addresses are known to be IPv4 (every per-segment caller) the
    /// family check folds away and only the four additions remain.
    @inlinable @inline(__always)
    public var checksum: InternetChecksum {
        if case .v4(let source) = source, case .v4(let destination) = destination {
            var c = InternetChecksum()
            c.add(source.rawValue)
            c.add(destination.rawValue)
            c.add(UInt16(self.protocol.rawValue))
            c.add(UInt16(truncatingIfNeeded: length))
            return c
        }
        return ipv6Checksum
    }

    /// The RFC 8200 §8.1 sum, kept out of line: the IPv4 path above stays small where it is inlined.
    @usableFromInline
    var ipv6Checksum: InternetChecksum {
        func add(_ address: IPAddress, to c: inout InternetChecksum) {
            let v6: IPv6Address
            switch address {
            case .v4(let v4): v6 = IPv6Address(ipv4Mapped: v4)
            case .v6(let address): v6 = address
            }
            c.add(UInt32(truncatingIfNeeded: v6.high >> 32))
            c.add(UInt32(truncatingIfNeeded: v6.high))
            c.add(UInt32(truncatingIfNeeded: v6.low >> 32))
            c.add(UInt32(truncatingIfNeeded: v6.low))
        }
        var c = InternetChecksum()
        add(source, to: &c)
        add(destination, to: &c)
        c.add(UInt32(truncatingIfNeeded: length))
        // Three zero bytes, then the next header: its word is the number alone.
        c.add(UInt16(self.protocol.rawValue))
        return c
    }

    /// Whether `transport` (a whole TCP segment, UDP datagram or ICMPv6 message) carries a valid
    /// checksum. Always inlined, as `checksum` is.
    @inlinable @inline(__always)
    public func verifies(_ transport: ByteView) -> Bool {
        var c = checksum
        c.add(transport)
        return c.value == 0
    }
}
