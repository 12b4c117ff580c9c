// The IPv6 header (RFC 8200 §3): a view checked once and a value written in place.

public import NIOCore
public import VPNKitBase

extension ByteView {
    /// The 16 bytes at `offset` as an IPv6 address (zero where they run past the view).
    @inlinable
    public func loadIPv6Address(at offset: Int) -> IPv6Address {
        IPv6Address(
            high: UInt64(loadU32(at: offset)) << 32 | UInt64(loadU32(at: offset &+ 4)),
            low: UInt64(loadU32(at: offset &+ 8)) << 32 | UInt64(loadU32(at: offset &+ 12)))
    }
}

extension HeaderWriter {
    /// Writes `address` as 16 bytes at `offset`.
    @inlinable
    public func storeIPv6Address(_ address: IPv6Address, at offset: Int) {
        storeU32(UInt32(truncatingIfNeeded: address.high >> 32), at: offset)
        storeU32(UInt32(truncatingIfNeeded: address.high), at: offset + 4)
        storeU32(UInt32(truncatingIfNeeded: address.low >> 32), at: offset + 8)
        storeU32(UInt32(truncatingIfNeeded: address.low), at: offset + 12)
    }
}

/// A validated view of an IPv6 packet.
///
/// Construction checks the version and that the payload length lies within the bytes given; bytes
/// past it (Ethernet padding) are excluded from `payload`. A payload length of zero with a
/// hop-by-hop header would announce a jumbogram (RFC 2675), which no link we serve can carry: it is
/// taken as an empty payload, and the extension header walk then finds the header truncated.
public struct IPv6Packet: Sendable {
    /// The fixed header's length in bytes.
    public static let headerLength = 40

    /// The packet's bytes, from the version nibble; may extend past the payload (link padding).
    public let bytes: ByteView
    /// The payload length field: the bytes after the fixed header, extension headers included.
    public let payloadLength: Int

    /// Validates the readable bytes of `buffer` as a packet and throws the same errors as the `ByteView`
    /// initializer.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` as an IPv6 packet; afterwards no accessor can trap.
    ///
    /// - Throws: `WireError.truncated` for fewer than 40 bytes, `WireError.unsupported` for a version
    ///   other than 6, and `WireError.lengthExceedsBuffer` when the payload length runs past the bytes.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        let available = bytes.count
        guard available >= 40 else { throw .truncated(needed: 40, available: available) }
        let version = bytes.loadU8(at: 0) >> 4
        guard version == 6 else { throw .unsupported(field: "version", value: Int(version)) }
        let payloadLength = Int(bytes.loadU16(at: 4))
        guard 40 + payloadLength <= available else {
            throw .lengthExceedsBuffer(field: "payload length", value: payloadLength, available: available - 40)
        }
        self.bytes = bytes
        self.payloadLength = payloadLength
    }

    /// Always 6: construction rejects any other version.
    @inlinable public var version: UInt8 { 6 }
    /// The traffic class (DSCP and ECN).
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.loadU16(at: 0) >> 4) }
    /// The 20-bit flow label.
    @inlinable public var flowLabel: UInt32 { bytes.loadU32(at: 0) & 0xF_FFFF }
    /// The type of the header after the fixed one: an extension header or the upper layer.
    @inlinable public var nextHeader: IPProtocol { IPProtocol(rawValue: bytes.loadU8(at: 6)) }
    /// The remaining hop count.
    @inlinable public var hopLimit: UInt8 { bytes.loadU8(at: 7) }
    /// The source address.
    @inlinable public var source: IPv6Address { bytes.loadIPv6Address(at: 8) }
    /// The destination address.
    @inlinable public var destination: IPv6Address { bytes.loadIPv6Address(at: 24) }
    /// Everything after the fixed header up to the payload length: extension headers and the upper layer.
    @inlinable public var payload: ByteView { bytes.view(from: 40, length: payloadLength) }
    /// The fixed header and the payload, without link padding.
    @inlinable public var packet: ByteView { bytes.view(from: 0, length: 40 + payloadLength) }
}

/// The value form of the fixed IPv6 header.
public struct IPv6Header: Sendable, Hashable {
    /// The traffic class (DSCP in the upper six bits, ECN in the lower two); 0 by default.
    public var trafficClass: UInt8 = 0
    /// The flow label; only the low 20 bits are written. 0 by default.
    public var flowLabel: UInt32 = 0
    /// The payload length; `prepend(to:)` sets it from the payload.
    public var payloadLength: Int = 0
    /// The type of the next header.
    public var nextHeader: IPProtocol
    /// The hop limit; 64 by default (255 for neighbour discovery, RFC 4861 §6.1).
    public var hopLimit: UInt8 = 64
    /// The source address.
    public var source: IPv6Address
    /// The destination address.
    public var destination: IPv6Address

    /// Creates a header with a traffic class and flow label of 0.
    public init(source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, hopLimit: UInt8 = 64) {
        self.source = source
        self.destination = destination
        self.nextHeader = nextHeader
        self.hopLimit = hopLimit
    }

    /// Copies every field of a validated packet's fixed header.
    public init(parsing packet: IPv6Packet) {
        self.init(source: packet.source, destination: packet.destination, nextHeader: packet.nextHeader, hopLimit: packet.hopLimit)
        trafficClass = packet.trafficClass
        flowLabel = packet.flowLabel
        payloadLength = packet.payloadLength
    }

    /// The pseudo-header for an upper-layer message of `length` bytes (the next header must be the
    /// upper layer's, RFC 8200 §8.1).
    public func pseudoHeader(length: Int) -> IPPseudoHeader {
        IPPseudoHeader(source: .v6(source), destination: .v6(destination), protocol: nextHeader, length: length)
    }

    /// Writes the 40-byte header in front of `buffer`'s readable bytes (the payload), setting the
    /// payload length from them plus `trailingLength` bytes sent in a buffer of their own.
    public func prepend(to buffer: inout ByteBuffer, trailingLength: Int = 0) {
        let payloadLength = buffer.readableBytes + trailingLength
        buffer.withHeaderWriter(length: 40) { header in
            header.storeU32(6 << 28 | UInt32(trafficClass) << 20 | flowLabel & 0xF_FFFF, at: 0)
            header.storeU16(UInt16(truncatingIfNeeded: payloadLength), at: 4)
            header.storeU8(nextHeader.rawValue, at: 6)
            header.storeU8(hopLimit, at: 7)
            header.storeIPv6Address(source, at: 8)
            header.storeIPv6Address(destination, at: 24)
        }
    }
}
