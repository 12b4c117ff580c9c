public import NIOCore
public import VPNKitBase

/// ARP operation codes (RFC 826).
public struct ARPOperation: RawRepresentable, Sendable, Hashable {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let request = ARPOperation(rawValue: 1)
    public static let reply = ARPOperation(rawValue: 2)
}

/// A validated view of an Ethernet/IPv4 ARP packet (hardware type 1, protocol 0x0800, lengths 6 and 4).
/// Other hardware or protocol kinds are rejected at construction: the stack speaks only this one.
public struct ARPPacket: Sendable {
    public let bytes: ByteView
    public static let length = 28

    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

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

    @inlinable public var operation: ARPOperation { ARPOperation(rawValue: bytes.loadU16(at: 6)) }
    @inlinable public var senderHardwareAddress: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 8)) }
    @inlinable public var senderProtocolAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 14)) }
    @inlinable public var targetHardwareAddress: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 18)) }
    @inlinable public var targetProtocolAddress: IPv4Address { IPv4Address(rawValue: bytes.loadU32(at: 24)) }
}

/// The value form of an Ethernet/IPv4 ARP packet.
public struct ARPHeader: Sendable, Hashable {
    public var operation: ARPOperation
    public var senderHardwareAddress: MACAddress
    public var senderProtocolAddress: IPv4Address
    public var targetHardwareAddress: MACAddress
    public var targetProtocolAddress: IPv4Address

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
