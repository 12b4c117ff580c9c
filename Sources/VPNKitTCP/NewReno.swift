// NewReno's congestion avoidance and loss reaction (RFC 5681 §3.1, RFC 6582).

import NIOCore

/// NewReno: about one MSS more per round trip in congestion avoidance, half the flight after a loss.
struct NewReno: CongestionAlgorithm {
    /// Adds MSS·MSS/cwnd per ACK (RFC 5681 eq. 3), at least one byte: one MSS per window's worth.
    func increase(window: inout Int, acked: Int, mss: Int, smoothedRTT: TimeAmount?, now: NIODeadline) {
        window += max(1, mss * mss / max(1, window))
    }

    /// Half the flight size, at least two segments (RFC 5681 eq. 4).
    func reducedWindow(window: Int, flightSize: Int, mss: Int) -> Int {
        max(flightSize / 2, 2 * mss)
    }
}
