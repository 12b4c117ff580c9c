public import VPNKitBase

/// The fixed 12-byte message header's identifier and flags (RFC 1035 §4.1.1). The four section
/// counts are not stored: a parsed `DNSMessage` has the sections themselves, and encoding writes
/// their sizes.
public struct DNSHeader: Sendable, Hashable {
    /// Bytes in the wire header.
    public static let length = 12

    /// The transaction identifier.
    public var id: UInt16
    /// QR: a response rather than a query.
    public var isResponse: Bool
    /// The kind of query (QUERY for ordinary lookups).
    public var opcode: DNSOpcode
    /// AA: the answer comes from an authority for the name.
    public var isAuthoritative: Bool
    /// TC: the message was truncated to fit the transport.
    public var isTruncated: Bool
    /// RD: the client asks for recursion.
    public var recursionDesired: Bool
    /// RA: the server offers recursion.
    public var recursionAvailable: Bool
    /// AD (RFC 4035).
    public var authenticData: Bool
    /// CD (RFC 4035).
    public var checkingDisabled: Bool
    /// RCODE: the outcome of a response.
    public var responseCode: DNSResponseCode

    /// A header with the given id and flags word.
    public init(id: UInt16 = 0, flags: UInt16 = 0) {
        self.id = id
        self.isResponse = false
        self.opcode = .query
        self.isAuthoritative = false
        self.isTruncated = false
        self.recursionDesired = false
        self.recursionAvailable = false
        self.authenticData = false
        self.checkingDisabled = false
        self.responseCode = .noError
        self.flags = flags
    }

    /// Reads the id and flags of the header at the start of `message`; throws if it has fewer than
    /// 12 bytes.
    public init(parsing message: ByteView) throws(DNSError) {
        guard message.count >= Self.length else {
            throw .truncated(offset: 0, needed: Self.length, available: message.count)
        }
        self.init(id: message.loadU16(at: 0), flags: message.loadU16(at: 2))
    }

    /// The second 16-bit word of the header. The Z bit is always written as zero.
    public var flags: UInt16 {
        get {
            var value = UInt16(opcode.rawValue) << 11 | UInt16(responseCode.rawValue)
            if isResponse { value |= 0x8000 }
            if isAuthoritative { value |= 0x0400 }
            if isTruncated { value |= 0x0200 }
            if recursionDesired { value |= 0x0100 }
            if recursionAvailable { value |= 0x0080 }
            if authenticData { value |= 0x0020 }
            if checkingDisabled { value |= 0x0010 }
            return value
        }
        set {
            isResponse = newValue & 0x8000 != 0
            opcode = DNSOpcode(rawValue: UInt8(truncatingIfNeeded: newValue >> 11))
            isAuthoritative = newValue & 0x0400 != 0
            isTruncated = newValue & 0x0200 != 0
            recursionDesired = newValue & 0x0100 != 0
            recursionAvailable = newValue & 0x0080 != 0
            authenticData = newValue & 0x0020 != 0
            checkingDisabled = newValue & 0x0010 != 0
            responseCode = DNSResponseCode(rawValue: UInt8(truncatingIfNeeded: newValue))
        }
    }
}
