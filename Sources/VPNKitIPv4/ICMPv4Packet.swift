public import NIOCore
public import VPNKitBase

/// ICMPv4 message types used by the stack (others are carried as raw values).
public struct ICMPv4Type: RawRepresentable, Sendable, Hashable {
    /// The type number as on the wire.
    public var rawValue: UInt8
    /// Wraps any type number; types without a named constant are kept, not rejected.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Echo reply (0), the answer to a ping.
    public static let echoReply = ICMPv4Type(rawValue: 0)
    /// Destination unreachable (3); the code says why (port, host, fragmentation needed…).
    public static let destinationUnreachable = ICMPv4Type(rawValue: 3)
    /// Redirect (5): a router suggests a better first hop.
    public static let redirect = ICMPv4Type(rawValue: 5)
    /// Echo request (8), a ping.
    public static let echoRequest = ICMPv4Type(rawValue: 8)
    /// Time exceeded (11): the TTL reached zero in transit (code 0) or reassembly timed out (code 1).
    public static let timeExceeded = ICMPv4Type(rawValue: 11)
    /// Parameter problem (12): a header field is invalid; the rest-of-header word points at it.
    public static let parameterProblem = ICMPv4Type(rawValue: 12)

    /// Types whose second word is an identifier and a sequence number (echo, timestamp,
    /// information and address-mask request/reply).
    public var hasIdentifierAndSequence: Bool {
        switch rawValue {
        case 0, 8, 13, 14, 15, 16, 17, 18: return true
        default: return false
        }
    }

    /// Error messages (which quote the offending datagram and must never be answered with an error).
    public var isError: Bool {
        switch rawValue {
        case 3, 4, 5, 11, 12: return true
        default: return false
        }
    }
}

/// A validated view of an ICMPv4 message (8-byte header plus data).
public struct ICMPv4Packet: Sendable {
    /// The whole message, header and data; at least ``ICMPv4Packet/headerLength`` bytes long.
    public let bytes: ByteView
    /// The length in bytes of the fixed ICMP header: type, code, checksum and one 32-bit word.
    public static let headerLength = 8

    /// Validates the readable bytes of `buffer` as a message.
    ///
    /// - Throws: `WireError.truncated` when fewer than 8 bytes are present.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` as a message; afterwards no accessor can trap. The checksum is not verified here:
    /// ask `isChecksumValid`.
    ///
    /// - Throws: `WireError.truncated` when fewer than 8 bytes are present.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        guard bytes.count >= 8 else { throw .truncated(needed: 8, available: bytes.count) }
        self.bytes = bytes
    }

    /// The message type (byte 0).
    @inlinable public var type: ICMPv4Type { ICMPv4Type(rawValue: bytes.loadU8(at: 0)) }
    /// The subtype within `type` (byte 1), such as 3 (port unreachable) for destination unreachable.
    @inlinable public var code: UInt8 { bytes.loadU8(at: 1) }
    /// The checksum field as received; see `isChecksumValid`.
    @inlinable public var checksum: UInt16 { bytes.loadU16(at: 2) }
    /// The second 32-bit word (identifier/sequence, unused + next-hop MTU, pointer…).
    @inlinable public var restOfHeader: UInt32 { bytes.loadU32(at: 4) }
    /// The identifier of an echo-style message (the high half of `restOfHeader`); meaningless for other
    /// types.
    @inlinable public var identifier: UInt16 { bytes.loadU16(at: 4) }
    /// The sequence number of an echo-style message (the low half of `restOfHeader`); meaningless for other
    /// types.
    @inlinable public var sequenceNumber: UInt16 { bytes.loadU16(at: 6) }
    /// The data after the 8-byte header: echo data, or the quoted datagram of an error message.
    @inlinable public var payload: ByteView { bytes.view(from: 8) }
    /// Whether the checksum over the whole message verifies.
    @inlinable public var isChecksumValid: Bool {
        var c = InternetChecksum()
        c.add(bytes)
        return c.value == 0
    }
}

/// The value form of an ICMPv4 header.
public struct ICMPv4Header: Sendable, Hashable {
    /// The message type.
    public var type: ICMPv4Type
    /// The subtype within `type`.
    public var code: UInt8
    /// The second 32-bit word, whose meaning depends on the type (identifier and sequence number, next-hop
    /// MTU, pointer…).
    public var restOfHeader: UInt32

    /// Creates a header; `code` and `restOfHeader` default to 0.
    public init(type: ICMPv4Type, code: UInt8 = 0, restOfHeader: UInt32 = 0) {
        self.type = type
        self.code = code
        self.restOfHeader = restOfHeader
    }

    /// An echo request or reply.
    public static func echo(reply: Bool, identifier: UInt16, sequenceNumber: UInt16) -> ICMPv4Header {
        ICMPv4Header(type: reply ? .echoReply : .echoRequest, restOfHeader: UInt32(identifier) << 16 | UInt32(sequenceNumber))
    }

    /// Copies the type, code and rest-of-header word of a validated message (not its checksum, which
    /// `prepend(to:)` recomputes).
    public init(parsing packet: ICMPv4Packet) {
        self.init(type: packet.type, code: packet.code, restOfHeader: packet.restOfHeader)
    }

    /// The high 16 bits of `restOfHeader`: the identifier of an echo-style message.
    public var identifier: UInt16 { UInt16(truncatingIfNeeded: restOfHeader >> 16) }
    /// The low 16 bits of `restOfHeader`: the sequence number of an echo-style message.
    public var sequenceNumber: UInt16 { UInt16(truncatingIfNeeded: restOfHeader) }

    /// Writes the header in front of `buffer`'s readable bytes (the message data) and computes the
    /// checksum over header and data.
    public func prepend(to buffer: inout ByteBuffer) {
        buffer.withHeaderWriter(length: 8) { header in
            header.storeU8(type.rawValue, at: 0)
            header.storeU8(code, at: 1)
            header.storeU32(restOfHeader, at: 4)
            header.storeU16(~header.sum16(), at: 2)
        }
    }
}
