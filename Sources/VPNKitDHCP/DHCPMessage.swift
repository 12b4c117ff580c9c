public import NIOCore
public import VPNKitBase

/// The fixed BOOTP fields' layout (RFC 2131 §2).
public enum BOOTP {
    /// Length in bytes of the fixed BOOTP fields (`op` through `file`) that precede the magic cookie.
    public static let fixedLength = 236
    /// The four bytes 99.130.83.99 that follow the fixed fields and announce a DHCP options area (RFC 2131 §3).
    public static let magicCookie: UInt32 = 0x6382_5363
    /// Fixed part + cookie.
    public static let optionsOffset = 240
    /// RFC 951/1542: BOOTP messages are at least 300 bytes.
    public static let minimumMessageSize = 300
    /// The UDP port servers and relay agents listen on: 67.
    public static let serverPort: UInt16 = 67
    /// The UDP port clients listen on: 68.
    public static let clientPort: UInt16 = 68
}

/// A validated view of a BOOTP/DHCP message (the UDP payload). Construction checks the fixed 236-byte
/// part; options are parsed on demand by `DHCPMessage(parsing:)`.
public struct DHCPPacket: Sendable {
    /// The whole message (the UDP payload), at least `BOOTP.fixedLength` bytes long.
    public let bytes: ByteView

    /// Wraps the readable bytes of `buffer` without copying them.
    ///
    /// Throws `WireError.truncated` when fewer than 236 bytes are readable; nothing else is checked here.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Wraps `bytes` without copying them.
    ///
    /// Throws `WireError.truncated` when fewer than 236 bytes are there; nothing else is checked here.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        guard bytes.count >= BOOTP.fixedLength else {
            throw .truncated(needed: BOOTP.fixedLength, available: bytes.count)
        }
        self.bytes = bytes
    }

    /// The `op` field: 1 (`DHCPMessage.bootRequest`) from a client, 2 (`DHCPMessage.bootReply`) from a server.
    @inlinable public var op: UInt8 { bytes.loadU8(at: 0) }
    /// The `htype` field: the ARP hardware type of the link, 1 for Ethernet.
    @inlinable public var hardwareType: UInt8 { bytes.loadU8(at: 1) }
    /// The `hlen` field: the length of the client's hardware address in bytes, 6 for Ethernet.
    @inlinable public var hardwareLength: UInt8 { bytes.loadU8(at: 2) }
    /// The `hops` field: 0 from a client; each relay agent adds one.
    @inlinable public var hops: UInt8 { bytes.loadU8(at: 3) }
    /// The `xid` field: a number the client picks and servers copy, to match replies to requests.
    @inlinable public var transactionID: UInt32 { bytes.loadU32(at: 4) }
    /// The `secs` field: seconds since the client began acquiring or renewing its address.
    @inlinable public var seconds: UInt16 { bytes.loadU16(at: 8) }
    /// The `flags` field; only its top bit (see `broadcastFlag`) is defined.
    @inlinable public var flags: UInt16 { bytes.loadU16(at: 10) }
    /// Whether the client asks for broadcast replies (the top bit of `flags`): it cannot take unicast
    /// before it has an address.
    @inlinable public var broadcastFlag: Bool { flags & 0x8000 != 0 }
    /// The `ciaddr` field: the client's address while it is bound, renewing or rebinding; 0.0.0.0 otherwise.
    @inlinable public var clientAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 12)) }
    /// The `yiaddr` field: the address a server offers or assigns to the client.
    @inlinable public var yourAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 16)) }
    /// The `siaddr` field: the next server of a network boot. The DHCP server's own identity is option 54.
    @inlinable public var serverAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 20)) }
    /// The `giaddr` field: the relay agent's address, or 0.0.0.0 for a message that was not relayed.
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
    /// The `op` value of a message from a client to a server.
    public static let bootRequest: UInt8 = 1
    /// The `op` value of a message from a server to a client.
    public static let bootReply: UInt8 = 2

    /// The `op` field: `bootRequest` or `bootReply`.
    public var op: UInt8
    /// The `htype` field; default 1 (Ethernet).
    public var hardwareType: UInt8 = 1
    /// The `hlen` field; default 6, the length of a MAC address.
    public var hardwareLength: UInt8 = 6
    /// The `hops` field; default 0. Relay agents increase it.
    public var hops: UInt8 = 0
    /// The `xid` field, picked by the client and copied into replies.
    public var transactionID: UInt32
    /// The `secs` field: seconds since the client started acquiring or renewing its address; default 0.
    public var seconds: UInt16 = 0
    /// The `flags` field; default 0. `broadcastFlag` reads and writes its only defined bit.
    public var flags: UInt16 = 0
    /// The `ciaddr` field: the client's address while it has one; default 0.0.0.0.
    public var clientAddress: IPv4Address = .any
    /// The `yiaddr` field: the address a server offers or assigns; default 0.0.0.0.
    public var yourAddress: IPv4Address = .any
    /// The `siaddr` field (next server of a network boot); default 0.0.0.0.
    public var serverAddress: IPv4Address = .any
    /// The `giaddr` field: the relay agent's address; default 0.0.0.0 (not relayed).
    public var relayAddress: IPv4Address = .any
    /// The raw 16-byte `chaddr` field. `write(to:)` pads a shorter array with zeros and cuts a longer one.
    public var clientHardwareBytes: [UInt8] = Array(repeating: 0, count: 16)
    /// The raw 64-byte `sname` field: a server host name, or more options when `overload` says so.
    /// Written padded or cut to 64 bytes.
    public var serverName: [UInt8] = Array(repeating: 0, count: 64)
    /// The raw 128-byte `file` field: a boot file name, or more options when `overload` says so. Written
    /// padded or cut to 128 bytes.
    public var bootFile: [UInt8] = Array(repeating: 0, count: 128)
    /// False for a plain BOOTP message without the DHCP magic cookie (and so without options).
    public var hasMagicCookie = true
    /// The options area (not those overloaded into sname/file; see `allOptions`).
    public var options = DHCPOptions()
    /// Whether an END option closes the options area.
    public var hasEndOption = true
    /// Bytes after the END option (normally zero padding).
    public var trailer: [UInt8] = []

    /// Creates a DHCP message with the given header fields, the other fixed fields at their defaults, the
    /// magic cookie, no options and an END option.
    ///
    /// Call `padToMinimumSize(_:)` before sending: BOOTP messages must be at least 300 bytes.
    public init(op: UInt8, transactionID: UInt32, clientHardwareAddress: MACAddress) {
        self.op = op
        self.transactionID = transactionID
        self.clientHardwareAddress = clientHardwareAddress
    }

    /// The first six bytes of `chaddr` as a MAC address. Setting it rewrites all 16 bytes: the address,
    /// then ten zeros.
    public var clientHardwareAddress: MACAddress {
        get {
            MACAddress(rawValue: clientHardwareBytes.prefix(6).reduce(0) { $0 << 8 | UInt64($1) })
        }
        set {
            clientHardwareBytes = newValue.bytes + Array(repeating: 0, count: 10)
        }
    }

    /// The broadcast bit (0x8000) of `flags`. Setting it leaves the other bits unchanged.
    public var broadcastFlag: Bool {
        get { flags & 0x8000 != 0 }
        set { flags = newValue ? flags | 0x8000 : flags & 0x7FFF }
    }

    /// Parses a message into its value form. A message without the magic cookie is plain BOOTP: no
    /// options, and everything after the fixed fields goes to `trailer`.
    ///
    /// Throws `WireError.malformedOption` when an option's length runs past the end of the message.
    /// Options overloaded into `sname` and `file` are parsed later, by `allOptions()`.
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
