public import NIOCore
public import VPNKitBase

/// IP protocol numbers.
public struct IPProtocol: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let icmp = IPProtocol(rawValue: 1)
    public static let tcp = IPProtocol(rawValue: 6)
    public static let udp = IPProtocol(rawValue: 17)
    public var description: String {
        switch self {
        case .icmp: return "ICMP"
        case .tcp: return "TCP"
        case .udp: return "UDP"
        default: return "proto \(rawValue)"
        }
    }
}

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

    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

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

    @inlinable public var version: UInt8 { 4 }
    /// The DS field's upper six bits.
    @inlinable public var dscp: UInt8 { bytes.loadU8(at: 1) >> 2 }
    @inlinable public var ecn: UInt8 { bytes.loadU8(at: 1) & 3 }
    @inlinable public var identification: UInt16 { bytes.loadU16(at: 4) }
    @inlinable public var dontFragment: Bool { bytes.loadU8(at: 6) & 0x40 != 0 }
    @inlinable public var moreFragments: Bool { bytes.loadU8(at: 6) & 0x20 != 0 }
    /// The reserved ("evil") bit.
    @inlinable public var reservedFlag: Bool { bytes.loadU8(at: 6) & 0x80 != 0 }
    /// The fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(bytes.loadU16(at: 6) & 0x1FFF) * 8 }
    /// True when this is a fragment (MF set or a non-zero offset).
    @inlinable public var isFragment: Bool { bytes.loadU16(at: 6) & 0x3FFF != 0 }
    @inlinable public var timeToLive: UInt8 { bytes.loadU8(at: 8) }
    @inlinable public var `protocol`: IPProtocol { IPProtocol(rawValue: bytes.loadU8(at: 9)) }
    @inlinable public var headerChecksum: UInt16 { bytes.loadU16(at: 10) }
    @inlinable public var source: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 12)) }
    @inlinable public var destination: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 16)) }

    /// The options bytes (between the fixed header and the payload), possibly empty.
    @inlinable public var options: ByteView { bytes.view(from: 20, length: headerLength - 20) }
    /// The payload, up to the total length.
    @inlinable public var payload: ByteView { bytes.view(from: headerLength, length: totalLength - headerLength) }
    @inlinable public var payloadLength: Int { totalLength - headerLength }

    /// Whether the header checksum verifies.
    @inlinable public var isHeaderChecksumValid: Bool {
        var c = InternetChecksum()
        c.add(bytes, length: headerLength)
        return c.value == 0
    }

    /// The pseudo-header for TCP/UDP checksums over this packet's payload.
    @inlinable public var pseudoHeader: IPv4PseudoHeader {
        IPv4PseudoHeader(source: source, destination: destination, protocol: self.protocol, length: payloadLength)
    }
}

/// The part of the IPv4 header that TCP and UDP checksums cover.
public struct IPv4PseudoHeader: Sendable, Hashable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var `protocol`: IPProtocol
    /// The transport length (header + payload).
    public var length: Int

    @inlinable
    public init(source: IPv4Address, destination: IPv4Address, protocol: IPProtocol, length: Int) {
        self.source = source
        self.destination = destination
        self.protocol = `protocol`
        self.length = length
    }

    /// A checksum accumulator already holding the pseudo-header.
    @inlinable public var checksum: InternetChecksum {
        var c = InternetChecksum()
        c.add(source.rawValue)
        c.add(destination.rawValue)
        c.add(UInt16(self.protocol.rawValue))
        c.add(UInt16(truncatingIfNeeded: length))
        return c
    }

    /// Whether `transport` (a whole TCP segment or UDP datagram) carries a valid checksum.
    @inlinable public func verifies(_ transport: ByteView) -> Bool {
        var c = checksum
        c.add(transport)
        return c.value == 0
    }
}

/// The value form of an IPv4 header.
public struct IPv4Header: Sendable, Hashable {
    public var dscp: UInt8 = 0
    public var ecn: UInt8 = 0
    /// The total length; `prepend(to:)` sets it from the payload.
    public var totalLength: Int = 20
    public var identification: UInt16 = 0
    public var reservedFlag = false
    public var dontFragment = false
    public var moreFragments = false
    /// In bytes; must be a multiple of 8.
    public var fragmentOffset: Int = 0
    public var timeToLive: UInt8 = 64
    public var `protocol`: IPProtocol
    public var source: IPv4Address
    public var destination: IPv4Address
    /// Raw option bytes; padded with zeros to a multiple of four on emit. At most 40 bytes.
    public var options: [UInt8] = []

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

    public var headerLength: Int { 20 + min(40, (options.count + 3) & ~3) }

    /// The pseudo-header for a transport payload of `length` bytes.
    public func pseudoHeader(length: Int) -> IPv4PseudoHeader {
        IPv4PseudoHeader(source: source, destination: destination, protocol: self.protocol, length: length)
    }

    /// Writes the header in front of `buffer`'s readable bytes (the payload), setting the total length
    /// from them and computing the header checksum.
    public func prepend(to buffer: inout ByteBuffer) {
        let headerLength = self.headerLength
        let total = headerLength + buffer.readableBytes
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
