// The sender's SACK scoreboard (RFC 6675): what the peer has SACKed above the cumulative ACK, the
// pipe estimate it gives, and the holes to retransmit in order.

/// RFC 6675 scoreboard: ranges above SND.UNA the peer has SACKed, sorted and merged (at most
/// `maximumRanges`), and HighRxt, the highest sequence number retransmitted in the current recovery.
struct SACKScoreboard: Sendable {
    /// At most this many ranges are kept: the lowest, which recovery works on.
    static let maximumRanges = 64

    /// The SACKed ranges `[left, right)`, sorted, disjoint and not touching.
    private(set) var ranges: [(left: SequenceNumber, right: SequenceNumber)] = []
    /// HighRxt: where the retransmission of holes has got to in this recovery; nil before the first.
    var highRetransmitted: SequenceNumber?

    /// Whether the peer has SACKed nothing above the cumulative ACK.
    var isEmpty: Bool { ranges.isEmpty }

    /// The highest sequence number SACKed, plus one.
    var highestSACKed: SequenceNumber? { ranges.last?.right }

    /// Merges the peer's SACK blocks (those within `(ack, sndMax]`) into the scoreboard and drops what
    /// the cumulative ACK `ack` now covers. Only the lowest `maximumRanges` ranges are kept: one left
    /// out only makes the pipe estimate larger (more cautious) until the peer reports it again.
    mutating func update(_ blocks: [SACKBlock], ack: SequenceNumber, sndMax: SequenceNumber) {
        for block in blocks {
            var left = SequenceNumber(block.left)
            let right = SequenceNumber(block.right)
            guard left < right, !(sndMax < right) else { continue }
            if left < ack { left = ack }
            guard left < right else { continue }
            ranges.append((left, right))
        }
        ranges.sort { $0.left < $1.left }
        var merged: [(left: SequenceNumber, right: SequenceNumber)] = []
        for range in ranges {
            guard ack < range.right else { continue }
            let left = range.left < ack ? ack : range.left
            if let last = merged.last, !(last.right < left) {
                if last.right < range.right { merged[merged.count - 1].right = range.right }
            } else {
                merged.append((left, range.right))
            }
        }
        ranges = Array(merged.prefix(Self.maximumRanges))
    }

    /// Forgets every range (after repeated timeouts, in case the peer reneged: RFC 6675 §5.1).
    mutating func removeAll() {
        ranges.removeAll()
    }

    /// Bytes the scoreboard covers above `ack`.
    func sackedBytes(above ack: SequenceNumber) -> Int {
        ranges.reduce(0) { $0 + max(0, $1.right - ($1.left < ack ? ack : $1.left)) }
    }

    /// RFC 6675 "pipe", approximated: the bytes outstanding in `[sndUna, sndMax)` and not SACKed.
    func pipe(sndUna: SequenceNumber, sndMax: SequenceNumber) -> Int {
        max(0, (sndMax - sndUna) - sackedBytes(above: sndUna))
    }

    /// Whether the byte at `seq` has been SACKed.
    func contains(_ seq: SequenceNumber) -> Bool {
        ranges.contains { !(seq < $0.left) && seq < $0.right }
    }

    /// `seq`, or the end of the SACKed range it falls in: sending resumes past what the peer holds.
    func skippingSACKed(_ seq: SequenceNumber) -> SequenceNumber {
        var seq = seq
        for range in ranges where !(seq < range.left) && seq < range.right { seq = range.right }
        return seq
    }

    /// The start of the first SACKed range above `seq`, where a segment sent from `seq` should end.
    func nextSACKed(after seq: SequenceNumber) -> SequenceNumber? {
        ranges.first { seq < $0.left }?.left
    }

    /// Where hole filling resumes in this recovery: past HighRxt, but not below `sndUna`.
    func retransmissionStart(sndUna: SequenceNumber) -> SequenceNumber {
        highRetransmitted.map { $0 < sndUna ? sndUna : $0 } ?? sndUna
    }

    /// RFC 6675 §4 NextSeg (rule 1): the next segment to retransmit at or after `next`: the first
    /// unSACKed bytes below the highest SACKed byte, at most `maximum` bytes of them, ending before
    /// `end` (what has been queued). Nil when no hole is left there.
    func nextHole(from next: SequenceNumber, maximum: Int, end: SequenceNumber) -> (seq: SequenceNumber, count: Int)? {
        guard let highest = highestSACKed else { return nil }
        var next = next
        for range in ranges {
            if next < range.left {
                let size = min(maximum, range.left - next, end - next)
                return size > 0 ? (next, size) : nil
            }
            if next < range.right { next = range.right }
            if !(next < highest) { return nil }
        }
        return nil
    }
}
