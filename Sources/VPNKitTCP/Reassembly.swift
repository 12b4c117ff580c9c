// Received data on its way to the application: bytes in order waiting to be read, and segments
// that arrived ahead of a gap (RFC 9293 §3.10.7.4), with the SACK blocks (RFC 2018) they make.

import NIOCore
import VPNKitBase

/// The receive side's data. In order: slices of the segments the bytes came in or, for sparse
/// payloads, copies gathered into buffers of our own (see `appendGathering`). Out of order:
/// segments above RCV.NXT, sorted by sequence number, until the gap below them fills.
struct Reassembly: Sendable {
    /// What each piece of data held (in order or out of order) is charged against the receive
    /// buffer besides its bytes: about what the piece itself costs (its buffer's header and
    /// allocation, its place in the queue), so that a peer's tiny segments close the window by
    /// what they really hold.
    static let pieceOverhead = 128

    /// Received bytes in order, not yet read.
    private(set) var readable: [ByteBuffer] = []
    /// Their total.
    private(set) var readableBytes = 0
    /// Whether the last piece of `readable` is one of our own gathering buffers, which takes the
    /// next sparse payload.
    private var lastPieceGathers = false
    /// Segments above RCV.NXT, sorted by sequence number; partial overlaps are kept.
    private(set) var outOfOrder: [(seq: SequenceNumber, data: ByteBuffer)] = []
    /// Their total (overlaps counted twice).
    private(set) var outOfOrderBytes = 0
    /// The sequence number of the last segment queued out of order: its block is reported first.
    private(set) var lastOutOfOrder: SequenceNumber?

    /// What happened to a segment offered to `insertOutOfOrder`.
    enum Insertion: Equatable {
        case queued
        /// Already held whole (an exact or covering duplicate).
        case duplicate
        /// The queue is at its limit: dropped.
        case full
    }

    /// Pieces held, in order and out of order.
    var pieces: Int { readable.count + outOfOrder.count }

    /// Whether anything is queued out of order (a gap is open).
    var hasOutOfOrder: Bool { !outOfOrder.isEmpty }

    /// What the held data costs the receive buffer: its bytes, and `pieceOverhead` per piece.
    var footprint: Int { readableBytes + outOfOrderBytes + pieces * Self.pieceOverhead }

    /// Takes `data`, which starts at `next` (RCV.NXT), then the out-of-order data it made contiguous
    /// (trimming overlaps). Returns the new RCV.NXT.
    mutating func deliver(_ data: ByteBuffer, at next: SequenceNumber) -> SequenceNumber {
        var next = append(data, at: next)
        while let first = outOfOrder.first, !(next < first.seq) {
            outOfOrder.removeFirst()
            outOfOrderBytes -= first.data.readableBytes
            let end = first.seq + first.data.readableBytes
            if next < end {
                var rest = first.data
                rest.moveReaderIndex(forwardBy: next - first.seq)
                next = append(rest, at: next)
            }
        }
        return next
    }

    /// Queues in-order data for reading. A payload that fills at least half of its buffer is kept
    /// as it is, a slice (no copy: bulk data). A sparse one is copied into the gathering buffer at the
    /// end of the queue (a new one when there is none or it is full), so that tiny segments neither
    /// pin a frame buffer each nor make a piece each: what the queue holds stays within about twice
    /// its bytes, plus `pieceOverhead` per piece, whatever the segment sizes.
    private mutating func append(_ data: ByteBuffer, at next: SequenceNumber) -> SequenceNumber {
        readableBytes += data.readableBytes
        readable.appendGathering(data, lastGathers: &lastPieceGathers)
        return next + data.readableBytes
    }

    /// Queues a segment that starts above RCV.NXT, in order of sequence number, unless `limit`
    /// segments are queued already or one queued covers it. Sparse payloads are compacted.
    mutating func insertOutOfOrder(seq: SequenceNumber, data: ByteBuffer, limit: Int) -> Insertion {
        lastOutOfOrder = seq
        guard outOfOrder.count < limit else { return .full }
        var index = outOfOrder.endIndex
        while index > 0, seq < outOfOrder[index - 1].seq { index -= 1 }
        // Drop exact or fully covered duplicates; partial overlaps are kept (delivery trims them).
        if index > 0, let prev = Optional(outOfOrder[index - 1]), !((prev.seq + prev.data.readableBytes) < (seq + data.readableBytes)) {
            return .duplicate
        }
        outOfOrder.insert((seq, data.compactedIfSparse()), at: index)
        outOfOrderBytes += data.readableBytes
        return .queued
    }

    /// Distinct SACK blocks the out-of-order queue makes.
    var sackBlockCount: Int {
        var count = 0
        var end: SequenceNumber?
        for (seq, data) in outOfOrder {
            if let e = end, !(e < seq) {
                let newEnd = seq + data.readableBytes
                if e < newEnd { end = newEnd }
            } else {
                count += 1
                end = seq + data.readableBytes
            }
        }
        return count
    }

    /// SACK blocks from the out-of-order queue, at most `limit`: the one holding the most recently
    /// received segment first (RFC 2018 §4), then the rest in order of sequence number.
    func sackBlocks(limit: Int) -> [SACKBlock] {
        var blocks: [SACKBlock] = []
        for (seq, data) in outOfOrder {
            let end = seq + data.readableBytes
            if let last = blocks.last, !(SequenceNumber(last.right) < seq) {
                if SequenceNumber(last.right) < end { blocks[blocks.count - 1].right = end.rawValue }
            } else {
                blocks.append(SACKBlock(left: seq.rawValue, right: end.rawValue))
            }
        }
        if let recent = lastOutOfOrder, let index = blocks.firstIndex(where: { !(recent < SequenceNumber($0.left)) && recent < SequenceNumber($0.right) }) {
            blocks.insert(blocks.remove(at: index), at: 0)
        }
        return Array(blocks.prefix(limit))
    }

    /// Takes up to `maximum` bytes in order (nil when there are none): the first piece, or part of
    /// it, joined with the next pieces while they fit.
    mutating func read(maximum: Int) -> ByteBuffer? {
        guard readableBytes > 0 else { return nil }
        var result: ByteBuffer
        if readable[0].readableBytes <= maximum {
            result = readable.removeFirst()
        } else {
            result = readable[0].readSlice(length: maximum)!
        }
        while let next = readable.first, result.readableBytes + next.readableBytes <= maximum {
            var chunk = readable.removeFirst()
            result.writeBuffer(&chunk)
        }
        if readable.isEmpty { lastPieceGathers = false }
        readableBytes -= result.readableBytes
        return result
    }

    /// Appends up to `maximum` bytes to `chunks` in the pieces they are held in (none is copied to
    /// join it to the next). Returns the bytes taken.
    mutating func readChunks(maximum: Int, into chunks: inout [ByteBuffer]) -> Int {
        var total = 0
        var whole = 0
        for index in readable.indices {
            let room = maximum - total
            guard room > 0 else { break }
            if readable[index].readableBytes <= room {
                total += readable[index].readableBytes
                chunks.append(readable[index])
                whole += 1
            } else {
                total += room
                chunks.append(readable[index].readSlice(length: room)!)
                break
            }
        }
        readable.removeFirst(whole)
        if readable.isEmpty { lastPieceGathers = false }
        readableBytes -= total
        return total
    }
}
