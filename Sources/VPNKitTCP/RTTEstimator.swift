// The retransmission timeout of RFC 6298: the smoothed round-trip time and its variation, the RTO
// they give within bounds, its exponential backoff, and the one segment being timed (Karn's rule).

import NIOCore

/// RFC 6298 round-trip estimation. Samples come from echoed timestamps (RFC 7323) or from one timed
/// segment at a time; a retransmitted segment is never timed (Karn's rule), so retransmitting the
/// timed one forgets it.
struct RTTEstimator: Sendable {
    /// SRTT; nil until the first sample.
    private(set) var smoothed: TimeAmount?
    /// RTTVAR.
    private(set) var variation: TimeAmount = .zero
    /// The current retransmission timeout, backoff included.
    private(set) var rto: TimeAmount
    /// Timeouts since new data was last acknowledged (RFC 6298 §5.5: each one doubles the RTO).
    var backoff = 0
    /// The segment being timed: its first sequence number and when it left.
    private(set) var sample: (seq: SequenceNumber, sent: NIODeadline)?
    /// The lower bound on a computed RTO.
    let minimum: TimeAmount
    /// The upper bound on the RTO, backoff included.
    let maximum: TimeAmount

    /// Before any sample: the RTO is `initial` (RFC 6298 §2.1).
    init(initial: TimeAmount, minimum: TimeAmount, maximum: TimeAmount) {
        self.rto = initial
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Takes one round-trip measurement (RFC 6298 §2.2–2.3): the first sets SRTT to it and RTTVAR to
    /// half of it; later ones move them by 1/8 and 1/4. RTO = SRTT + max(G, 4·RTTVAR), with a clock
    /// granularity G of 1 ms, within the bounds.
    mutating func update(_ measured: TimeAmount) {
        if let s = smoothed {
            let delta = TimeAmount.nanoseconds(abs((s - measured).nanoseconds))
            variation = .nanoseconds((3 * variation.nanoseconds + delta.nanoseconds) / 4)
            smoothed = .nanoseconds((7 * s.nanoseconds + measured.nanoseconds) / 8)
        } else {
            smoothed = measured
            variation = .nanoseconds(measured.nanoseconds / 2)
        }
        let candidate = smoothed! + max(.milliseconds(1), variation * 4)
        rto = min(maximum, max(minimum, candidate))
    }

    /// Times the segment starting at `seq`, sent at `now`, unless one is being timed already.
    mutating func startTiming(_ seq: SequenceNumber, now: NIODeadline) {
        if sample == nil { sample = (seq, now) }
    }

    /// The timed segment arrived (acknowledged or SACKed): its round trip is a sample.
    mutating func measureTimedSegment(now: NIODeadline) {
        guard let timed = sample else { return }
        update(now - timed.sent)
        sample = nil
    }

    /// Stops timing without a sample (its ACK would be ambiguous).
    mutating func forgetSample() {
        sample = nil
    }

    /// Karn's rule for the timed segment: a retransmission of bytes `[start, start + count)` that
    /// include it makes its ACK ambiguous. Other segments' retransmissions leave it timed.
    mutating func forgetSample(ifIn start: SequenceNumber, _ count: Int) {
        if let timed = sample, !(timed.seq < start), timed.seq < start + count { sample = nil }
    }

    /// New data acknowledged up to `ack`. When `timed` is false (the ACK may answer a retransmission)
    /// there is no sample; otherwise an echoed timestamp (milliseconds, nonzero) gives one if under
    /// a minute old, or else the timed segment does if `ack` covers it. The backoff ends: the peer
    /// is answering (RFC 6298 §5.7 keeps the backed-off RTO until the next sample).
    mutating func acknowledged(through ack: SequenceNumber, echoedTimestamp: UInt32?, timed: Bool, now: NIODeadline) {
        if !timed {
            sample = nil
        } else if let echo = echoedTimestamp, echo != 0 {
            let sent = Int64(echo)
            let nowMS = Int64(truncatingIfNeeded: UInt32(truncatingIfNeeded: now.uptimeNanoseconds / 1_000_000))
            let delta = (nowMS - sent) & 0xFFFF_FFFF
            if delta < 60_000 { update(.milliseconds(delta)) }
        } else if let timed = sample, timed.seq < ack || timed.seq == ack {
            update(now - timed.sent)
            sample = nil
        }
        backoff = 0
    }

    /// The retransmission timer expired (RFC 6298 §5.5): the RTO doubles, up to the maximum, and the
    /// timed segment is forgotten (it is about to be sent again). The caller counts `backoff`.
    mutating func backOff() {
        rto = min(maximum, rto + rto)
        sample = nil
    }
}
