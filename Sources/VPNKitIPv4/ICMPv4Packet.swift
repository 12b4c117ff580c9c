public import NIOCore
public import VPNKitBase

/// ICMPv4 message types used by the stack (others are carried as raw values).
public struct ICMPv4Type: RawRepresentable, Sendable, Hashable {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let echoReply = ICMPv4Type(rawValue: 0)
    public static let destinationUnreachable = ICMPv4Type(rawValue: 3)
    public static let redirect = ICMPv4Type(rawValue: 5)
    public static let echoRequest = ICMPv4Type(rawValue: 8)
    public static let timeExceeded = ICMPv4Type(rawValue: 11)
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
    public let bytes: ByteView
    public static let headerLength = 8

    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        guard bytes.count >= 8 else { throw .truncated(needed: 8, available: bytes.count) }
        self.bytes = bytes
    }

    @inlinable public var type: ICMPv4Type { ICMPv4Type(rawValue: bytes.loadU8(at: 0)) }
    @inlinable public var code: UInt8 { bytes.loadU8(at: 1) }
    @inlinable public var checksum: UInt16 { bytes.loadU16(at: 2) }
    /// The second 32-bit word (identifier/sequence, unused + next-hop MTU, pointer…).
    @inlinable public var restOfHeader: UInt32 { bytes.loadU32(at: 4) }
    @inlinable public var identifier: UInt16 { bytes.loadU16(at: 4) }
    @inlinable public var sequenceNumber: UInt16 { bytes.loadU16(at: 6) }
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
    public var type: ICMPv4Type
    public var code: UInt8
    public var restOfHeader: UInt32

    public init(type: ICMPv4Type, code: UInt8 = 0, restOfHeader: UInt32 = 0) {
        self.type = type
        self.code = code
        self.restOfHeader = restOfHeader
    }

    /// An echo request or reply.
    public static func echo(reply: Bool, identifier: UInt16, sequenceNumber: UInt16) -> ICMPv4Header {
        ICMPv4Header(type: reply ? .echoReply : .echoRequest, restOfHeader: UInt32(identifier) << 16 | UInt32(sequenceNumber))
    }

    public init(parsing packet: ICMPv4Packet) {
        self.init(type: packet.type, code: packet.code, restOfHeader: packet.restOfHeader)
    }

    public var identifier: UInt16 { UInt16(truncatingIfNeeded: restOfHeader >> 16) }
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
