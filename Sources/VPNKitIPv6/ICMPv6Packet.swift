// ICMPv6 (RFC 4443) and the message types of neighbour discovery (RFC 4861) and MLD (RFC 3810):
// a view checked once and a value written in place, its checksum over the IPv6 pseudo-header.

public import NIOCore
public import VPNKitBase

/// ICMPv6 message types (others are carried as raw values).
public struct ICMPv6Type: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The type number as on the wire.
    public var rawValue: UInt8
    /// Wraps any type number; types without a named constant are kept, not rejected.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Destination unreachable (1); the code says why (4 port unreachable, 1 prohibited, 3 address).
    public static let destinationUnreachable = ICMPv6Type(rawValue: 1)
    /// Packet too big (2): the rest-of-header word is the MTU of the next link.
    public static let packetTooBig = ICMPv6Type(rawValue: 2)
    /// Time exceeded (3): hop limit (code 0) or fragment reassembly (code 1).
    public static let timeExceeded = ICMPv6Type(rawValue: 3)
    /// Parameter problem (4): the rest-of-header word points at the offending byte.
    public static let parameterProblem = ICMPv6Type(rawValue: 4)
    /// Echo request (128).
    public static let echoRequest = ICMPv6Type(rawValue: 128)
    /// Echo reply (129).
    public static let echoReply = ICMPv6Type(rawValue: 129)
    /// Multicast listener query (130).
    public static let multicastListenerQuery = ICMPv6Type(rawValue: 130)
    /// MLDv1 report (131).
    public static let multicastListenerReport = ICMPv6Type(rawValue: 131)
    /// MLDv1 done (132).
    public static let multicastListenerDone = ICMPv6Type(rawValue: 132)
    /// Router solicitation (133).
    public static let routerSolicitation = ICMPv6Type(rawValue: 133)
    /// Router advertisement (134).
    public static let routerAdvertisement = ICMPv6Type(rawValue: 134)
    /// Neighbour solicitation (135).
    public static let neighborSolicitation = ICMPv6Type(rawValue: 135)
    /// Neighbour advertisement (136).
    public static let neighborAdvertisement = ICMPv6Type(rawValue: 136)
    /// Redirect (137); a host ignores them from us, and we ignore them from a guest.
    public static let redirect = ICMPv6Type(rawValue: 137)
    /// MLDv2 report (143).
    public static let multicastListenerReportV2 = ICMPv6Type(rawValue: 143)

    /// Error messages have types below 128 (RFC 4443 §2.1); they are never answered with an error.
    public var isError: Bool { rawValue < 128 }

    /// Whether the second 32-bit word is an identifier and a sequence number (echo request and reply).
    public var hasIdentifierAndSequence: Bool { rawValue == 128 || rawValue == 129 }

    /// The message's name, such as `echo request`, or `type N`.
    public var description: String {
        switch rawValue {
        case 1: return "destination unreachable"
        case 2: return "packet too big"
        case 3: return "time exceeded"
        case 4: return "parameter problem"
        case 128: return "echo request"
        case 129: return "echo reply"
        case 130: return "multicast listener query"
        case 131, 143: return "multicast listener report"
        case 132: return "multicast listener done"
        case 133: return "router solicitation"
        case 134: return "router advertisement"
        case 135: return "neighbor solicitation"
        case 136: return "neighbor advertisement"
        case 137: return "redirect"
        default: return "type \(rawValue)"
        }
    }
}

/// A validated view of an ICMPv6 message (a 4-byte type, code and checksum, a 4-byte word whose
/// meaning depends on the type, then the body).
public struct ICMPv6Packet: Sendable {
    /// The whole message; at least 8 bytes.
    public let bytes: ByteView

    /// Validates the readable bytes of `buffer` as a message.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` as a message; afterwards no accessor can trap. The checksum is not checked
    /// here: ask `isChecksumValid(source:destination:)`.
    ///
    /// - Throws: `WireError.truncated` when fewer than 8 bytes are present.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        guard bytes.count >= 8 else { throw .truncated(needed: 8, available: bytes.count) }
        self.bytes = bytes
    }

    /// The message type.
    @inlinable public var type: ICMPv6Type { ICMPv6Type(rawValue: bytes.loadU8(at: 0)) }
    /// The subtype within `type`.
    @inlinable public var code: UInt8 { bytes.loadU8(at: 1) }
    /// The checksum field as received.
    @inlinable public var checksum: UInt16 { bytes.loadU16(at: 2) }
    /// The second 32-bit word: identifier and sequence (echo), MTU (packet too big), pointer
    /// (parameter problem), flags (neighbour advertisement), unused otherwise.
    @inlinable public var restOfHeader: UInt32 { bytes.loadU32(at: 4) }
    /// The identifier of an echo message.
    @inlinable public var identifier: UInt16 { bytes.loadU16(at: 4) }
    /// The sequence number of an echo message.
    @inlinable public var sequenceNumber: UInt16 { bytes.loadU16(at: 6) }
    /// The bytes after the first 8: echo data, the invoking packet of an error, or the rest of a
    /// neighbour discovery message.
    @inlinable public var body: ByteView { bytes.view(from: 8) }

    /// Whether the checksum over the message and the IPv6 pseudo-header verifies (RFC 4443 §2.3).
    @inlinable
    public func isChecksumValid(source: IPv6Address, destination: IPv6Address) -> Bool {
        IPPseudoHeader(source: .v6(source), destination: .v6(destination), protocol: .icmpv6, length: bytes.count).verifies(bytes)
    }
}

/// The value form of an ICMPv6 header.
public struct ICMPv6Header: Sendable, Hashable {
    /// The message type.
    public var type: ICMPv6Type
    /// The subtype within `type`.
    public var code: UInt8
    /// The second 32-bit word (see `ICMPv6Packet.restOfHeader`).
    public var restOfHeader: UInt32

    /// Creates a header; `code` and `restOfHeader` default to 0.
    public init(type: ICMPv6Type, code: UInt8 = 0, restOfHeader: UInt32 = 0) {
        self.type = type
        self.code = code
        self.restOfHeader = restOfHeader
    }

    /// Copies the type, code and second word of a validated message.
    public init(parsing packet: ICMPv6Packet) {
        self.init(type: packet.type, code: packet.code, restOfHeader: packet.restOfHeader)
    }

    /// An echo request or reply.
    public static func echo(reply: Bool, identifier: UInt16, sequenceNumber: UInt16) -> ICMPv6Header {
        ICMPv6Header(type: reply ? .echoReply : .echoRequest, restOfHeader: UInt32(identifier) << 16 | UInt32(sequenceNumber))
    }

    /// Writes the header in front of `buffer`'s readable bytes (the body) and computes the checksum
    /// over the pseudo-header of `source` → `destination`, header and body.
    public func prepend(to buffer: inout ByteBuffer, source: IPv6Address, destination: IPv6Address) {
        let length = buffer.readableBytes + 8
        let pseudo = IPPseudoHeader(source: .v6(source), destination: .v6(destination), protocol: .icmpv6, length: length)
        buffer.withHeaderWriter(length: 8) { header in
            header.storeU8(type.rawValue, at: 0)
            header.storeU8(code, at: 1)
            header.storeU32(restOfHeader, at: 4)
            var sum = pseudo.checksum
            header.add(to: &sum)
            header.storeU16(sum.value, at: 2)
        }
    }
}
