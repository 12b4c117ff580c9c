// What a connection does when its timers fire: retransmission after a timeout (RFC 6298, RFC 5681
// §3.1), loss probes (RFC 8985 §7), zero-window probes, keep-alive, the user timeout and the end of
// TIME-WAIT.

public import NIOCore

extension TCPConnection {
    /// The earliest time `poll(now:)` has work (retransmission, loss probe, delayed ACK, zero-window
    /// probe, keep-alive, user timeout or end of TIME-WAIT); nil when no timer runs.
    public var nextDeadline: NIODeadline? {
        // `mutating` for the reason `status()` is: a stack asks this after every segment, of a
        // connection kept in a class. No array either.
        mutating get { timers.nextDeadline(userTimeout: configuration.userTimeout) }
    }

    /// Runs the timers due at `now`: it may retransmit, send a delayed ACK, probe, or close the connection
    /// (end of TIME-WAIT, too many retransmissions, keep-alive or user timeout). New segments are queued for
    /// `drainOutput(_:)`.
    public mutating func poll(now: NIODeadline) {
        if let t = timers.timeWaitUntil, now >= t {
            timers.timeWaitUntil = nil
            enterClosed(.closed)
            return
        }
        if let t = timers.delayedACKAt, now >= t {
            timers.delayedACKAt = nil
            ackNow = true
        }
        if let t = timers.retransmitAt, now >= t {
            timers.lossProbeAt = nil
            retransmitTimeout(now: now)
        } else if let t = timers.lossProbeAt, now >= t {
            timers.lossProbeAt = nil
            sendLossProbe(now: now)
        }
        if let t = timers.persistAt, now >= t {
            timers.persistAt = nil
            probeZeroWindow(now: now)
        }
        if let timeout = configuration.userTimeout, let since = timers.unacknowledgedSince, now - since >= timeout {
            abort()
            closeReason = .timedOut
            return
        }
        if let t = timers.keepAliveAt, now >= t, state.isSynchronized {
            if timers.keepAliveProbesSent >= configuration.keepAliveProbes {
                enterClosed(.timedOut)
                return
            }
            // A probe: an ACK for one byte before sndUna, which the peer must answer (RFC 1122 §4.2.3.6).
            timers.keepAliveProbesSent += 1
            emit(flags: .ack, seq: sndUna + (-1), payload: ByteBuffer(), now: now)
            timers.keepAliveAt = now + configuration.keepAliveInterval
        }
        flush(now: now)
    }

    /// The retransmission timer expired: the RTO backs off and, after too many, the connection is
    /// given up. A SYN goes again; otherwise the window restarts at one segment and sending goes back
    /// to sndUna (go back N), skipping what the peer SACKed.
    mutating func retransmitTimeout(now: NIODeadline) {
        counters.timeouts += 1
        rtt.backoff += 1
        if rtt.backoff > configuration.maximumRetransmissions {
            enterClosed(.timedOut)
            return
        }
        rtt.backOff()
        switch state {
        case .synSent:
            counters.retransmissions += 1
            sendSYN(ack: false, now: now)
        case .synReceived:
            counters.retransmissions += 1
            sendSYN(ack: true, now: now)
        default:
            // RFC 5681 §3.1: one segment, from sndUna (go back N).
            congestion.timedOut(flightSize: flightSize, mss: effectiveMSS)
            // What the peer SACKed is not sent again after a first timeout (RFC 6675 §5.1 allows
            // keeping it); a second timeout in a row forgets it, in case the peer reneged.
            if rtt.backoff > 1 { scoreboard.removeAll() }
            scoreboard.highRetransmitted = nil
            sndNxt = sndUna
            if finSent && sendQueue.count == 0 {
                emit(flags: [.fin, .ack], seq: sndUna, payload: ByteBuffer(), now: now)
                sndNxt = sndMax
                counters.retransmissions += 1
            } else {
                retransmitFirst(now: now)
                sndNxt = sndUna + min(sendQueue.count, effectiveMSS)
                if finSent && sndNxt == sndUna + sendQueue.count { sndNxt = sndMax }
            }
            timers.retransmitAt = now + rtt.rto
        }
    }

    /// Schedules a loss probe (RFC 8985 §7.2) two round trips out while data is in flight and no
    /// ACK brings news, doubling for each probe left unanswered (at most three), and only while it
    /// comes before the retransmission timer. A single segment in flight outside recovery waits for
    /// the peer's delayed ACK too.
    mutating func armLossProbe(now: NIODeadline) {
        guard useSACK, configuration.lossProbes, rtt.backoff == 0, timers.lossProbesUnanswered < 3, sndUna != sndMax, sndNxt == sndMax,
              state == .established || state == .closeWait, let srtt = rtt.smoothed, let retransmitAt = timers.retransmitAt
        else {
            timers.lossProbeAt = nil
            return
        }
        if let at = timers.lossProbeAt, now < at, timers.lossProbesUnanswered > 0 { return }
        var timeout = max(srtt * 2, .milliseconds(2)) * Int64(1 << timers.lossProbesUnanswered)
        if !congestion.inRecovery, sndMax - sndUna <= effectiveMSS { timeout = timeout + .milliseconds(200) }
        let at = now + timeout
        timers.lossProbeAt = at < retransmitAt ? at : nil
    }

    /// The probe. In recovery, the first hole's retransmission is taken as lost and goes again.
    /// Otherwise, if the peer has SACKed data above a hole, the hole is lost (nothing came to fill it
    /// in two round trips) and recovery starts; else one new segment if the window allows, or the
    /// last segment again, so that the ACK it draws shows what is missing.
    mutating func sendLossProbe(now: NIODeadline) {
        guard state.isSynchronized, sndUna != sndMax, sndNxt == sndMax else { return }
        counters.lossProbes += 1
        timers.lossProbesUnanswered += 1
        if congestion.inRecovery {
            let end = scoreboard.ranges.first.map { $0.left - sndUna } ?? sendQueue.count
            let size = min(effectiveMSS, end, sendQueue.count)
            guard size > 0 else { return }
            emit(flags: .ack, seq: sndUna, payload: sendQueue.bytes(from: 0, count: size), now: now)
            counters.retransmissions += 1
            counters.lostRetransmissions += 1
            rtt.forgetSample(ifIn: sndUna, size)
            return
        }
        if sackRecovery {
            enterFastRecovery(now: now)
            return
        }
        let offset = sndNxt - sndUna
        let unsent = sendQueue.count - offset
        let room = sndWnd - offset
        if unsent > 0, room > 0 {
            let size = min(effectiveMSS, unsent, room)
            emit(flags: offset + size == sendQueue.count ? [.ack, .psh] : .ack, seq: sndNxt, payload: sendQueue.bytes(from: offset, count: size), now: now)
            sndNxt = sndNxt + size
            if sndMax < sndNxt { sndMax = sndNxt }
        } else if !finSent, sendQueue.count > 0 {
            let size = min(effectiveMSS, sendQueue.count)
            let start = sendQueue.count - size
            emit(flags: [.ack, .psh], seq: sndUna + start, payload: sendQueue.bytes(from: start, count: size), now: now)
            counters.retransmissions += 1
            rtt.forgetSample(ifIn: sndUna + start, size)
        }
    }

    /// The persist timer fired with the window still closed: a zero-window probe, and the next one
    /// later (RFC 9293 §3.8.6.1).
    mutating func probeZeroWindow(now: NIODeadline) {
        guard sndWnd == 0 else { return }
        counters.zeroWindowProbes += 1
        // One byte past the window (RFC 9293 §3.8.6.1), or a bare ACK when everything sent is
        // outstanding; the answer carries the current window.
        if sendQueue.count > 0 {
            // The probe byte is real data: it moves sndNxt, so the ACK that takes it is acceptable.
            emit(flags: .ack, seq: sndUna, payload: sendQueue.bytes(from: 0, count: 1), now: now)
            if sndNxt - sndUna < 1 { sndNxt = sndUna + 1 }
            if sndMax < sndNxt { sndMax = sndNxt }
        } else {
            emit(flags: .ack, seq: sndUna + (-1), payload: ByteBuffer(), now: now)
        }
        timers.persistBackoff += 1
        timers.persistAt = now + persistInterval
    }

    /// Persist timer interval: the RTO, doubled per unanswered probe, between 200 ms and 60 s.
    var persistInterval: TimeAmount {
        timers.persistInterval(rto: rtt.rto, maximum: configuration.maximumRTO)
    }
}
