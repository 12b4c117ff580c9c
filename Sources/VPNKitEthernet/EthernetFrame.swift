public import NIOCore
public import VPNKitBase

/// A validated view of an Ethernet II frame (no FCS), optionally 802.1Q-tagged.
///
/// Construction checks that the header (14 bytes, 18 with a tag) is present; after that no accessor
/// can trap. The payload is a slice sharing the frame's storage.
public struct EthernetFrame: Sendable {
    /// The whole frame, from the first byte of the destination address.
    public let bytes: ByteView
    /// 14, or 18 when an 802.1Q tag is present.
    public let headerLength: Int

    /// Validates `bytes` as a frame.
    ///
    /// - Throws: `WireError.truncated` when fewer than 14 bytes are present, or fewer than 18 when the
    ///   EtherType announces an 802.1Q tag.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        let available = bytes.count
        guard available >= 14 else { throw .truncated(needed: 14, available: available) }
        if bytes.loadU16(at: 12) == 0x8100 {
            guard available >= 18 else { throw .truncated(needed: 18, available: available) }
            self.headerLength = 18
        } else {
            self.headerLength = 14
        }
        self.bytes = bytes
    }

    /// Validates the readable bytes of `buffer` as a frame.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// The destination MAC address (bytes 0–5).
    @inlinable public var destination: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 0)) }
    /// The source MAC address (bytes 6–11).
    @inlinable public var source: MACAddress { MACAddress(rawValue: bytes.loadU48(at: 6)) }
    /// The EtherType of the payload (the inner one when tagged).
    @inlinable public var etherType: EtherType { EtherType(rawValue: bytes.loadU16(at: headerLength - 2)) }
    /// The 802.1Q tag, when present.
    @inlinable public var vlan: VLANTag? {
        headerLength == 18 ? VLANTag(controlInformation: bytes.loadU16(at: 14)) : nil
    }
    /// The bytes after the header (including any padding up to the 60-byte minimum).
    @inlinable public var payload: ByteView { bytes.view(from: headerLength) }
}

/// The value form of an Ethernet II header.
public struct EthernetHeader: Sendable, Hashable {
    /// The MAC address the frame is sent to.
    public var destination: MACAddress
    /// The MAC address of the sender.
    public var source: MACAddress
    /// The type of the payload; when `vlan` is set this is the inner type, written after the tag.
    public var etherType: EtherType
    /// The 802.1Q tag to write, or nil for an untagged frame.
    public var vlan: VLANTag?

    /// Creates a header; it is untagged unless `vlan` is given.
    public init(destination: MACAddress, source: MACAddress, etherType: EtherType, vlan: VLANTag? = nil) {
        self.destination = destination
        self.source = source
        self.etherType = etherType
        self.vlan = vlan
    }

    /// Copies the fields of a validated frame, including its VLAN tag.
    public init(parsing frame: EthernetFrame) {
        self.init(destination: frame.destination, source: frame.source, etherType: frame.etherType, vlan: frame.vlan)
    }

    /// The number of bytes `prepend(to:)` writes: 14, or 18 with a VLAN tag.
    public var headerLength: Int { vlan == nil ? 14 : 18 }

    /// Writes the header in front of `buffer`'s readable bytes (in place when it has headroom).
    public func prepend(to buffer: inout ByteBuffer) {
        buffer.withHeaderWriter(length: headerLength) { header in
            header.storeU48(destination.rawValue, at: 0)
            header.storeU48(source.rawValue, at: 6)
            if let vlan {
                header.storeU16(EtherType.vlan.rawValue, at: 12)
                header.storeU16(vlan.controlInformation, at: 14)
                header.storeU16(etherType.rawValue, at: 16)
            } else {
                header.storeU16(etherType.rawValue, at: 12)
            }
        }
    }
}
