public import NIOCore
public import VPNKitBase

/// Reassembles IPv4 fragments. Keyed by (source, destination, protocol, identification). A state
/// machine: fragments and the time go in, a complete datagram or drop reasons come out.
public struct IPv4Reassembler: Sendable {
    /// The limits the reassembler was created with.
    public let configuration: ReassemblyConfiguration

    struct Key: Hashable, Sendable {
        var source: IPv4Address
        var destination: IPv4Address
        var proto: UInt8
        var identification: UInt16
    }

    struct Fragment: Sendable {
        var offset: Int
        var payload: ByteView
        var end: Int { offset + payload.count }
    }

    struct Datagram: Sendable {
        var started: NIODeadline
        /// Sorted by offset, never overlapping.
        var fragments: [Fragment] = []
        /// The header of the first fragment (offset 0) once seen, options included.
        var firstHeader: IPv4Header?
        /// Known once the last fragment (MF clear) arrived.
        var totalPayload: Int?
        var bytes = 0
    }

    private var datagrams: [Key: Datagram] = [:]
    private var heldBytes = 0

    /// Creates a reassembler holding no fragments.
    public init(configuration: ReassemblyConfiguration = ReassemblyConfiguration()) {
        self.configuration = configuration
    }

    /// Datagrams in progress.
    public var count: Int { datagrams.count }
    /// Payload bytes held.
    public var bytesHeld: Int { heldBytes }

    /// The outcome of adding one fragment with `add(_:now:)`.
    public enum Result: Sendable {
        /// More fragments are needed.
        case incomplete
        /// The datagram is complete: a contiguous IPv4 packet (header from the first fragment, MF and
        /// offset cleared, total length and checksum recomputed).
        case complete(ByteBuffer)
        /// The fragment (or its whole datagram) was dropped.
        case dropped(ReassemblyDrop)
    }

    /// Adds one fragment (`packet.isFragment` must be true).
    public mutating func add(_ packet: IPv4Packet, now: NIODeadline) -> Result {
        let key = Key(
            source: packet.source, destination: packet.destination, proto: packet.protocol.rawValue,
            identification: packet.identification)
        let payload = packet.payload
        let offset = packet.fragmentOffset
        let end = offset + payload.count
        let more = packet.moreFragments

        // The whole datagram (the first fragment's header included) must fit 65535 bytes.
        let headerLength = offset == 0 ? packet.headerLength : (datagrams[key]?.firstHeader?.headerLength ?? 20)
        guard end <= configuration.maximumPayloadLength, end + headerLength <= 65535 else {
            discard(key)
            return .dropped(.oversized)
        }
        if more && (payload.count == 0 || payload.count % 8 != 0) {
            discard(key)
            return .dropped(.malformed)
        }

        var datagram: Datagram
        if let existing = datagrams[key] {
            datagram = existing
        } else {
            guard datagrams.count < configuration.maximumDatagrams else { return .dropped(.limit) }
            datagram = Datagram(started: now)
        }

        // The last fragment fixes the length; everything must agree with it.
        if !more {
            if let total = datagram.totalPayload, total != end {
                discard(key)
                return .dropped(.malformed)
            }
            if let last = datagram.fragments.last, last.end > end {
                discard(key)
                return .dropped(.malformed)
            }
            datagram.totalPayload = end
        } else if let total = datagram.totalPayload, end > total {
            discard(key)
            return .dropped(.malformed)
        }

        // Find the insertion point; exact duplicates are ignored, any other overlap drops all.
        var index = datagram.fragments.endIndex
        while index > datagram.fragments.startIndex, datagram.fragments[index - 1].offset > offset { index -= 1 }
        if index > datagram.fragments.startIndex {
            let previous = datagram.fragments[index - 1]
            if previous.offset == offset && previous.payload.count == payload.count {
                datagrams[key] = datagram
                return .dropped(.duplicate)
            }
            if previous.end > offset {
                discard(key)
                return .dropped(.overlap)
            }
        }
        if index < datagram.fragments.endIndex, datagram.fragments[index].offset < end {
            discard(key)
            return .dropped(.overlap)
        }
        guard datagram.fragments.count < configuration.maximumFragmentsPerDatagram,
            heldBytes + payload.count <= configuration.maximumTotalBytes
        else {
            discard(key)
            return .dropped(.limit)
        }

        // A small fragment would keep its whole receive buffer alive (up to 128 KiB on a jumbo
        // link) while counting a few bytes: keep a compact copy instead, so `bytesHeld` is what
        // is really held.
        let stored = payload.count * 2 < payload.storageCapacity ? ByteView(payload.buffer.compacted()) : payload
        datagram.fragments.insert(Fragment(offset: offset, payload: stored), at: index)
        datagram.bytes += payload.count
        heldBytes += payload.count
        if offset == 0 {
            datagram.firstHeader = IPv4Header(parsing: packet)
            if let total = datagram.totalPayload, total + packet.headerLength > 65535 {
                discard(key)
                return .dropped(.oversized)
            }
        }

        guard let total = datagram.totalPayload, datagram.firstHeader != nil, datagram.bytes == total else {
            datagrams[key] = datagram
            return .incomplete
        }
        // Fragments never overlap and lie within [0, total), so `bytes == total` means full coverage.
        datagrams[key] = nil
        heldBytes -= datagram.bytes
        var header = datagram.firstHeader!
        header.moreFragments = false
        header.fragmentOffset = 0
        var buffer = ByteBuffer.withHeadroom(Headroom.ethernet + header.headerLength, capacity: total)
        for fragment in datagram.fragments { buffer.writeImmutableBuffer(fragment.payload.buffer) }
        header.prepend(to: &buffer)
        return .complete(buffer)
    }

    /// Drops datagrams that timed out; returns how many.
    public mutating func poll(now: NIODeadline) -> Int {
        var expired = 0
        for (key, datagram) in datagrams where now - datagram.started >= configuration.timeout {
            discard(key)
            expired += 1
        }
        return expired
    }

    /// When the oldest datagram in progress times out, so `poll(now:)` has work; nil when nothing is held.
    public var nextDeadline: NIODeadline? {
        // Read on every flush: no array.
        var earliest: NIODeadline?
        for datagram in datagrams.values where earliest.map({ datagram.started < $0 }) ?? true { earliest = datagram.started }
        return earliest.map { $0 + configuration.timeout }
    }

    private mutating func discard(_ key: Key) {
        if let datagram = datagrams.removeValue(forKey: key) { heldBytes -= datagram.bytes }
    }
}

/// Splits an IPv4 datagram into fragments that fit `mtu` (RFC 791): each fragment's payload is a
/// multiple of 8 bytes except the last. Options are not copied into later fragments (the stack's
/// own datagrams carry none). Returns the datagram itself when it fits.
public func fragment(_ packet: IPv4Packet, mtu: Int) -> [ByteBuffer] {
    guard packet.totalLength > mtu else { return [packet.bytes.view(from: 0, length: packet.totalLength).buffer] }
    var header = IPv4Header(parsing: packet)
    let firstHeaderLength = packet.headerLength
    let payload = packet.payload
    var fragments: [ByteBuffer] = []
    var offset = 0
    let baseOffset = packet.fragmentOffset
    let moreAfterAll = packet.moreFragments
    while offset < payload.count {
        let headerLength = offset == 0 ? firstHeaderLength : 20
        if offset > 0 { header.options = [] }
        let room = max(8, (mtu - headerLength) & ~7)
        let length = min(room, payload.count - offset)
        let last = offset + length >= payload.count
        var buffer = ByteBuffer.withHeadroom(Headroom.ethernet + headerLength, capacity: length)
        buffer.writeImmutableBuffer(payload.view(from: offset, length: length).buffer)
        header.fragmentOffset = baseOffset + offset
        header.moreFragments = last ? moreAfterAll : true
        header.prepend(to: &buffer)
        fragments.append(buffer)
        offset += length
    }
    return fragments
}
