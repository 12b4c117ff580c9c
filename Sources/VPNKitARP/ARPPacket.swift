public import NIOCore
public import VPNKitBase

/// ARP operation codes (RFC 826).
public struct ARPOperation: RawRepresentable, Sendable, Hashable {
    /// The operation code as on the wire.
    public var rawValue: UInt16
    /// Wraps any operation code; codes other than 1 and 2 are kept, not rejected.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// A request (1): "who has the target protocol address?"
    public static let request = ARPOperation(rawValue: 1)
    /// A reply (2): the sender addresses answer an earlier request.
    public static let reply = ARPOperation(rawValue: 2)
}

/// A validated view of an Ethernet/IPv4 ARP packet (hardware type 1, protocol 0x0800, lengths 6 and 4).
/// Other hardware or protocol kinds are rejected at construction: the stack speaks only this one.
public struct ARPPacket: Sendable {
    /// The packet's bytes, from the hardware type field; at least ``ARPPacket/length`` bytes long.
    public let bytes: ByteView
    /// The length in bytes of an Ethernet/IPv4 ARP packet.
    public static let length = 28

    /// Validates the readable bytes of `buffer` as a packet and throws the same errors as the `ByteView`
    /// initializer.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` as an Ethernet/IPv4 ARP packet; afterwards no accessor can trap.
    ///
    /// - Throws: `WireError.unsupported` for a hardware type other than 1, a protocol type other than 0x0800,
    ///   or address lengths other than 6 and 4; `WireError.truncated` when fewer than 28 bytes are present.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        let available = bytes.count
        guard available >= 8 else { throw .truncated(needed: 8, available: available) }
        let hardwareType = bytes.loadU16(at: 0)
        guard hardwareType == 1 else { throw .unsupported(field: "hardware type", value: Int(hardwareType)) }
        let protocolType = bytes.loadU16(at: 2)
        guard protocolType == 0x0800 else { throw .unsupported(field: "protocol type", value: Int(protocolType)) }
        let hardwareLength = bytes.loadU8(at: 4)
        guard hardwareLength == 6 else { throw .unsupported(field: "hardware length", value: Int(hardwareLength)) }
        let protocolLength = bytes.loadU8(at: 5)
        guard protocolLength == 4 else { throw .unsupported(field: "protocol length", value: Int(protocolLength)) }
        guard available >= 28 else { throw .truncated(needed: 28, available: available) }
        self.bytes = bytes
    }

    /// Whether this is a request or a reply.
    @inlinable public var operation: ARPOperation { ARPOperation(rawValue: bytes.loadU16(at: 6)) }
    /// The MAC address of the sender.
    @inlinable public var senderHardwareAddress: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 8)) }
    /// The IPv4 address of the sender.
    @inlinable public var senderProtocolAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 14)) }
    /// The MAC address of the target; usually all zeros in a request, where it is unknown.
    @inlinable public var targetHardwareAddress: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 18)) }
    /// The IPv4 address being asked about (request) or answered to (reply).
    @inlinable public var targetProtocolAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 24)) }
}

/// The value form of an Ethernet/IPv4 ARP packet.
public struct ARPHeader: Sendable, Hashable {
    /// Whether this is a request or a reply.
    public var operation: ARPOperation
    /// The MAC address of the sender.
    public var senderHardwareAddress: MACAddress
    /// The IPv4 address of the sender.
    public var senderProtocolAddress: IPv4Address
    /// The MAC address of the target; `MACAddress.zero` in a request.
    public var targetHardwareAddress: MACAddress
    /// The IPv4 address being asked about (request) or answered to (reply).
    public var targetProtocolAddress: IPv4Address

    /// Creates a packet from its variable fields; the fixed Ethernet/IPv4 type and length fields are written
    /// by `prepend(to:)`.
    public init(
        operation: ARPOperation, senderHardwareAddress: MACAddress, senderProtocolAddress: IPv4Address,
        targetHardwareAddress: MACAddress, targetProtocolAddress: IPv4Address
    ) {
        self.operation = operation
        self.senderHardwareAddress = senderHardwareAddress
        self.senderProtocolAddress = senderProtocolAddress
        self.targetHardwareAddress = targetHardwareAddress
        self.targetProtocolAddress = targetProtocolAddress
    }

    /// Copies the fields of a validated packet.
    public init(parsing packet: ARPPacket) {
        self.init(
            operation: packet.operation, senderHardwareAddress: packet.senderHardwareAddress,
            senderProtocolAddress: packet.senderProtocolAddress, targetHardwareAddress: packet.targetHardwareAddress,
            targetProtocolAddress: packet.targetProtocolAddress)
    }

    /// Writes the 28-byte packet in front of `buffer`'s readable bytes.
    public func prepend(to buffer: inout ByteBuffer) {
        buffer.withHeaderWriter(length: ARPPacket.length) { header in
            header.storeU16(1, at: 0)
            header.storeU16(0x0800, at: 2)
            header.storeU8(6, at: 4)
            header.storeU8(4, at: 5)
            header.storeU16(operation.rawValue, at: 6)
            header.storeU48(senderHardwareAddress.rawValue, at: 8)
            header.storeU32(senderProtocolAddress.rawValue, at: 14)
            header.storeU48(targetHardwareAddress.rawValue, at: 18)
            header.storeU32(targetProtocolAddress.rawValue, at: 24)
        }
    }
}
