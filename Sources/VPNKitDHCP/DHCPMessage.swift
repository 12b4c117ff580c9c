public import NIOCore
public import VPNKitBase

/// The fixed BOOTP fields' layout (RFC 2131 §2).
public enum BOOTP {
    public static let fixedLength = 236
    public static let magicCookie: UInt32 = 0x6382_5363
    /// Fixed part + cookie.
    public static let optionsOffset = 240
    /// RFC 951/1542: BOOTP messages are at least 300 bytes.
    public static let minimumMessageSize = 300
    public static let serverPort: UInt16 = 67
    public static let clientPort: UInt16 = 68
}

/// A validated view of a BOOTP/DHCP message (the UDP payload). Construction checks the fixed 236-byte
/// part; options are parsed on demand by `DHCPMessage(parsing:)`.
public struct DHCPPacket: Sendable {
    public let bytes: ByteView

    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        guard bytes.count >= BOOTP.fixedLength else {
            throw .truncated(needed: BOOTP.fixedLength, available: bytes.count)
        }
        self.bytes = bytes
    }

    @inlinable public var op: UInt8 { bytes.loadU8(at: 0) }
    @inlinable public var hardwareType: UInt8 { bytes.loadU8(at: 1) }
    @inlinable public var hardwareLength: UInt8 { bytes.loadU8(at: 2) }
    @inlinable public var hops: UInt8 { bytes.loadU8(at: 3) }
    @inlinable public var transactionID: UInt32 { bytes.loadU32(at: 4) }
    @inlinable public var seconds: UInt16 { bytes.loadU16(at: 8) }
    @inlinable public var flags: UInt16 { bytes.loadU16(at: 10) }
    @inlinable public var broadcastFlag: Bool { flags & 0x8000 != 0 }
    @inlinable public var clientAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 12)) }
    @inlinable public var yourAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 16)) }
    @inlinable public var serverAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 20)) }
    @inlinable public var relayAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 24)) }
    /// The first six bytes of chaddr (Ethernet).
    @inlinable public var clientHardwareAddress: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 28)) }
    @inlinable public var hasMagicCookie: Bool {
        bytes.count >= BOOTP.optionsOffset && bytes.loadU32(at: 236) == BOOTP.magicCookie
    }
}

/// The value form of a BOOTP/DHCP message: fixed fields, the sname and file areas kept raw, the
/// options area as instances in wire order, and whatever followed the END option, so that a parsed
/// message re-encodes byte for byte.
public struct DHCPMessage: Sendable, Hashable {
    public static let bootRequest: UInt8 = 1
    public static let bootReply: UInt8 = 2

    public var op: UInt8
    public var hardwareType: UInt8 = 1
    public var hardwareLength: UInt8 = 6
    public var hops: UInt8 = 0
    public var transactionID: UInt32
    public var seconds: UInt16 = 0
    public var flags: UInt16 = 0
    public var clientAddress: IPv4Address = .any
    public var yourAddress: IPv4Address = .any
    public var serverAddress: IPv4Address = .any
    public var relayAddress: IPv4Address = .any
    /// chaddr: 16 bytes.
    public var clientHardwareBytes: [UInt8] = Array(repeating: 0, count: 16)
    /// sname: 64 bytes.
    public var serverName: [UInt8] = Array(repeating: 0, count: 64)
    /// file: 128 bytes.
    public var bootFile: [UInt8] = Array(repeating: 0, count: 128)
    /// False for a plain BOOTP message without the DHCP magic cookie (and so without options).
    public var hasMagicCookie = true
    /// The options area (not those overloaded into sname/file; see `allOptions`).
    public var options = DHCPOptions()
    /// Whether an END option closes the options area.
    public var hasEndOption = true
    /// Bytes after the END option (normally zero padding).
    public var trailer: [UInt8] = []

    public init(op: UInt8, transactionID: UInt32, clientHardwareAddress: MACAddress) {
        self.op = op
        self.transactionID = transactionID
        self.clientHardwareAddress = clientHardwareAddress
    }

    public var clientHardwareAddress: MACAddress {
        get {
            MACAddress(rawValue: clientHardwareBytes.prefix(6).reduce(0) { $0 << 8 | UInt64($1) })
        }
        set {
            clientHardwareBytes = newValue.bytes + Array(repeating: 0, count: 10)
        }
    }

    public var broadcastFlag: Bool {
        get { flags & 0x8000 != 0 }
        set { flags = newValue ? flags | 0x8000 : flags & 0x7FFF }
    }

    /// Parses a message; throws on a malformed options area.
    public init(parsing packet: DHCPPacket) throws(WireError) {
        let bytes = packet.bytes.array
        self.op = packet.op
        self.hardwareType = packet.hardwareType
        self.hardwareLength = packet.hardwareLength
        self.hops = packet.hops
        self.transactionID = packet.transactionID
        self.seconds = packet.seconds
        self.flags = packet.flags
        self.clientAddress = packet.clientAddress
        self.yourAddress = packet.yourAddress
        self.serverAddress = packet.serverAddress
        self.relayAddress = packet.relayAddress
        self.clientHardwareBytes = Array(bytes[28..<44])
        self.serverName = Array(bytes[44..<108])
        self.bootFile = Array(bytes[108..<236])
        guard packet.hasMagicCookie else {
            self.hasMagicCookie = false
            self.hasEndOption = false
            self.trailer = Array(bytes[236...])
            return
        }
        let (options, sawEnd, trailer) = try DHCPOptions.parse(bytes[BOOTP.optionsOffset...])
        self.options = options
        self.hasEndOption = sawEnd
        self.trailer = trailer
    }

    /// All options with RFC 2131 overload applied: the options area, then `file`, then `sname` when
    /// option 52 says they hold options. Throws when an overloaded area is malformed.
    public func allOptions() throws(WireError) -> DHCPOptions {
        guard let overload = options.overload, overload & 3 != 0 else { return options }
        var merged = options
        if overload & 1 != 0 { merged.instances += try DHCPOptions.parse(bootFile[...]).options.instances }
        if overload & 2 != 0 { merged.instances += try DHCPOptions.parse(serverName[...]).options.instances }
        return merged
    }

    /// The encoded length in bytes.
    public var encodedLength: Int {
        guard hasMagicCookie else { return BOOTP.fixedLength + trailer.count }
        return BOOTP.optionsOffset + options.encoded(end: hasEndOption).count + trailer.count
    }

    /// Pads with zeros after the END option so the message is at least `size` bytes (default: the
    /// BOOTP minimum of 300).
    public mutating func padToMinimumSize(_ size: Int = BOOTP.minimumMessageSize) {
        let missing = size - encodedLength
        if missing > 0 { trailer += Array(repeating: 0, count: missing) }
    }

    /// Appends the encoded message at `buffer`'s writer index.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(op)
        buffer.writeInteger(hardwareType)
        buffer.writeInteger(hardwareLength)
        buffer.writeInteger(hops)
        buffer.writeInteger(transactionID)
        buffer.writeInteger(seconds)
        buffer.writeInteger(flags)
        for address in [clientAddress, yourAddress, serverAddress, relayAddress] { buffer.writeInteger(address.rawValue) }
        buffer.writeBytes(Self.fitted(clientHardwareBytes, 16))
        buffer.writeBytes(Self.fitted(serverName, 64))
        buffer.writeBytes(Self.fitted(bootFile, 128))
        if hasMagicCookie {
            buffer.writeInteger(BOOTP.magicCookie)
            buffer.writeBytes(options.encoded(end: hasEndOption))
        }
        buffer.writeBytes(trailer)
    }

    private static func fitted(_ bytes: [UInt8], _ count: Int) -> [UInt8] {
        bytes.count == count ? bytes : Array(bytes.prefix(count)) + Array(repeating: 0, count: max(0, count - bytes.count))
    }
}
