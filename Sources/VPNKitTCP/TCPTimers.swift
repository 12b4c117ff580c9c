// A connection's deadlines: retransmission, loss probe, delayed ACK, zero-window probe (persist),
// keep-alive, user timeout and the end of TIME-WAIT, with the counts that pace the probes.

import NIOCore

/// When each of a connection's timers fires; nil when it is not running. The connection decides
/// what each one does (`TCPConnection.poll(now:)`).
struct TCPTimers: Sendable {
    /// Retransmission (RFC 6298).
    var retransmitAt: NIODeadline?
    /// Loss probe (RFC 8985 §7).
    var lossProbeAt: NIODeadline?
    /// Loss probes sent that no ACK has answered (each doubles the next probe's timeout).
    var lossProbesUnanswered = 0
    /// Delayed ACK (RFC 1122 §4.2.3.2).
    var delayedACKAt: NIODeadline?
    /// Zero-window probe (RFC 9293 §3.8.6.1).
    var persistAt: NIODeadline?
    /// Zero-window probes sent without the window opening (each doubles the interval).
    var persistBackoff = 0
    /// Keep-alive (RFC 1122 §4.2.3.6).
    var keepAliveAt: NIODeadline?
    /// Keep-alive probes sent that nothing from the peer has answered.
    var keepAliveProbesSent = 0
    /// Since when the oldest unacknowledged byte has been waiting (for the user timeout).
    var unacknowledgedSince: NIODeadline?
    /// The end of TIME-WAIT.
    var timeWaitUntil: NIODeadline?

    /// The earliest deadline of all, the user timeout (`userTimeout` after `unacknowledgedSince`)
    /// included; nil when none runs.
    func nextDeadline(userTimeout: TimeAmount?) -> NIODeadline? {
        var earliest = retransmitAt
        func consider(_ time: NIODeadline?) {
            guard let time else { return }
            if earliest.map({ time < $0 }) ?? true { earliest = time }
        }
        consider(delayedACKAt)
        consider(lossProbeAt)
        consider(timeWaitUntil)
        consider(persistAt)
        consider(keepAliveAt)
        if let userTimeout, let since = unacknowledgedSince { consider(since + userTimeout) }
        return earliest
    }

    /// The persist interval: the RTO, doubled per unanswered probe (up to 2^8 times), between
    /// 200 ms and `maximum`.
    func persistInterval(rto: TimeAmount, maximum: TimeAmount) -> TimeAmount {
        let base = max(TimeAmount.milliseconds(200), rto)
        return min(maximum, base * Int64(1 << min(persistBackoff, 8)))
    }

    /// TIME-WAIT until `end`: nothing is sent any more, so only that timer (and a pending delayed
    /// ACK) runs.
    mutating func enterTimeWait(until end: NIODeadline) {
        retransmitAt = nil
        lossProbeAt = nil
        persistAt = nil
        keepAliveAt = nil
        unacknowledgedSince = nil
        timeWaitUntil = end
    }

    /// The connection is closed: every timer stops.
    mutating func stopAll() {
        retransmitAt = nil
        lossProbeAt = nil
        delayedACKAt = nil
        persistAt = nil
        timeWaitUntil = nil
        keepAliveAt = nil
        unacknowledgedSince = nil
    }
}
