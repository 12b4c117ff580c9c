// Reassembly of IPv6 fragments (RFC 8200 §4.5), bounded like IPv4's: datagrams, fragments and
// bytes in progress, and a timeout. Overlapping fragments drop the whole packet (RFC 5722).

public import NIOCore
public import VPNKitBase

/// Reassembles IPv6 fragments, keyed by source, destination and identification. A state machine:
/// fragments and the time go in, a whole packet or the reason for a drop comes out.
public struct IPv6Reassembler: Sendable {
    /// The limits the reassembler was created with.
    public let configuration: ReassemblyConfiguration

    struct Key: Hashable, Sendable {
        var source: IPv6Address
        var destination: IPv6Address
        var identification: UInt32
    }

    struct Fragment: Sendable {
        var offset: Int
        var data: ByteView
        var end: Int { offset + data.count }
    }

    struct Packet: Sendable {
        var started: NIODeadline
        /// Sorted by offset, never overlapping.
        var fragments: [Fragment] = []
        /// From the first fragment: the unfragmentable part (fixed header and the headers before the
        /// fragment header), with the field that named the fragment header rewritten.
        var unfragmentable: [UInt8]?
        /// Known once the last fragment (M clear) arrived.
        var total: Int?
        var bytes = 0
    }

    private var packets: [Key: Packet] = [:]
    private var heldBytes = 0

    /// Creates a reassembler holding nothing.
    public init(configuration: ReassemblyConfiguration = ReassemblyConfiguration()) {
        self.configuration = configuration
    }

    /// Packets in progress.
    public var count: Int { packets.count }
    /// Fragment data bytes held.
    public var bytesHeld: Int { heldBytes }

    /// The outcome of adding one fragment.
    public enum Result: Sendable {
        /// More fragments are needed.
        case incomplete
        /// The packet is whole again: its unfragmentable part (the fragment header gone, the next
        /// header and payload length rewritten) followed by the fragmentable part.
        case complete(ByteBuffer)
        /// The fragment, or its whole packet, was dropped.
        case dropped(ReassemblyDrop)
    }

    /// Adds the fragment `packet`, whose header chain `chain` has a fragment header that is not
    /// atomic.
    public mutating func add(_ packet: IPv6Packet, chain: IPv6HeaderChain, now: NIODeadline) -> Result {
        guard let fragment = chain.fragment, let headerOffset = chain.fragmentHeaderOffset,
            let field = chain.fragmentNextHeaderFieldOffset
        else { return .dropped(.malformed) }
        let key = Key(source: packet.source, destination: packet.destination, identification: fragment.identification)
        let dataStart = headerOffset + 8
        let data = packet.bytes.view(from: dataStart, length: 40 + packet.payloadLength - dataStart)
        let offset = fragment.offset
        let end = offset + data.count
        let more = fragment.moreFragments

        // The reassembled payload (headers before the fragment header included) must fit the
        // 16-bit payload length.
        guard end + headerOffset - 40 <= 65535 else {
            discard(key)
            return .dropped(.oversized)
        }
        if more && (data.count == 0 || data.count % 8 != 0) {
            discard(key)
            return .dropped(.malformed)
        }
        var entry: Packet
        if let existing = packets[key] {
            entry = existing
        } else {
            guard packets.count < configuration.maximumDatagrams else { return .dropped(.limit) }
            entry = Packet(started: now)
        }
        if !more {
            if let total = entry.total, total != end {
                discard(key)
                return .dropped(.malformed)
            }
            if let last = entry.fragments.last, last.end > end {
                discard(key)
                return .dropped(.malformed)
            }
            entry.total = end
        } else if let total = entry.total, end > total {
            discard(key)
            return .dropped(.malformed)
        }
        var index = entry.fragments.endIndex
        while index > entry.fragments.startIndex, entry.fragments[index - 1].offset > offset { index -= 1 }
        if index > entry.fragments.startIndex {
            let previous = entry.fragments[index - 1]
            if previous.offset == offset && previous.data.count == data.count {
                packets[key] = entry
                return .dropped(.duplicate)
            }
            if previous.end > offset {
                discard(key)
                return .dropped(.overlap)
            }
        }
        if index < entry.fragments.endIndex, entry.fragments[index].offset < end {
            discard(key)
            return .dropped(.overlap)
        }
        guard entry.fragments.count < configuration.maximumFragmentsPerDatagram,
            heldBytes + data.count <= configuration.maximumTotalBytes
        else {
            discard(key)
            return .dropped(.limit)
        }
        // A small fragment would keep its whole receive buffer alive: keep a compact copy.
        let stored = data.count * 2 < data.storageCapacity ? ByteView(data.buffer.compacted()) : data
        entry.fragments.insert(Fragment(offset: offset, data: stored), at: index)
        entry.bytes += data.count
        heldBytes += data.count
        if offset == 0 {
            var unfragmentable = packet.bytes.view(from: 0, length: headerOffset).array
            if field < unfragmentable.count { unfragmentable[field] = fragment.nextHeader.rawValue }
            entry.unfragmentable = unfragmentable
        }
        guard let total = entry.total, let unfragmentable = entry.unfragmentable, entry.bytes == total else {
            packets[key] = entry
            return .incomplete
        }
        packets[key] = nil
        heldBytes -= entry.bytes
        let payloadLength = unfragmentable.count - 40 + total
        guard payloadLength <= 65535 else { return .dropped(.oversized) }
        var buffer = ByteBuffer.withHeadroom(Headroom.ethernet, capacity: unfragmentable.count + total)
        buffer.writeBytes(unfragmentable)
        buffer.setInteger(UInt16(payloadLength), at: buffer.readerIndex + 4)
        for piece in entry.fragments { buffer.writeImmutableBuffer(piece.data.buffer) }
        return .complete(buffer)
    }

    /// Drops packets that timed out; returns how many.
    public mutating func poll(now: NIODeadline) -> Int {
        var expired = 0
        for (key, entry) in packets where now - entry.started >= configuration.timeout {
            discard(key)
            expired += 1
        }
        return expired
    }

    /// When `poll` next has work.
    public var nextDeadline: NIODeadline? {
        var earliest: NIODeadline?
        for entry in packets.values where earliest.map({ entry.started < $0 }) ?? true { earliest = entry.started }
        return earliest.map { $0 + configuration.timeout }
    }

    private mutating func discard(_ key: Key) {
        guard let entry = packets.removeValue(forKey: key) else { return }
        heldBytes -= entry.bytes
    }
}
