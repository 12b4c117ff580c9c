import NIOCore
public import VPNKitBase

/// A SACK block: the left edge and the right edge (one past the last byte) of a received range.
public struct SACKBlock: Sendable, Hashable {
    /// The sequence number of the first byte of the range.
    public var left: UInt32
    /// The sequence number one past the last byte of the range.
    public var right: UInt32
    /// Creates a block covering `left..<right` in sequence space.
    public init(left: UInt32, right: UInt32) {
        self.left = left
        self.right = right
    }
}

/// One TCP option, in wire order. Unknown kinds are kept with their data so a header re-emits
/// byte for byte.
public enum TCPOption: Sendable, Hashable {
    /// End of option list (kind 0); nothing after it is parsed.
    case endOfList
    /// No-operation (kind 1), one byte of padding used to align the next option.
    case noOperation
    /// Maximum segment size (kind 2): the largest segment payload, in bytes, the sender will accept. Sent
    /// only in a SYN.
    case maximumSegmentSize(UInt16)
    /// Window scale (kind 3, RFC 7323): the shift count (0…14) the sender applies to its window fields. Sent
    /// only in a SYN.
    case windowScale(UInt8)
    /// SACK permitted (kind 4, RFC 2018): the sender can receive SACK blocks. Sent only in a SYN.
    case sackPermitted
    /// Selective acknowledgment (kind 5, RFC 2018): up to four ranges received above the cumulative ACK.
    case sack([SACKBlock])
    /// Timestamps (kind 8, RFC 7323): the sender's clock and the most recent timestamp received from the
    /// peer.
    case timestamps(value: UInt32, echoReply: UInt32)
    /// Any other kind, with the bytes after its length byte, kept so the header can be written back
    /// unchanged.
    case unknown(kind: UInt8, data: [UInt8])

    /// The option kind number written in the option's first byte (for example 2 for MSS, 8 for timestamps).
    public var kind: UInt8 {
        switch self {
        case .endOfList: return 0
        case .noOperation: return 1
        case .maximumSegmentSize: return 2
        case .windowScale: return 3
        case .sackPermitted: return 4
        case .sack: return 5
        case .timestamps: return 8
        case .unknown(let kind, _): return kind
        }
    }

    /// Encoded length in bytes.
    public var encodedLength: Int {
        switch self {
        case .endOfList, .noOperation: return 1
        case .maximumSegmentSize: return 4
        case .windowScale: return 3
        case .sackPermitted: return 2
        case .sack(let blocks): return 2 + 8 * blocks.count
        case .timestamps: return 10
        case .unknown(_, let data): return 2 + data.count
        }
    }

    /// Writes the option at `offset` past `buffer`'s reader index (the space must exist).
    func store(into buffer: inout HeaderWriter, at offset: Int) {
        buffer.storeU8(kind, at: offset)
        guard encodedLength > 1 else { return }
        buffer.storeU8(UInt8(truncatingIfNeeded: encodedLength), at: offset + 1)
        switch self {
        case .endOfList, .noOperation, .sackPermitted: break
        case .maximumSegmentSize(let mss): buffer.storeU16(mss, at: offset + 2)
        case .windowScale(let shift): buffer.storeU8(shift, at: offset + 2)
        case .sack(let blocks):
            for (index, block) in blocks.enumerated() {
                buffer.storeU32(block.left, at: offset + 2 + 8 * index)
                buffer.storeU32(block.right, at: offset + 6 + 8 * index)
            }
        case .timestamps(let value, let echoReply):
            buffer.storeU32(value, at: offset + 2)
            buffer.storeU32(echoReply, at: offset + 6)
        case .unknown(_, let data):
            buffer.storeBytes(data, at: offset + 2)
        }
    }
}

/// Walks the options area of a TCP header without allocating. Iteration ends at the end of the area
/// or after an End-of-List option; a malformed option (length < 2, past the area, or wrong for its
/// kind) ends iteration and is reported through `error`.
public struct TCPOptionIterator: IteratorProtocol, Sendable {
    @usableFromInline let buffer: ByteView  // options bytes only
    @usableFromInline var offset = 0
    /// Set when iteration stopped at a malformed option.
    public private(set) var error: WireError?

    @inlinable init(_ buffer: ByteView) { self.buffer = buffer }

    /// The next option, or nil at the end of the area, after an End-of-List option, or at a malformed option
    /// (then `error` is set).
    public mutating func next() -> TCPOption? {
        let count = buffer.count
        guard offset < count, error == nil else { return nil }
        let kind = buffer.loadU8(at: offset)
        switch kind {
        case 0:
            offset = count
            return .endOfList
        case 1:
            offset += 1
            return .noOperation
        default:
            guard offset + 1 < count else { return fail(kind, "length byte missing") }
            let length = Int(buffer.loadU8(at: offset + 1))
            guard length >= 2 else { return fail(kind, "length \(length) is below 2") }
            guard offset + length <= count else {
                return fail(kind, "length \(length) runs past the options (\(count - offset) left)")
            }
            let start = offset
            offset += length
            func expect(_ expected: Int) -> Bool { length == expected }
            switch kind {
            case 2:
                guard expect(4) else { return fail(kind, "MSS length \(length) is not 4") }
                return .maximumSegmentSize(buffer.loadU16(at: start + 2))
            case 3:
                guard expect(3) else { return fail(kind, "window scale length \(length) is not 3") }
                return .windowScale(buffer.loadU8(at: start + 2))
            case 4:
                guard expect(2) else { return fail(kind, "SACK-permitted length \(length) is not 2") }
                return .sackPermitted
            case 5:
                guard length >= 10, (length - 2) % 8 == 0 else { return fail(kind, "SACK length \(length) is not 2 + 8n") }
                let blocks = (0..<(length - 2) / 8).map {
                    SACKBlock(left: buffer.loadU32(at: start + 2 + 8 * $0), right: buffer.loadU32(at: start + 6 + 8 * $0))
                }
                return .sack(blocks)
            case 8:
                guard expect(10) else { return fail(kind, "timestamps length \(length) is not 10") }
                return .timestamps(value: buffer.loadU32(at: start + 2), echoReply: buffer.loadU32(at: start + 6))
            default:
                let data = buffer.view(from: start + 2, length: length - 2).array
                return .unknown(kind: kind, data: data)
            }
        }
    }

    private mutating func fail(_ kind: UInt8, _ reason: String) -> TCPOption? {
        error = .malformedOption(kind: Int(kind), reason: reason)
        offset = buffer.count
        return nil
    }
}

/// The options of a segment as a sequence (see `TCPOptionIterator` for malformed input).
public struct TCPOptionSequence: Sequence, Sendable {
    /// The options area: the header bytes after the fixed 20.
    public let bytes: ByteView
    /// Wraps an options area; nothing is checked until iteration.
    @inlinable public init(_ bytes: ByteView) { self.bytes = bytes }
    /// An iterator that walks the options from the first byte.
    public func makeIterator() -> TCPOptionIterator { TCPOptionIterator(bytes) }

    /// All options, or the first malformation.
    public func parsed() throws(WireError) -> [TCPOption] {
        var options: [TCPOption] = []
        try parse(into: &options)
        return options
    }

    /// All options, into `options` (emptied first, its storage kept: a caller that parses every
    /// segment into the same array allocates only when the last header parsed into it is still held).
    public func parse(into options: inout [TCPOption]) throws(WireError) {
        options.removeAll(keepingCapacity: true)
        var iterator = makeIterator()
        while let option = iterator.next() { options.append(option) }
        if let error = iterator.error { throw error }
    }
}
