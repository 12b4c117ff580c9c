// A connection's output (RFC 9293 §3.8.6, RFC 5681, RFC 6675): what may be sent now, the segments
// built for it with their options and window, the SYN, and retransmissions in loss recovery.

import NIOCore

extension TCPConnection {
    /// The payload that fits one segment now: the MSS less the options this segment will carry
    /// (RFC 6691: the MSS excludes options; timestamps take 12 bytes, SACK blocks 4 + 8 each).
    var effectiveMSS: Int {
        var options = useTimestamps ? 12 : 0
        if useSACK, reassembly.hasOutOfOrder { options += 4 + 8 * min(reassembly.sackBlockCount, useTimestamps ? 3 : 4) }
        return max(1, min(peerMSS, configuration.effectiveMaximumSegmentSize) - options)
    }

    /// The most payload one new segment may carry: the MSS, or with segmentation offload as many
    /// whole MSS as fit the offload size.
    var sendSegmentLimit: Int {
        let mss = effectiveMSS
        guard let offload = configuration.segmentationOffloadBytes, offload > mss else { return mss }
        return offload - offload % mss
    }

    /// The window we can advertise: the free part of the receive buffer, the pieces' overhead
    /// counted.
    var receiveWindow: Int {
        max(0, configuration.receiveBufferSize - reassembly.footprint)
    }

    /// The right edge of the receive window: what is free now, or the edge already advertised if
    /// that is further (it never moves left).
    var receiveWindowRightEdge: SequenceNumber {
        let edge = rcvNxt + receiveWindow
        guard let advertised = advertisedRightEdge, edge < advertised else { return edge }
        return advertised
    }

    /// Sends what may be sent now, then the ACK owed if no segment carried it (or holds it, with
    /// `holdingACK`), and arms the loss probe.
    mutating func flush(now: NIODeadline, holdingACK: Bool = false) {
        guard state != .closed else { return }
        sendData(now: now)
        if ackNow {
            if holdingACK {
                ackHeld = true
            } else {
                emit(flags: .ack, seq: sndNxt, payload: ByteBuffer(), now: now)
            }
        }
        armLossProbe(now: now)
    }

    /// Sends queued data (and the FIN after it) while the peer's window, the congestion window (or
    /// in SACK recovery the pipe) and the silly window and Nagle rules allow.
    mutating func sendData(now: NIODeadline) {
        guard state.isSynchronized || state == .closeWait || state == .lastAck || state == .finWait1 || state == .closing else { return }
        while true {
            // Resending after a timeout: what the peer SACKed is skipped.
            if sndNxt < sndMax { sndNxt = scoreboard.skippingSACKed(sndNxt) }
            let offset = sndNxt - sndUna
            let unsent = sendQueue.count - offset
            let window = min(sndWnd, congestion.sendWindow)
            let outstanding = congestion.inRecovery && sackRecovery ? scoreboard.pipe(sndUna: sndUna, sndMax: sndMax) : sndNxt - sndUna
            let usable = min(window - outstanding, sndWnd - (sndNxt - sndUna))
            if unsent > 0 {
                if sndWnd == 0 {
                    if timers.persistAt == nil && timers.retransmitAt == nil { timers.persistAt = now + rtt.rto }
                    return
                }
                // Sender-side silly window avoidance (RFC 1122 §4.2.3.4): send a full segment, or all
                // that is queued, or at least half the largest window the peer offered, or anything
                // at all when nothing is in flight (no timer would otherwise restart us).
                let full = min(unsent, sendSegmentLimit)
                let room = min(full, usable)
                guard room > 0 else { return }
                let inFlight = sndNxt != sndUna
                guard room >= min(unsent, effectiveMSS) || room >= maximumSendWindow / 2 || !inFlight else { return }
                // Nagle: hold a small segment while data is in flight.
                if configuration.nagle, room < effectiveMSS, inFlight { return }
                // With segmentation offload, a large segment is cut on whole MSS boundaries, so only
                // the last piece may be short (a window-limited size is rounded down to whole MSS).
                let mss = effectiveMSS
                var size = room > mss && room < full ? room - room % mss : room
                // A segment that would span two of the application's writes ends at the first one's
                // end instead, so it is a slice, never a copy (unless that would leave a sliver).
                let contiguous = sendQueue.contiguousBytes(from: offset)
                if contiguous < size && contiguous >= 512 { size = contiguous }
                if sndNxt < sndMax, let next = scoreboard.nextSACKed(after: sndNxt), next - sndNxt < size { size = next - sndNxt }
                let payload = sendQueue.bytes(from: offset, count: size)
                var flags: TCPFlags = [.ack]
                let last = offset + size == sendQueue.count
                if last { flags.insert(.psh) }
                let withFIN = last && finQueued && !finSent
                if withFIN { flags.insert(.fin) }
                // New data (not a retransmission) may be timed; asked before `emit`, which moves
                // sndMax past what it sends.
                if sndNxt == sndMax { rtt.startTiming(sndNxt, now: now) }
                emit(flags: flags, seq: sndNxt, payload: payload, now: now)
                sndNxt = sndNxt + size + (withFIN ? 1 : 0)
                if withFIN { finSent = true }
                if sndMax < sndNxt { sndMax = sndNxt }
                if timers.retransmitAt == nil { timers.retransmitAt = now + rtt.rto }
                continue
            }
            if finQueued && !finSent {
                emit(flags: [.fin, .ack], seq: sndNxt, payload: ByteBuffer(), now: now)
                finSent = true
                sndNxt = sndNxt + 1
                if sndMax < sndNxt { sndMax = sndNxt }
                if timers.retransmitAt == nil { timers.retransmitAt = now + rtt.rto }
            } else if finQueued && finSent && sndNxt < sndMax {
                // After a timeout rewound sndNxt past all data: resend the FIN.
                emit(flags: [.fin, .ack], seq: sndNxt, payload: ByteBuffer(), now: now)
                sndNxt = sndMax
            }
            return
        }
    }

    /// Queues one segment: the ACK of everything received, the window (never shrinking) and the
    /// options in use. Any segment carries the ACK owed, so none is owed after it.
    mutating func emit(flags: TCPFlags, seq: SequenceNumber, payload: ByteBuffer, now: NIODeadline) {
        var header = TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: seq, acknowledgmentNumber: rcvNxt, flags: flags, window: 0)
        // The window never shrinks (RFC 9293 §3.8.6.2.2): out-of-order data fills the buffer, but
        // the edge already offered stays, so duplicate ACKs carry the same window and count as such.
        // Everything accepted still fits the buffer: the edge was set from free space.
        let window = max(receiveWindow, advertisedRightEdge.map { max(0, $0 - rcvNxt) } ?? 0)
        let scaled = min(65535, window >> Int(receiveScale))
        header.window = UInt16(scaled)
        let edge = rcvNxt + (scaled << Int(receiveScale))
        if advertisedRightEdge.map({ $0 < edge }) ?? true { advertisedRightEdge = edge }
        if useSACK, reassembly.hasOutOfOrder {
            var options: [TCPOption] = []
            if useTimestamps { options += [.noOperation, .noOperation, .timestamps(value: timestamp(now), echoReply: tsRecent)] }
            options += [.noOperation, .noOperation, .sack(reassembly.sackBlocks(limit: useTimestamps ? 3 : 4))]
            header.options = options
        } else if useTimestamps {
            // The common case: NOP NOP timestamps, in an array kept for the next segment. Segments of
            // one burst carry the same stamps and share it untouched; new stamps are written in place
            // once the last header that shared it has been sent.
            let stamps = TCPOption.timestamps(value: timestamp(now), echoReply: tsRecent)
            if timestampOptions.count != 3 {
                timestampOptions = [.noOperation, .noOperation, stamps]
            } else if timestampOptions[2] != stamps {
                timestampOptions[2] = stamps
            }
            header.options = timestampOptions
        }
        let mss = effectiveMSS
        output.append(TCPOutgoing(header: header, payload: payload, segmentSize: payload.readableBytes > mss ? mss : 0))
        counters.segmentsSent += 1
        // Whatever path sent it (first transmission, retransmission with a different segment size,
        // probe), sndMax covers every sequence number that has left.
        let end = seq + payload.readableBytes + (flags.contains(.fin) ? 1 : 0)
        if sndMax < end { sndMax = end }
        if timers.unacknowledgedSince == nil, sndUna != sndMax { timers.unacknowledgedSince = now }
        ackNow = false
        ackHeld = false
        timers.delayedACKAt = nil
        unackedSegments = 0
    }

    /// Our timestamp clock (RFC 7323 §5.4): milliseconds, never 0 (0 is taken as no echo).
    func timestamp(_ now: NIODeadline) -> UInt32 {
        let ms = UInt32(truncatingIfNeeded: now.uptimeNanoseconds / 1_000_000)
        return ms == 0 ? 1 : ms
    }

    /// Sends our SYN (or SYN-ACK, answering the peer's) with the options we offer, or, in a SYN-ACK,
    /// those the peer offered too.
    mutating func sendSYN(ack: Bool, now: NIODeadline) {
        var header = TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: iss, acknowledgmentNumber: ack ? rcvNxt : SequenceNumber(0), flags: ack ? [.syn, .ack] : .syn, window: UInt16(min(65535, configuration.receiveBufferSize)))
        let shift: UInt8? = configuration.windowScaling && (!ack || receiveScale > 0 || sendScale > 0) ? configuration.windowScaleShift : nil
        let stamps: (UInt32, UInt32)? = configuration.timestamps && (!ack || useTimestamps) ? (timestamp(now), ack ? tsRecent : 0) : nil
        header.options = TCPHeader.standardOptions(
            maximumSegmentSize: UInt16(clamping: configuration.effectiveMaximumSegmentSize), sackPermitted: configuration.selectiveAcknowledgments && (!ack || useSACK),
            timestamps: stamps, windowScale: ack && sendScale == 0 && receiveScale == 0 ? nil : shift)
        output.append(TCPOutgoing(header: header, payload: ByteBuffer()))
        counters.segmentsSent += 1
        sndNxt = iss + 1
        if sndMax < sndNxt { sndMax = sndNxt }
        if rtt.backoff == 0 { rtt.startTiming(iss, now: now) }
        timers.retransmitAt = now + rtt.rto
    }

    /// Starts fast recovery for a loss (RFC 5681, RFC 6675): the window is reduced once for it; with
    /// SACK holes known they are filled as the pipe allows (no inflation), otherwise the first
    /// segment goes again with the window inflated by the three duplicates.
    mutating func enterFastRecovery(now: NIODeadline) {
        counters.fastRetransmits += 1
        let sack = sackRecovery
        congestion.enterRecovery(recoveryPoint: sndMax, flightSize: flightSize, mss: effectiveMSS, sack: sack)
        if sack {
            scoreboard.highRetransmitted = nil
            fillHoles(now: now)
        } else {
            retransmitFirst(now: now)
        }
    }

    /// Sends the first unacknowledged segment again (with the FIN if it is the last).
    mutating func retransmitFirst(now: NIODeadline) {
        counters.retransmissions += 1
        rtt.forgetSample()
        let size = min(sendQueue.count, effectiveMSS)
        if size > 0 {
            var flags: TCPFlags = [.ack]
            let withFIN = finSent && size == sendQueue.count
            if withFIN { flags.insert(.fin) }
            emit(flags: flags, seq: sndUna, payload: sendQueue.bytes(from: 0, count: size), now: now)
        } else if finSent {
            emit(flags: [.fin, .ack], seq: sndUna, payload: ByteBuffer(), now: now)
        }
        timers.retransmitAt = now + rtt.rto
    }

    /// RFC 6675 §5: retransmits the holes the scoreboard shows below the highest SACKed byte, in
    /// order from HighRxt, while the pipe leaves room in the congestion window.
    mutating func fillHoles(now: NIODeadline) {
        guard !scoreboard.isEmpty else { return }
        let mss = effectiveMSS
        let end = sndUna + sendQueue.count
        var next = scoreboard.retransmissionStart(sndUna: sndUna)
        var budget = max(mss, congestion.cwnd - scoreboard.pipe(sndUna: sndUna, sndMax: sndMax))
        while budget > 0, let hole = scoreboard.nextHole(from: next, maximum: mss, end: end) {
            emit(flags: .ack, seq: hole.seq, payload: sendQueue.bytes(from: hole.seq - sndUna, count: hole.count), now: now)
            counters.retransmissions += 1
            rtt.forgetSample(ifIn: hole.seq, hole.count)
            next = hole.seq + hole.count
            budget -= hole.count
            scoreboard.highRetransmitted = next
        }
        if timers.retransmitAt == nil { timers.retransmitAt = now + rtt.rto }
    }
}
