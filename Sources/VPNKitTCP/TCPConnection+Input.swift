// A connection's input (RFC 9293 §3.10.7): segment acceptability with the RFC 5961 and PAWS checks,
// the handshake, acknowledgments, data and FIN.

public import NIOCore

extension TCPConnection {
    /// Processes one segment from the peer (RFC 9293 §3.10.7): acknowledgments, data, FIN and RST, with the
    /// RFC 5961 and PAWS checks. The caller has already matched it to this connection and verified its
    /// checksum; replies are queued for `drainOutput(_:)`.
    public mutating func receive(_ segment: TCPIncoming, now: NIODeadline) {
        receive(segment, now: now, holdingACK: false)
    }

    /// Processes one segment like `receive(_:now:)`, except that a pure ACK it owes for data that
    /// arrived in order (or for a FIN) is held, not queued, when `holdingACK` is true: the stack sends
    /// it with `sendHeldACK(now:)` once it has handed over every frame of one read from the link.
    /// A burst of segments then draws one cumulative ACK, as with the kernel's receive offload,
    /// rather than one per two segments, each of which costs the peer a wakeup. An ACK that carries
    /// news of missing data (a duplicate ACK, SACK blocks) is never held. Check
    /// `status().hasHeldACK` after the call.
    public mutating func receive(_ segment: TCPIncoming, now: NIODeadline, holdingACK: Bool) {
        counters.segmentsReceived += 1
        var segment = segment
        switch state {
        case .closed:
            return
        case .synSent:
            receiveInSynSent(segment, now: now)
            return
        case .synReceived where segment.header.flags.contains(.syn) && segment.header.sequenceNumber == irs:
            // The peer's SYN again (simultaneous open: its SYN-ACK): the SYN is old news, the ACK is not.
            segment.header.flags.remove(.syn)
            segment.header.sequenceNumber = irs + 1
        default:
            // RFC 5961 §4: a SYN on a synchronized connection, whatever its sequence number, draws a
            // challenge ACK and nothing else.
            if segment.header.flags.contains(.syn), state.isSynchronized {
                challengeACK(now: now)
                return
            }
        }
        let h = segment.header
        // Anything from the peer shows it is alive.
        timers.keepAliveProbesSent = 0
        if let idle = configuration.keepAliveIdle { timers.keepAliveAt = now + idle }

        // PAWS (RFC 7323 §5): a timestamp older than the last one seen means an old duplicate.
        if useTimestamps, let ts = h.timestamps, !h.flags.contains(.rst), Int32(bitPattern: ts.value &- tsRecent) < 0 {
            counters.droppedUnacceptable += 1
            ackNow = true
            flush(now: now)
            return
        }

        // Acceptability (RFC 9293 §3.10.7.4).
        let length = segment.length
        // What was offered, not what is free now: the advertised edge never moves left.
        let window = max(0, receiveWindowRightEdge - rcvNxt)
        let seq = h.sequenceNumber
        let acceptable: Bool
        switch (length, window) {
        case (0, 0): acceptable = seq == rcvNxt
        case (0, _): acceptable = !(seq < rcvNxt) && seq < rcvNxt + window
        case (_, 0): acceptable = false
        default:
            let last = seq + (length - 1)
            acceptable = (!(seq < rcvNxt) && seq < rcvNxt + window) || (!(last < rcvNxt) && last < rcvNxt + window)
        }
        if !acceptable {
            if !h.flags.contains(.rst) {
                if seq < rcvNxt { counters.duplicateSegments += 1 }
                counters.droppedUnacceptable += 1
                ackNow = true
                // An ACK inside the unacceptable segment may still carry a window opening (zero window).
                if length == 0 || window == 0 { processACK(h, carriesData: segment.payload.readableBytes > 0, now: now) }
                flush(now: now)
            }
            return
        }

        // RFC 1337: a RST in TIME-WAIT is ignored (no TIME-WAIT assassination).
        if state == .timeWait && h.flags.contains(.rst) { return }
        // RST (RFC 5961 §3): exact → reset; in window → challenge ACK.
        if h.flags.contains(.rst) {
            if seq == rcvNxt {
                enterClosed(state == .synReceived ? .refused : .reset)
            } else {
                challengeACK(now: now)
            }
            return
        }
        // A SYN still here (SYN-RECEIVED, not the peer's own): answer with a challenge ACK.
        if h.flags.contains(.syn) {
            challengeACK(now: now)
            return
        }
        guard h.flags.contains(.ack) else { return }

        if state == .synReceived {
            guard sndUna < h.acknowledgmentNumber, !(sndMax < h.acknowledgmentNumber) else {
                // RST for an unacceptable ACK.
                output.append(TCPOutgoing(header: TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: h.acknowledgmentNumber, flags: .rst, window: 0), payload: ByteBuffer()))
                return
            }
            state = .established
            sndWnd = Int(h.window) << Int(sendScale)
            sndWl1 = seq
            sndWl2 = h.acknowledgmentNumber
        }
        // An unacceptable ACK: answered with an ACK, and nothing of the segment (its timestamp,
        // data or FIN) is taken.
        guard processACK(h, carriesData: segment.payload.readableBytes > 0, now: now) else {
            counters.droppedUnacceptableACK += 1
            flush(now: now)
            return
        }
        if state == .closed { return }
        if let ts = h.timestamps, useTimestamps, !(seq > rcvNxt) { tsRecent = ts.value }

        // Data.
        if segment.payload.readableBytes > 0, state.canReceive {
            receiveData(seq: seq, data: segment.payload, now: now)
        }
        // FIN.
        if h.flags.contains(.fin) {
            let finSeq = seq + segment.payload.readableBytes
            if finSeq == rcvNxt && !finReceived {
                finReceived = true
                rcvNxt = rcvNxt + 1
                ackNow = true
                switch state {
                case .synReceived, .established: state = .closeWait
                case .finWait1: state = finAcknowledged ? .timeWait : .closing
                case .finWait2: state = .timeWait
                default: break
                }
                if state == .timeWait { enterTimeWait(now: now) }
            }
        }
        flush(now: now, holdingACK: holdingACK && !reassembly.hasOutOfOrder)
    }

    /// Sends the ACK `receive(_:now:holdingACK:)` held, unless a segment sent since carried it.
    public mutating func sendHeldACK(now: NIODeadline) {
        guard ackHeld else { return }
        ackHeld = false
        guard state != .closed else { return }
        emit(flags: .ack, seq: sndNxt, payload: ByteBuffer(), now: now)
    }

    /// SYN-SENT (RFC 9293 §3.10.7.3): the peer's SYN-ACK establishes the connection, its SYN alone
    /// starts a simultaneous open, an acceptable RST refuses it.
    private mutating func receiveInSynSent(_ segment: TCPIncoming, now: NIODeadline) {
        let h = segment.header
        if h.flags.contains(.ack) {
            guard iss < h.acknowledgmentNumber, !(sndMax < h.acknowledgmentNumber) else {
                if !h.flags.contains(.rst) {
                    output.append(TCPOutgoing(header: TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: h.acknowledgmentNumber, flags: .rst, window: 0), payload: ByteBuffer()))
                }
                return
            }
        }
        if h.flags.contains(.rst) {
            if h.flags.contains(.ack) { enterClosed(.refused) }
            return
        }
        guard h.flags.contains(.syn) else { return }
        irs = h.sequenceNumber
        rcvNxt = h.sequenceNumber + 1
        negotiate(h)
        if h.flags.contains(.ack) {
            sndUna = h.acknowledgmentNumber
            synAcknowledged = true
            state = .established
            sndWnd = Int(h.window) << Int(sendScale)
            sndWl1 = h.sequenceNumber
            sndWl2 = h.acknowledgmentNumber
            // Karn: a repeated SYN's SYN-ACK gives no sample.
            if rtt.backoff == 0 { rtt.measureTimedSegment(now: now) }
            rtt.forgetSample()
            timers.retransmitAt = nil
            rtt.backoff = 0
            ackNow = true
            if let ts = h.timestamps { tsRecent = ts.value }
            flush(now: now)
        } else {
            // Simultaneous open.
            state = .synReceived
            sndWnd = Int(h.window)
            sendSYN(ack: true, now: now)
        }
    }

    /// RFC 5961 §7: challenge ACKs, at most `challengeACKsPerSecond`.
    mutating func challengeACK(now: NIODeadline) {
        if challengeWindowStart.map({ now - $0 >= .seconds(1) }) ?? true {
            challengeWindowStart = now
            challengesInWindow = 0
        }
        guard challengesInWindow < configuration.challengeACKsPerSecond else { return }
        challengesInWindow += 1
        counters.challengeACKs += 1
        ackNow = true
        flush(now: now)
    }

    /// In-window data: what is new and fits the window is delivered if it is next in order (with
    /// what it makes contiguous), otherwise queued out of order and answered at once.
    private mutating func receiveData(seq: SequenceNumber, data: ByteBuffer, now: NIODeadline) {
        var data = data
        var seq = seq
        // Trim what we already have.
        if seq < rcvNxt {
            let skip = rcvNxt - seq
            guard skip < data.readableBytes else { return }
            data.moveReaderIndex(forwardBy: skip)
            seq = rcvNxt
        }
        // Trim what does not fit the window.
        let room = receiveWindowRightEdge - seq
        if data.readableBytes > room { data = data.getSlice(at: data.readerIndex, length: max(0, room))! }
        guard data.readableBytes > 0 else { return }

        if seq == rcvNxt {
            rcvNxt = reassembly.deliver(data, at: rcvNxt)
            // A segment larger than the MSS (the link merged or never cut it) counts as the segments it
            // stands for: every second full-sized segment's worth is acknowledged at once.
            unackedSegments += max(1, data.readableBytes / max(1, effectiveMSS))
            if reassembly.hasOutOfOrder || !configuration.delayedACK || unackedSegments >= 2 || data.readableBytes < effectiveMSS {
                ackNow = true
            } else if timers.delayedACKAt == nil {
                timers.delayedACKAt = now + configuration.delayedACKTimeout
            }
        } else {
            counters.outOfOrderSegments += 1
            if reassembly.insertOutOfOrder(seq: seq, data: data, limit: configuration.maximumOutOfOrderSegments) == .duplicate {
                counters.duplicateSegments += 1
            }
            ackNow = true  // a duplicate ACK at once (RFC 5681 §4.2)
        }
    }
}
