public import NIOCore
public import VPNKitBase

/// A validated view of an IPv4 packet.
///
/// Construction checks the version, the header length (≥ 20, within the buffer) and the total length
/// (≥ header length, within the buffer); bytes past the total length (Ethernet padding) are excluded
/// from `payload`. The header checksum is not checked here: ask `isHeaderChecksumValid`.
public struct IPv4Packet: Sendable {
    /// The packet's bytes, from the version byte; may extend past `totalLength` (link padding).
    public let bytes: ByteView
    /// The header length in bytes (IHL × 4).
    public let headerLength: Int
    /// The total-length field.
    public let totalLength: Int

    /// Validates the readable bytes of `buffer` as a packet and throws the same errors as the `ByteView`
    /// initializer.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` as an IPv4 packet; afterwards no accessor can trap.
    ///
    /// - Throws: `WireError.truncated` for fewer than 20 bytes, `WireError.unsupported` for a version other
    ///   than 4, `WireError.lengthTooSmall` for a header length below 20 or a total length below the header
    ///   length, and `WireError.lengthExceedsBuffer` when either length runs past the bytes given.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        let available = bytes.count
        guard available >= 20 else { throw .truncated(needed: 20, available: available) }
        let versionAndIHL = bytes.loadU8(at: 0)
        guard versionAndIHL >> 4 == 4 else { throw .unsupported(field: "version", value: Int(versionAndIHL >> 4)) }
        let headerLength = Int(versionAndIHL & 0x0F) * 4
        guard headerLength >= 20 else { throw .lengthTooSmall(field: "header length", value: headerLength, minimum: 20) }
        guard headerLength <= available else {
            throw .lengthExceedsBuffer(field: "header length", value: headerLength, available: available)
        }
        let totalLength = Int(bytes.loadU16(at: 2))
        guard totalLength >= headerLength else {
            throw .lengthTooSmall(field: "total length", value: totalLength, minimum: headerLength)
        }
        guard totalLength <= available else {
            throw .lengthExceedsBuffer(field: "total length", value: totalLength, available: available)
        }
        self.bytes = bytes
        self.headerLength = headerLength
        self.totalLength = totalLength
    }

    /// Always 4: construction rejects any other version.
    @inlinable public var version: UInt8 { 4 }
    /// The DS field's upper six bits.
    @inlinable public var dscp: UInt8 { bytes.loadU8(at: 1) >> 2 }
    /// The Explicit Congestion Notification bits, the low two bits of the DS field (0…3).
    @inlinable public var ecn: UInt8 { bytes.loadU8(at: 1) & 3 }
    /// The identification field, shared by all fragments of one datagram.
    @inlinable public var identification: UInt16 { bytes.loadU16(at: 4) }
    /// The Don't Fragment (DF) flag.
    @inlinable public var dontFragment: Bool { bytes.loadU8(at: 6) & 0x40 != 0 }
    /// The More Fragments (MF) flag: set on every fragment but the last.
    @inlinable public var moreFragments: Bool { bytes.loadU8(at: 6) & 0x20 != 0 }
    /// The reserved ("evil") bit.
    @inlinable public var reservedFlag: Bool { bytes.loadU8(at: 6) & 0x80 != 0 }
    /// The fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(bytes.loadU16(at: 6) & 0x1FFF) * 8 }
    /// True when this is a fragment (MF set or a non-zero offset).
    @inlinable public var isFragment: Bool { bytes.loadU16(at: 6) & 0x3FFF != 0 }
    /// The remaining hop count (TTL).
    @inlinable public var timeToLive: UInt8 { bytes.loadU8(at: 8) }
    /// The protocol of the payload.
    @inlinable public var `protocol`: IPProtocol { IPProtocol(rawValue: bytes.loadU8(at: 9)) }
    /// The header checksum field as received; see `isHeaderChecksumValid`.
    @inlinable public var headerChecksum: UInt16 { bytes.loadU16(at: 10) }
    /// The source address.
    @inlinable public var source: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 12)) }
    /// The destination address.
    @inlinable public var destination: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 16)) }

    /// The options bytes (between the fixed header and the payload), possibly empty.
    @inlinable public var options: ByteView { bytes.view(from: 20, length: headerLength - 20) }
    /// The payload, up to the total length.
    @inlinable public var payload: ByteView { bytes.view(from: headerLength, length: totalLength - headerLength) }
    /// The payload length in bytes: the total length minus the header length.
    @inlinable public var payloadLength: Int { totalLength - headerLength }

    /// Whether the header checksum verifies.
    @inlinable public var isHeaderChecksumValid: Bool {
        var c = InternetChecksum()
        c.add(bytes, length: headerLength)
        return c.value == 0
    }

    /// The pseudo-header for TCP/UDP checksums over this packet's payload.
    @inlinable public var pseudoHeader: IPPseudoHeader {
        IPPseudoHeader(source: .v4(source), destination: .v4(destination), protocol: self.protocol, length: payloadLength)
    }
}

/// The value form of an IPv4 header.
public struct IPv4Header: Sendable, Hashable {
    /// The Differentiated Services code point (0…63); 0 by default.
    public var dscp: UInt8 = 0
    /// The Explicit Congestion Notification bits (0…3; only the low two bits are written); 0 by default.
    public var ecn: UInt8 = 0
    /// The total length; `prepend(to:)` sets it from the payload.
    public var totalLength: Int = 20
    /// The identification field that ties fragments of one datagram together; 0 by default.
    public var identification: UInt16 = 0
    /// The reserved flag bit (must be zero on the wire; kept so a parsed header can be rewritten unchanged).
    public var reservedFlag = false
    /// The Don't Fragment (DF) flag; false by default.
    public var dontFragment = false
    /// The More Fragments (MF) flag; set on every fragment but the last.
    public var moreFragments = false
    /// In bytes; must be a multiple of 8.
    public var fragmentOffset: Int = 0
    /// The hop limit (TTL); 64 by default.
    public var timeToLive: UInt8 = 64
    /// The protocol of the payload.
    public var `protocol`: IPProtocol
    /// The source address.
    public var source: IPv4Address
    /// The destination address.
    public var destination: IPv4Address
    /// Raw option bytes; padded with zeros to a multiple of four on emit. At most 40 bytes.
    public var options: [UInt8] = []

    /// Creates an unfragmented header with no options, DSCP/ECN of 0 and the given addressing fields.
    public init(
        source: IPv4Address, destination: IPv4Address, protocol: IPProtocol, timeToLive: UInt8 = 64,
        identification: UInt16 = 0, dontFragment: Bool = false
    ) {
        self.source = source
        self.destination = destination
        self.protocol = `protocol`
        self.timeToLive = timeToLive
        self.identification = identification
        self.dontFragment = dontFragment
    }

    /// Copies every field of a validated packet, options included (the checksum is recomputed by
    /// `prepend(to:)`).
    public init(parsing packet: IPv4Packet) {
        self.init(
            source: packet.source, destination: packet.destination, protocol: packet.protocol,
            timeToLive: packet.timeToLive, identification: packet.identification, dontFragment: packet.dontFragment)
        self.dscp = packet.dscp
        self.ecn = packet.ecn
        self.totalLength = packet.totalLength
        self.reservedFlag = packet.reservedFlag
        self.moreFragments = packet.moreFragments
        self.fragmentOffset = packet.fragmentOffset
        self.options = packet.options.array
    }

    /// The length in bytes `prepend(to:)` writes: 20 plus the options rounded up to a multiple of four,
    /// capped at 60.
    public var headerLength: Int { 20 + min(40, (options.count + 3) & ~3) }

    /// The pseudo-header for a transport payload of `length` bytes.
    public func pseudoHeader(length: Int) -> IPPseudoHeader {
        IPPseudoHeader(source: .v4(source), destination: .v4(destination), protocol: self.protocol, length: length)
    }

    /// Writes the header in front of `buffer`'s readable bytes (the payload), setting the total length
    /// from them and computing the header checksum.
    public func prepend(to buffer: inout ByteBuffer) {
        prepend(to: &buffer, trailingLength: 0)
    }

    /// Like `prepend(to:)` for a datagram whose last `trailingLength` bytes travel in a buffer of
    /// their own (a payload sent without copying it behind the headers): the total length counts them.
    public func prepend(to buffer: inout ByteBuffer, trailingLength: Int) {
        let headerLength = self.headerLength
        let total = headerLength + buffer.readableBytes + trailingLength
        buffer.withHeaderWriter(length: headerLength) { header in
            header.storeU8(0x40 | UInt8(headerLength / 4), at: 0)
            header.storeU8(dscp << 2 | (ecn & 3), at: 1)
            header.storeU16(UInt16(truncatingIfNeeded: total), at: 2)
            header.storeU16(identification, at: 4)
            var flagsAndOffset = UInt16(truncatingIfNeeded: fragmentOffset / 8) & 0x1FFF
            if reservedFlag { flagsAndOffset |= 0x8000 }
            if dontFragment { flagsAndOffset |= 0x4000 }
            if moreFragments { flagsAndOffset |= 0x2000 }
            header.storeU16(flagsAndOffset, at: 6)
            header.storeU8(timeToLive, at: 8)
            header.storeU8(self.protocol.rawValue, at: 9)
            header.storeU32(source.rawValue, at: 12)
            header.storeU32(destination.rawValue, at: 16)
            if !options.isEmpty { header.storeBytes(Array(options.prefix(40)), at: 20) }
            header.storeU16(~header.sum16(length: headerLength), at: 10)
        }
    }
}
