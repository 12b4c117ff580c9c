// How a connection takes the peer's acknowledgment (RFC 9293 §3.10.7.4): its acceptability, the
// SACK blocks for the scoreboard, the send queue and SND.UNA, a round-trip sample, congestion
// control, the state our acknowledged FIN leads to, and the send window.

import NIOCore

extension TCPConnection {
    /// Takes the acknowledgment, SACK blocks and window of `h`. Returns false, having changed
    /// nothing but the ACK owed, when the ACK is not acceptable: the caller then drops the segment.
    @discardableResult
    mutating func processACK(_ h: TCPHeader, carriesData: Bool, now: NIODeadline) -> Bool {
        let ack = h.acknowledgmentNumber
        guard isAcceptableACK(ack, now: now) else { return false }
        let window = Int(h.window) << Int(sendScale)
        var newlySACKed = false
        if useSACK { newlySACKed = takeSACKBlocks(h.sackBlocks, ack: ack, now: now) }
        let acknowledgedNew = sndUna < ack
        if acknowledgedNew {
            let acked = ack - sndUna
            let timed = advanceSendUnacknowledged(to: ack, now: now)
            // RTT: timestamps (RFC 7323) or the one timed segment (Karn: never a retransmitted one).
            rtt.acknowledged(through: ack, echoedTimestamp: useTimestamps ? h.timestamps?.echoReply : nil, timed: timed, now: now)
            congestionControlOnNewData(acked: acked, ack: ack, now: now)
            timers.retransmitAt = sndUna == sndMax ? nil : now + rtt.rto
            if finAcknowledged {
                ourFINAcknowledged(now: now)
                if state == .closed { return true }
            }
        } else if ack == sndUna, sndUna != sndMax, h.flags == .ack || h.flags == [.ack, .psh],
                  useSACK ? newlySACKed : window == sndWnd && !carriesData {
            // A duplicate ACK (RFC 5681 §2: no data, same window). With SACK, one that SACKs new
            // data (RFC 6675 §2), whether or not the window moved; one that says nothing new (a
            // duplicate segment arriving, as after a spurious retransmission) does not count.
            congestionControlOnDuplicateACK(now: now)
        }
        if newlySACKed || acknowledgedNew { timers.lossProbesUnanswered = 0 }
        updateSendWindow(h, window: window, now: now)
        return true
    }

    /// Whether `ack` may be taken: not for something never sent (RFC 9293 §3.10.7.4: an ACK is
    /// owed), nor further below SND.UNA than the largest window the peer was ever offered (RFC 5961
    /// §5.2, blind data injection: a challenge ACK).
    private mutating func isAcceptableACK(_ ack: SequenceNumber, now: NIODeadline) -> Bool {
        if sndMax < ack {
            ackNow = true
            return false
        }
        if ack < sndUna + (-maximumSendWindow) {
            challengeACK(now: now)
            return false
        }
        return true
    }

    /// Merges the peer's SACK blocks into the scoreboard. Returns whether they SACKed new data;
    /// if that includes the timed segment, its round trip is a sample (timestamps cannot give one
    /// while the cumulative ACK is held at a hole: the peer echoes the segment before it).
    private mutating func takeSACKBlocks(_ blocks: [SACKBlock], ack: SequenceNumber, now: NIODeadline) -> Bool {
        guard !blocks.isEmpty || !scoreboard.isEmpty else { return false }
        let before = scoreboard.sackedBytes(above: ack)
        scoreboard.update(blocks, ack: ack, sndMax: sndMax)
        let newlySACKed = scoreboard.sackedBytes(above: sndUna) > before
        if newlySACKed, let timed = rtt.sample, scoreboard.contains(timed.seq) {
            rtt.measureTimedSegment(now: now)
        }
        return newlySACKed
    }

    /// SND.UNA moves to `ack`: the acknowledged bytes leave the send queue (not the SYN's or the
    /// FIN's sequence numbers, which hold none). Returns whether the ACK may time a round trip:
    /// not the one for a repeated SYN (Karn: it, even its echoed timestamp, may answer either copy).
    private mutating func advanceSendUnacknowledged(to ack: SequenceNumber, now: NIODeadline) -> Bool {
        var dataAcked = ack - sndUna
        var timed = true
        if !synAcknowledged {
            synAcknowledged = true
            dataAcked -= 1
            timed = rtt.backoff == 0 && counters.retransmissions == 0
        }
        if finSent && ack == sndMax { dataAcked -= 1 }
        sendQueue.removeFirst(max(0, min(dataAcked, sendQueue.count)))
        sndUna = ack
        if sndNxt < sndUna { sndNxt = sndUna }
        timers.unacknowledgedSince = sndUna == sndMax ? nil : now
        return timed
    }

    /// Congestion control for an ACK of new data: a full ACK ends recovery (RFC 6582 / RFC 6675);
    /// in SACK recovery the holes are filled while the pipe has room; a partial ACK in NewReno
    /// recovery retransmits the next hole and deflates the window; outside recovery the window grows.
    private mutating func congestionControlOnNewData(acked: Int, ack: SequenceNumber, now: NIODeadline) {
        congestion.newDataAcknowledged()
        if congestion.isFullACK(ack) {
            congestion.exitRecovery()
            scoreboard.highRetransmitted = nil
        } else if congestion.inRecovery, sackRecovery {
            fillHoles(now: now)
        } else if congestion.inRecovery {
            retransmitFirst(now: now)
            congestion.partialACK(acked: acked, segmentSize: configuration.effectiveMaximumSegmentSize)
        } else {
            congestion.grow(acked: acked, mss: effectiveMSS, smoothedRTT: rtt.smoothed, now: now)
        }
    }

    /// Congestion control for a duplicate ACK: loss is three duplicates, or three segments' worth
    /// SACKed above the hole (RFC 6675 IsLost), and starts recovery; in SACK recovery holes are
    /// filled, in NewReno recovery the window inflates; before the third, limited transmit.
    private mutating func congestionControlOnDuplicateACK(now: NIODeadline) {
        congestion.duplicateACKs += 1
        let mss = effectiveMSS
        if congestion.duplicateACKs >= 3 || scoreboard.sackedBytes(above: sndUna) >= 3 * mss, !congestion.inRecovery {
            enterFastRecovery(now: now)
        } else if congestion.inRecovery, sackRecovery {
            fillHoles(now: now)
        } else if congestion.duplicateACKs > 3, congestion.inRecovery {
            congestion.inflate(by: mss)
        } else if congestion.duplicateACKs < 3, !congestion.inRecovery, configuration.limitedTransmit {
            congestion.allowLimitedTransmit(outstanding: sndNxt - sndUna, mss: mss)
        }
    }

    /// Everything we sent, FIN included, is acknowledged: FIN-WAIT-1 → FIN-WAIT-2, CLOSING →
    /// TIME-WAIT, LAST-ACK → CLOSED (RFC 9293 §3.10.7.4).
    private mutating func ourFINAcknowledged(now: NIODeadline) {
        switch state {
        case .finWait1: state = .finWait2
        case .closing:
            state = .timeWait
            enterTimeWait(now: now)
        case .lastAck:
            enterClosed(.closed)
        default: break
        }
    }

    /// The send window from a segment newer than the last one that set it (RFC 9293 §3.10.7.4:
    /// SND.WL1, SND.WL2). A window that opens stops the persist timer; a closed one with data
    /// waiting is probed (persist timer), not retransmitted into: the peer is alive and answering,
    /// so no retransmission count may run out (RFC 9293 §3.8.6.1).
    private mutating func updateSendWindow(_ h: TCPHeader, window: Int, now: NIODeadline) {
        let ack = h.acknowledgmentNumber
        if sndWl1 < h.sequenceNumber || (sndWl1 == h.sequenceNumber && !(ack < sndWl2)) {
            let wasClosed = sndWnd == 0
            sndWnd = window
            sndWl1 = h.sequenceNumber
            sndWl2 = ack
            if sndWnd > 0 {
                timers.persistAt = nil
                timers.persistBackoff = 0
                if wasClosed, sndUna != sndMax { timers.retransmitAt = now + rtt.rto }
            }
        }
        if sndWnd == 0, sendQueue.count > 0 || (finQueued && !finSent) {
            timers.retransmitAt = nil
            rtt.backoff = 0
            if timers.persistAt == nil { timers.persistAt = now + persistInterval }
        }
    }
}
