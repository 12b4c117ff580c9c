public import NIOCore
public import VPNKitBase

/// A validated view of a UDP datagram. The length field must be at least 8 and fit in the buffer;
/// `payload` ends where the length field says.
public struct UDPDatagram: Sendable {
    /// From the source-port byte; may extend past `length` if the IP payload was longer.
    public let bytes: ByteView
    /// The length field (header + data).
    public let length: Int
    /// The length in bytes of the UDP header.
    public static let headerLength = 8

    /// Validates the readable bytes of `buffer` as a datagram and throws the same errors as the `ByteView`
    /// initializer.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` (the IP payload) as a datagram; afterwards no accessor can trap. The checksum is not
    /// verified here: ask `isChecksumValid(_:)`.
    ///
    /// - Throws: `WireError.truncated` for fewer than 8 bytes, `WireError.lengthTooSmall` for a length field
    ///   below 8, and `WireError.lengthExceedsBuffer` for a length field larger than the bytes given.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        let available = bytes.count
        guard available >= 8 else { throw .truncated(needed: 8, available: available) }
        let length = Int(bytes.loadU16(at: 4))
        guard length >= 8 else { throw .lengthTooSmall(field: "length", value: length, minimum: 8) }
        guard length <= available else { throw .lengthExceedsBuffer(field: "length", value: length, available: available) }
        self.bytes = bytes
        self.length = length
    }

    /// The sender's port.
    @inlinable public var sourcePort: UInt16 { bytes.loadU16(at: 0) }
    /// The receiver's port.
    @inlinable public var destinationPort: UInt16 { bytes.loadU16(at: 2) }
    /// The checksum field as received; 0 means the sender computed none.
    @inlinable public var checksum: UInt16 { bytes.loadU16(at: 6) }
    /// The data after the 8-byte header, up to the length field (any trailing bytes are excluded).
    @inlinable public var payload: ByteView { bytes.view(from: 8, length: length - 8) }

    /// Whether the checksum verifies against `pseudoHeader` (a zero checksum means "none" and is valid).
    /// The pseudo-header's length is taken from the datagram's own length field.
    @inlinable
    public func isChecksumValid(_ pseudoHeader: IPPseudoHeader) -> Bool {
        if checksum == 0 { return true }
        var header = pseudoHeader
        header.length = length
        var c = header.checksum
        c.add(bytes, length: length)
        return c.value == 0
    }
}

/// The value form of a UDP header.
public struct UDPHeader: Sendable, Hashable {
    /// The sender's port.
    public var sourcePort: UInt16
    /// The receiver's port.
    public var destinationPort: UInt16
    /// Whether to compute a checksum; false sends zero ("no checksum", allowed over IPv4 only:
    /// over IPv6 the checksum is mandatory, RFC 8200 §8.1).
    public var checksumEnabled: Bool

    /// Creates a header; the checksum is computed unless `checksumEnabled` is false.
    public init(sourcePort: UInt16, destinationPort: UInt16, checksumEnabled: Bool = true) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.checksumEnabled = checksumEnabled
    }

    /// Copies the ports of a validated datagram; `checksumEnabled` is true when the datagram carried a
    /// checksum.
    public init(parsing datagram: UDPDatagram) {
        self.init(
            sourcePort: datagram.sourcePort, destinationPort: datagram.destinationPort,
            checksumEnabled: datagram.checksum != 0)
    }

    /// Writes the header in front of `buffer`'s readable bytes (the data), sets the length and computes
    /// the checksum with `source`/`destination` (a computed zero is sent as 0xFFFF, RFC 768), over
    /// the pseudo-header of their family.
    public func prepend(to buffer: inout ByteBuffer, source: IPAddress, destination: IPAddress) {
        let length = 8 + buffer.readableBytes
        buffer.withHeaderWriter(length: 8) { header in
            header.storeU16(sourcePort, at: 0)
            header.storeU16(destinationPort, at: 2)
            header.storeU16(UInt16(truncatingIfNeeded: length), at: 4)
            guard checksumEnabled else { return }
            var c = IPPseudoHeader(source: source, destination: destination, protocol: .udp, length: length).checksum
            header.add(to: &c)
            let value = c.value
            header.storeU16(value == 0 ? 0xFFFF : value, at: 6)
        }
    }
}
