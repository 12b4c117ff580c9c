// Congestion control (RFC 5681, RFC 6582, RFC 3042): the congestion window and slow-start threshold,
// slow start, fast recovery and the reaction to a timeout. The congestion avoidance growth and the
// window after a loss are the algorithm's: NewReno or CUBIC, behind `CongestionAlgorithm`.

import NIOCore

/// What differs between congestion control algorithms: how the window grows in congestion avoidance
/// and what it is cut to after a loss. The rest (slow start, fast recovery) is shared.
protocol CongestionAlgorithm: Sendable {
    /// Congestion avoidance (cwnd ≥ ssthresh): grows `window` for `acked` newly acknowledged bytes.
    mutating func increase(window: inout Int, acked: Int, mss: Int, smoothedRTT: TimeAmount?, now: NIODeadline)
    /// The slow-start threshold after a loss, from the window and the bytes in flight.
    mutating func reducedWindow(window: Int, flightSize: Int, mss: Int) -> Int
}

/// A connection's congestion state. The algorithm is one of two concrete values held inline (an
/// enum, not an existential), so the per-ACK path calls it directly.
struct CongestionControl: Sendable {
    /// The algorithm in use and its own state.
    enum Algorithm: Sendable {
        case newReno(NewReno)
        case cubic(CUBIC)
    }

    var algorithm: Algorithm
    /// cwnd, in bytes.
    private(set) var cwnd: Int
    /// ssthresh, in bytes; unbounded until the first loss.
    private(set) var ssthresh = Int.max
    /// The recovery point (RFC 6582 `recover`): sndMax when fast recovery began; nil outside it.
    private(set) var recover: SequenceNumber?
    /// Duplicate ACKs in a row.
    var duplicateACKs = 0
    /// Bytes limited transmit (RFC 3042) lets out beyond cwnd.
    private(set) var limitedTransmitAllowance = 0

    /// The initial window (RFC 5681 §3.1, RFC 6928), and the algorithm's initial state.
    init(_ kind: TCPCongestionControl, initialWindow: Int) {
        switch kind {
        case .newReno: algorithm = .newReno(NewReno())
        case .cubic: algorithm = .cubic(CUBIC())
        }
        cwnd = initialWindow
    }

    /// Whether fast recovery is in progress.
    var inRecovery: Bool { recover != nil }

    /// What may be in flight: cwnd plus what limited transmit allows.
    var sendWindow: Int { cwnd + limitedTransmitAllowance }

    /// New data was acknowledged: duplicate counting and limited transmit start over.
    mutating func newDataAcknowledged() {
        duplicateACKs = 0
        limitedTransmitAllowance = 0
    }

    /// New data acknowledged outside recovery: slow start below ssthresh (at most one MSS per ACK,
    /// RFC 5681 §3.1), the algorithm's congestion avoidance above.
    mutating func grow(acked: Int, mss: Int, smoothedRTT: TimeAmount?, now: NIODeadline) {
        if cwnd < ssthresh {
            cwnd += min(acked, mss)
            return
        }
        switch algorithm {
        case .newReno(let reno):
            // NewReno keeps no state of its own: nothing to store back.
            reno.increase(window: &cwnd, acked: acked, mss: mss, smoothedRTT: smoothedRTT, now: now)
        case .cubic(var cubic):
            cubic.increase(window: &cwnd, acked: acked, mss: mss, smoothedRTT: smoothedRTT, now: now)
            algorithm = .cubic(cubic)
        }
    }

    /// ssthresh for a loss, as the algorithm reduces it.
    private mutating func reducedWindow(flightSize: Int, mss: Int) -> Int {
        switch algorithm {
        case .newReno(let reno):
            return reno.reducedWindow(window: cwnd, flightSize: flightSize, mss: mss)
        case .cubic(var cubic):
            let reduced = cubic.reducedWindow(window: cwnd, flightSize: flightSize, mss: mss)
            algorithm = .cubic(cubic)
            return reduced
        }
    }

    /// A loss detected (RFC 5681 §3.2, RFC 6675 §5): the window is reduced once, and recovery lasts
    /// until `recoveryPoint` is acknowledged. With SACK the pipe governs what is sent, so cwnd is
    /// ssthresh; otherwise it is inflated by the three segments the duplicate ACKs show have left.
    mutating func enterRecovery(recoveryPoint: SequenceNumber, flightSize: Int, mss: Int, sack: Bool) {
        ssthresh = reducedWindow(flightSize: flightSize, mss: mss)
        recover = recoveryPoint
        cwnd = sack ? ssthresh : ssthresh + 3 * mss
    }

    /// Whether `ack` acknowledges everything up to the recovery point (a full ACK).
    func isFullACK(_ ack: SequenceNumber) -> Bool {
        guard let recover else { return false }
        return recover < ack || recover == ack
    }

    /// A full ACK ends recovery (RFC 6582 §3.2 step 3): cwnd deflates to ssthresh.
    mutating func exitRecovery() {
        cwnd = ssthresh
        recover = nil
    }

    /// A partial ACK in NewReno recovery (RFC 6582 §3.2 step 4): deflate by what it acknowledged,
    /// then add back one segment, never below one segment.
    mutating func partialACK(acked: Int, segmentSize: Int) {
        cwnd = max(segmentSize, cwnd - acked + segmentSize)
    }

    /// A duplicate ACK past the third in NewReno recovery: one more segment has left the network.
    mutating func inflate(by mss: Int) {
        cwnd += mss
    }

    /// RFC 3042: each of the first two duplicate ACKs lets one new full segment out, with what is in
    /// flight staying within cwnd + 2 MSS.
    mutating func allowLimitedTransmit(outstanding: Int, mss: Int) {
        limitedTransmitAllowance = max(0, min(cwnd + 2 * mss, outstanding + mss) - cwnd)
    }

    /// The retransmission timer expired (RFC 5681 §3.1): ssthresh reduced, one segment of window
    /// (restart in slow start), and any recovery abandoned.
    mutating func timedOut(flightSize: Int, mss: Int) {
        ssthresh = reducedWindow(flightSize: flightSize, mss: mss)
        cwnd = mss
        recover = nil
        duplicateACKs = 0
    }
}
