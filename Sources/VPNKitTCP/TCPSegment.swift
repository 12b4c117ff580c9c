public import NIOCore
public import VPNKitBase

/// A validated view of a TCP segment: the buffer is the whole IP payload (header + data).
/// Construction checks the fixed header and the data offset (≥ 5 words, within the buffer).
public struct TCPSegment: Sendable {
    /// The whole segment, header and data.
    public let bytes: ByteView
    /// The header length in bytes (data offset × 4).
    public let headerLength: Int
    /// The length in bytes of a header without options.
    public static let minimumHeaderLength = 20

    /// Validates the readable bytes of `buffer` as a segment and throws the same errors as the `ByteView`
    /// initializer.
    @inlinable
    public init(_ buffer: ByteBuffer) throws(WireError) { try self.init(ByteView(buffer)) }

    /// Validates `bytes` (the whole IP payload) as a segment; afterwards no accessor can trap. Options and
    /// the checksum are not checked here.
    ///
    /// - Throws: `WireError.truncated` for fewer than 20 bytes, `WireError.lengthTooSmall` for a data offset
    ///   below 5 words, and `WireError.lengthExceedsBuffer` for a data offset past the bytes given.
    @inlinable
    public init(_ bytes: ByteView) throws(WireError) {
        let available = bytes.count
        guard available >= 20 else { throw .truncated(needed: 20, available: available) }
        let headerLength = Int(bytes.loadU8(at: 12) >> 4) * 4
        guard headerLength >= 20 else { throw .lengthTooSmall(field: "data offset", value: headerLength, minimum: 20) }
        guard headerLength <= available else {
            throw .lengthExceedsBuffer(field: "data offset", value: headerLength, available: available)
        }
        self.bytes = bytes
        self.headerLength = headerLength
    }

    /// The sender's port.
    @inlinable public var sourcePort: UInt16 { bytes.loadU16(at: 0) }
    /// The receiver's port.
    @inlinable public var destinationPort: UInt16 { bytes.loadU16(at: 2) }
    /// The sequence number of the first byte of data (or of the SYN).
    @inlinable public var sequenceNumber: SequenceNumber { SequenceNumber(bytes.loadU32(at: 4)) }
    /// The next sequence number the sender expects; significant only when `flags` contains ACK.
    @inlinable public var acknowledgmentNumber: SequenceNumber { SequenceNumber(bytes.loadU32(at: 8)) }
    /// The control flags.
    @inlinable public var flags: TCPFlags { TCPFlags(rawValue: bytes.loadU16(at: 12)) }
    /// The raw (unscaled) window field.
    @inlinable public var window: UInt16 { bytes.loadU16(at: 14) }
    /// The checksum field as received; see `isChecksumValid(source:destination:)`.
    @inlinable public var checksum: UInt16 { bytes.loadU16(at: 16) }
    /// The urgent pointer field; significant only when `flags` contains URG.
    @inlinable public var urgentPointer: UInt16 { bytes.loadU16(at: 18) }
    /// The number of data bytes after the header.
    @inlinable public var payloadLength: Int { bytes.count - headerLength }
    /// The data after the header, to the end of the segment.
    @inlinable public var payload: ByteView { bytes.view(from: headerLength) }
    /// The options area (header bytes past the fixed 20).
    @inlinable public var optionBytes: ByteView { bytes.view(from: 20, length: headerLength - 20) }
    /// The options, walked lazily without allocation.
    @inlinable public var options: TCPOptionSequence { TCPOptionSequence(optionBytes) }

    /// Whether the checksum verifies against the pseudo-header of `source` and `destination` (its
    /// length is this segment's).
    @inlinable
    public func isChecksumValid(source: IPAddress, destination: IPAddress) -> Bool {
        IPPseudoHeader(source: source, destination: destination, protocol: .tcp, length: bytes.count)
            .verifies(bytes)
    }
}

/// The value form of a TCP header, options parsed and kept in wire order.
public struct TCPHeader: Sendable, Hashable {
    /// The sender's port.
    public var sourcePort: UInt16
    /// The receiver's port.
    public var destinationPort: UInt16
    /// The sequence number of the first byte of data (or of the SYN).
    public var sequenceNumber: SequenceNumber
    /// The next sequence number expected from the peer; significant only with the ACK flag.
    public var acknowledgmentNumber: SequenceNumber
    /// The control flags.
    public var flags: TCPFlags
    /// The raw window field; the receiver multiplies it by 2^shift when window scaling was negotiated (never
    /// in a SYN).
    public var window: UInt16
    /// The urgent pointer; 0 by default.
    public var urgentPointer: UInt16 = 0
    /// The options in wire order; see
    /// `standardOptions(maximumSegmentSize:sackPermitted:timestamps:windowScale:sack:)` for an aligned
    /// layout.
    public var options: [TCPOption] = []

    /// Creates a header; the acknowledgment number defaults to 0 and the urgent pointer is 0.
    public init(
        sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: SequenceNumber,
        acknowledgmentNumber: SequenceNumber = SequenceNumber(0), flags: TCPFlags, window: UInt16,
        options: [TCPOption] = []
    ) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
        self.options = options
    }

    /// Parses the header of `segment`, options included; throws on a malformed option.
    public init(parsing segment: TCPSegment) throws(WireError) {
        self.init(
            sourcePort: segment.sourcePort, destinationPort: segment.destinationPort,
            sequenceNumber: segment.sequenceNumber, acknowledgmentNumber: segment.acknowledgmentNumber,
            flags: segment.flags, window: segment.window, options: try segment.options.parsed())
        self.urgentPointer = segment.urgentPointer
    }

    /// Like `init(parsing:)`, parsing the options into `scratch` and sharing its storage: a stack
    /// that keeps one scratch array allocates none per segment once the previous header is gone.
    public init(parsing segment: TCPSegment, optionsInto scratch: inout [TCPOption]) throws(WireError) {
        try segment.options.parse(into: &scratch)
        self.init(
            sourcePort: segment.sourcePort, destinationPort: segment.destinationPort,
            sequenceNumber: segment.sequenceNumber, acknowledgmentNumber: segment.acknowledgmentNumber,
            flags: segment.flags, window: segment.window, options: scratch)
        self.urgentPointer = segment.urgentPointer
    }

    /// Header length: 20 + options padded to a multiple of four (at most 60).
    public var headerLength: Int {
        20 + min(40, (options.reduce(0) { $0 + $1.encodedLength } + 3) & ~3)
    }

    // Typed accessors over the option list.
    /// The value of the first MSS option, or nil when there is none.
    public var maximumSegmentSize: UInt16? {
        for case .maximumSegmentSize(let v) in options { return v }
        return nil
    }
    /// The shift count of the first window-scale option, or nil when there is none.
    public var windowScale: UInt8? {
        for case .windowScale(let v) in options { return v }
        return nil
    }
    /// Whether a SACK-permitted option is present.
    public var sackPermitted: Bool { options.contains(.sackPermitted) }
    /// The blocks of the first SACK option, or an empty array when there is none.
    public var sackBlocks: [SACKBlock] {
        for case .sack(let blocks) in options { return blocks }
        return []
    }
    /// The values of the first timestamps option, or nil when there is none.
    public var timestamps: (value: UInt32, echoReply: UInt32)? {
        for case .timestamps(let value, let echoReply) in options { return (value, echoReply) }
        return nil
    }

    /// Builds the conventional, aligned option layout Linux uses: MSS, SACK-permitted + timestamps,
    /// NOP + window scale; or NOP NOP timestamps, NOP NOP SACK blocks on data segments.
    public static func standardOptions(
        maximumSegmentSize: UInt16? = nil, sackPermitted: Bool = false,
        timestamps: (value: UInt32, echoReply: UInt32)? = nil, windowScale: UInt8? = nil, sack: [SACKBlock] = []
    ) -> [TCPOption] {
        var options: [TCPOption] = []
        // Room for the most a SYN carries (MSS, SACK permitted or 2 NOPs, timestamps, NOP and scale):
        // one allocation, not one per group.
        options.reserveCapacity(sack.isEmpty ? 7 : 10)
        if let maximumSegmentSize { options.append(.maximumSegmentSize(maximumSegmentSize)) }
        switch (sackPermitted, timestamps) {
        case (true, let ts?):
            options.append(.sackPermitted)
            options.append(.timestamps(value: ts.value, echoReply: ts.echoReply))
        case (true, nil):
            options.append(.noOperation)
            options.append(.noOperation)
            options.append(.sackPermitted)
        case (false, let ts?):
            options.append(.noOperation)
            options.append(.noOperation)
            options.append(.timestamps(value: ts.value, echoReply: ts.echoReply))
        case (false, nil): break
        }
        if let windowScale {
            options.append(.noOperation)
            options.append(.windowScale(windowScale))
        }
        if !sack.isEmpty {
            // At most 4 blocks fit; 3 beside timestamps.
            let room = timestamps == nil ? 4 : 3
            options += [.noOperation, .noOperation, .sack(Array(sack.prefix(room)))]
        }
        return options
    }

    /// Writes the header in front of `buffer`'s readable bytes (the payload) and computes the checksum
    /// with the pseudo-header of `source` and `destination`. Options beyond 40 bytes are not written.
    public func prepend(to buffer: inout ByteBuffer, source: IPAddress, destination: IPAddress) {
        prepend(to: &buffer, source: source, destination: destination, partialChecksum: false)
    }

    /// Like `prepend(to:source:destination:)`; with `partialChecksum` the checksum field gets only
    /// the pseudo-header's folded sum (not complemented) and the data is not summed at all: the
    /// link finishes it (a virtio-net header's NEEDS_CSUM, see `FrameOffload`).
    public func prepend(to buffer: inout ByteBuffer, source: IPAddress, destination: IPAddress, partialChecksum: Bool) {
        prepend(to: &buffer, source: source, destination: destination, partialChecksum: partialChecksum, trailing: nil)
    }

    /// Like `prepend(to:source:destination:partialChecksum:)` for a segment whose data (`trailing`)
    /// travels in a buffer of its own, after `buffer`: the checksum covers it (unless partial).
    public func prepend(to buffer: inout ByteBuffer, source: IPAddress, destination: IPAddress, partialChecksum: Bool, trailing: ByteBuffer?) {
        let headerLength = self.headerLength
        let segmentLength = headerLength + buffer.readableBytes + (trailing?.readableBytes ?? 0)
        buffer.withHeaderWriter(length: headerLength) { header in
            header.storeU16(sourcePort, at: 0)
            header.storeU16(destinationPort, at: 2)
            header.storeU32(sequenceNumber.rawValue, at: 4)
            header.storeU32(acknowledgmentNumber.rawValue, at: 8)
            header.storeU16(UInt16(headerLength / 4) << 12 | flags.rawValue, at: 12)
            header.storeU16(window, at: 14)
            header.storeU16(urgentPointer, at: 18)
            var offset = 20
            for option in options {
                guard offset + option.encodedLength <= headerLength else { break }
                option.store(into: &header, at: offset)
                offset += option.encodedLength
            }
            var c = IPPseudoHeader(source: source, destination: destination, protocol: .tcp, length: segmentLength)
                .checksum
            if partialChecksum {
                header.storeU16(c.sum, at: 16)
            } else {
                header.add(to: &c)
                if let trailing { c.add(trailing) }
                header.storeU16(c.value, at: 16)
            }
        }
    }
}
