public import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VPNKitBase

/// The states of RFC 9293 §3.3.2 (LISTEN lives in the stack's listener table).
///
/// The raw value is the state's name as the RFC spells it, such as `SYN-SENT`. A connection opened
/// with `TCPConnection.connect` starts in `synSent`, one made by `TCPConnection.accept` in
/// `synReceived`; data flows in `established`. After our close it passes through `finWait1`,
/// `finWait2` (or `closing` when both sides close at once) and `timeWait`; after the peer's close,
/// through `closeWait` and `lastAck`. `closed` is final: the connection has ended and `closeReason`
/// says why.
public enum TCPState: String, Sendable, Hashable {
    case closed = "CLOSED", synSent = "SYN-SENT", synReceived = "SYN-RECEIVED", established = "ESTABLISHED"
    case finWait1 = "FIN-WAIT-1", finWait2 = "FIN-WAIT-2", closeWait = "CLOSE-WAIT", closing = "CLOSING"
    case lastAck = "LAST-ACK", timeWait = "TIME-WAIT"
}

/// A segment as the connection sees it: the parsed header and the payload.
public struct TCPIncoming: Sendable {
    /// The parsed header, options included.
    public var header: TCPHeader
    /// The segment's data; empty for a pure ACK or control segment.
    public var payload: ByteBuffer
    /// Pairs a parsed header with the segment's data.
    public init(header: TCPHeader, payload: ByteBuffer) {
        self.header = header
        self.payload = payload
    }
    /// Payload bytes plus one each for SYN and FIN.
    public var lengthInSequenceSpace: Int { payload.readableBytes + (header.flags.contains(.syn) ? 1 : 0) + (header.flags.contains(.fin) ? 1 : 0) }
    var length: Int { lengthInSequenceSpace }
}

/// A segment to send: a header and the payload (addresses and checksum are the stack's business).
public struct TCPOutgoing: Sendable {
    /// The header to send; its checksum is computed when it is prepended.
    public var header: TCPHeader
    /// The data to send; empty for a pure ACK or control segment.
    public var payload: ByteBuffer
    /// With segmentation offload: the payload bytes per segment the link should cut this one into
    /// (the MSS in effect); 0 when the payload fits one segment.
    public var segmentSize: Int
    /// Pairs a header with the data to send after it.
    public init(header: TCPHeader, payload: ByteBuffer, segmentSize: Int = 0) {
        self.header = header
        self.payload = payload
        self.segmentSize = segmentSize
    }
}

/// Why a connection ended.
public enum TCPCloseReason: Sendable, Hashable {
    /// Both sides closed.
    case closed
    /// The peer reset it.
    case reset
    /// Retransmissions ran out (the peer is gone).
    case timedOut
    /// We aborted it.
    case aborted
    /// The peer refused the connection (RST answering our SYN).
    case refused
}

/// Counters of one connection.
public struct TCPConnectionCounters: Sendable, Hashable {
    /// Segments the connection has emitted, retransmissions and probes included (RSTs built by `abort()` or
    /// for unacceptable ACKs are not counted).
    public var segmentsSent = 0
    /// Segments passed to `receive(_:now:)`, whether accepted or not.
    public var segmentsReceived = 0
    /// Segments sent again: after a timeout, by fast retransmit, to fill SACK holes, or a repeated SYN.
    public var retransmissions = 0
    /// Loss probes (RFC 8985 §7): two round trips without an ACK that brings news, the connection
    /// acts instead of waiting for the retransmission timer. It sends one segment (new data, or the
    /// last one again) whose ACK shows what is missing, starts recovery for a hole the peer's SACKs
    /// already show, or in recovery sends the first hole again.
    public var lossProbes = 0
    /// Times the retransmission timer expired.
    public var timeouts = 0
    /// Times fast recovery started: three duplicate ACKs, three segments' worth SACKed above a hole,
    /// or a loss probe that found a hole the peer's SACKs show.
    public var fastRetransmits = 0
    /// Retransmissions taken as lost during recovery (no ACK for two round trips) and sent again.
    public var lostRetransmissions = 0
    /// Segments whose data had already been received or was already queued out of order.
    public var duplicateSegments = 0
    /// In-window segments that arrived ahead of the next expected sequence number and were queued.
    public var outOfOrderSegments = 0
    /// Challenge ACKs sent (RFC 5961) in answer to a suspicious SYN or RST.
    public var challengeACKs = 0
    /// Segments dropped as outside the receive window or as old duplicates by PAWS.
    public var droppedUnacceptable = 0
    /// Segments dropped whole (data and FIN) because their ACK was not acceptable (RFC 9293
    /// §3.10.7.4, RFC 5961 §5.2): it acknowledged something never sent, or lay further below
    /// SND.UNA than the largest window the peer ever offered (blind data injection).
    public var droppedUnacceptableACK = 0
    /// Probes sent while the peer advertised a zero window.
    public var zeroWindowProbes = 0

    /// All zero (the counters of a connection that has done nothing yet).
    public init() {}
}

/// One TCP connection as a state machine (RFC 9293): segments, application calls and the time go in;
/// segments to send, data to read and state changes come out. No I/O, no clock.
public struct TCPConnection: Sendable {
    /// The settings the connection was opened with.
    public let configuration: TCPConfiguration
    /// Our port.
    public let localPort: UInt16
    /// The peer's port.
    public let remotePort: UInt16
    /// The current RFC 9293 state; `TCPState.closed` once the connection has ended.
    public private(set) var state: TCPState
    /// Event counts for this connection since it was opened.
    public private(set) var counters = TCPConnectionCounters()
    /// Why the connection ended; nil while it is still open.
    public private(set) var closeReason: TCPCloseReason?

    // Send sequence space.
    private let iss: SequenceNumber
    private var sndUna: SequenceNumber
    private var sndNxt: SequenceNumber
    /// The highest sequence number sent so far (retransmission after a timeout rewinds sndNxt).
    private var sndMax: SequenceNumber
    private var sndWnd = 0 {
        didSet { if sndWnd > maximumSendWindow { maximumSendWindow = sndWnd } }
    }
    /// The largest window the peer ever offered (for silly window avoidance).
    private var maximumSendWindow = 0
    private var sndWl1 = SequenceNumber(0)
    private var sndWl2 = SequenceNumber(0)
    private var sendScale: UInt8 = 0
    private var peerMSS = 536
    /// Bytes from sndUna on (sent and not acknowledged, then unsent).
    private var sendQueue = SendQueue()
    private var finQueued = false
    private var finSent = false
    /// Whether the peer has acknowledged our SYN (its sequence number holds no byte).
    private var synAcknowledged = false

    // Receive sequence space.
    private var irs = SequenceNumber(0)
    private var rcvNxt = SequenceNumber(0)
    private var receiveScale: UInt8 = 0
    /// The right edge we last advertised; never moved left (RFC 9293 §3.8.6.2.2). Nil until the
    /// first advertisement (comparing with an arbitrary start value breaks across the 2^32 wrap).
    private var advertisedRightEdge: SequenceNumber?
    /// Received bytes in order, not yet read: slices of the segments they came in, or, for sparse
    /// payloads (see `deliver`), copies gathered into buffers of our own.
    private var readable: [ByteBuffer] = []
    private var readableBytes = 0
    /// Whether the last piece of `readable` is one of our own gathering buffers, which takes the
    /// next sparse payload.
    private var lastPieceGathers = false
    private var outOfOrder: [(seq: SequenceNumber, data: ByteBuffer)] = []
    private var outOfOrderBytes = 0
    private var lastOutOfOrder: SequenceNumber?
    private var finReceived = false

    // Options in use.
    private var useTimestamps = false
    private var useSACK = false
    private var tsRecent: UInt32 = 0

    // Timers and RTT.
    private var retransmitAt: NIODeadline?
    private var rto: TimeAmount
    private var srtt: TimeAmount?
    private var rttvar: TimeAmount = .zero
    private var backoff = 0
    private var rttSample: (seq: SequenceNumber, sent: NIODeadline)?
    private var delayedACKAt: NIODeadline?
    private var unackedSegments = 0
    private var ackNow = false
    /// `ackNow` was left for `sendHeldACK(now:)` (see `receive(_:now:holdingACK:)`).
    private var ackHeld = false
    private var timeWaitUntil: NIODeadline?
    private var persistAt: NIODeadline?
    private var persistBackoff = 0
    private var keepAliveAt: NIODeadline?
    private var keepAliveProbesSent = 0
    /// Since when the oldest unacknowledged byte has been waiting (for the user timeout).
    private var unacknowledgedSince: NIODeadline?
    private var challengeWindowStart: NIODeadline?
    private var challengesInWindow = 0
    private var limitedTransmitAllowance = 0
    /// When a loss probe goes out (RFC 8985 §7), and how many went out that no ACK has answered.
    private var lossProbeAt: NIODeadline?
    private var lossProbesUnanswered = 0

    // CUBIC state (RFC 9438), in bytes and seconds.
    private var cubicWMax: Double = 0
    private var cubicK: Double = 0
    private var cubicEpoch: NIODeadline?
    private var cubicWEst: Double = 0

    // Congestion control (NewReno).
    private var cwnd: Int
    private var ssthresh = Int.max
    private var duplicateACKs = 0
    private var recover: SequenceNumber?
    /// RFC 6675 scoreboard: ranges above sndUna the peer has SACKed, sorted and merged (bounded).
    private var sacked: [(left: SequenceNumber, right: SequenceNumber)] = []
    /// HighRxt: the highest sequence number retransmitted in this recovery.
    private var highRetransmitted: SequenceNumber?

    private var output: [TCPOutgoing] = []
    /// The options of the last segment with timestamps only, reused (see `emit`).
    private var timestampOptions: [TCPOption] = []

    /// Active open: the connection starts in SYN-SENT; `takeOutput()` holds the SYN.
    public static func connect(localPort: UInt16, remotePort: UInt16, iss: SequenceNumber, configuration: TCPConfiguration, now: NIODeadline) -> TCPConnection {
        var c = TCPConnection(localPort: localPort, remotePort: remotePort, iss: iss, configuration: configuration, state: .synSent)
        c.sendSYN(ack: false, now: now)
        return c
    }

    /// Passive open from a SYN to a listening port: SYN-RECEIVED with the SYN-ACK in `takeOutput()`.
    public static func accept(_ syn: TCPIncoming, localPort: UInt16, iss: SequenceNumber, configuration: TCPConfiguration, now: NIODeadline) -> TCPConnection {
        var c = TCPConnection(localPort: localPort, remotePort: syn.header.sourcePort, iss: iss, configuration: configuration, state: .synReceived)
        c.irs = syn.header.sequenceNumber
        c.rcvNxt = syn.header.sequenceNumber + 1
        c.negotiate(syn.header)
        c.sndWnd = Int(syn.header.window)  // never scaled in a SYN
        c.sndWl1 = syn.header.sequenceNumber
        c.sendSYN(ack: true, now: now)
        return c
    }

    private init(localPort: UInt16, remotePort: UInt16, iss: SequenceNumber, configuration: TCPConfiguration, state: TCPState) {
        self.configuration = configuration
        self.localPort = localPort
        self.remotePort = remotePort
        self.iss = iss
        self.sndUna = iss
        self.sndNxt = iss
        self.sndMax = iss
        self.state = state
        self.rto = configuration.initialRTO
        self.cwnd = configuration.initialWindowSegments * configuration.effectiveMaximumSegmentSize
    }

    // MARK: - Application interface

    /// Hands each queued segment to `body` in order (which may take its payload), then empties the
    /// queue keeping its storage: the per-segment path allocates no array.
    public mutating func drainOutput(_ body: (inout TCPOutgoing) -> Void) {
        guard !output.isEmpty else { return }
        for index in output.indices { body(&output[index]) }
        output.removeAll(keepingCapacity: true)
    }

    /// Segments to transmit, in order.
    public mutating func takeOutput() -> [TCPOutgoing] {
        // Nothing to hand over is the common case (a read, a write that only queued): no allocation.
        guard !output.isEmpty else { return [] }
        var taken: [TCPOutgoing] = []
        swap(&taken, &output)
        return taken
    }

    /// What a stack checks after every segment, in one call. `mutating` only so that a connection
    /// kept in a class is read in place: each getter called on such a connection copies the whole
    /// struct first (retaining every buffer in it), and this is asked after every segment.
    public mutating func status() -> TCPConnectionStatus {
        TCPConnectionStatus(
            state: state, bytesToRead: readableBytes, isReadClosed: isReadClosed, writableBytes: writableBytes,
            unacknowledgedBytes: sendQueue.count, hasHeldACK: ackHeld)
    }

    /// Bytes waiting to be read.
    public var bytesToRead: Int { readableBytes }
    /// The next sequence number expected from the peer.
    public var receiveNext: SequenceNumber { rcvNxt }
    /// Whether the peer has closed its side and everything before its FIN has been read.
    public var isReadClosed: Bool { finReceived && readableBytes == 0 }
    /// Room left in the send buffer.
    public var writableBytes: Int { state.canSend ? max(0, configuration.sendBufferSize - sendQueue.count) : 0 }
    /// Bytes queued and not yet acknowledged.
    public var unacknowledgedBytes: Int { sendQueue.count }
    /// Pieces of received data held (in order and out of order), each a buffer or a slice of one:
    /// what the per-piece overhead is charged for.
    public var receivedPieces: Int { readable.count + outOfOrder.count }

    /// Takes up to `maximum` received bytes, in order; reading opens the window.
    public mutating func read(maximum: Int = .max, now: NIODeadline) -> ByteBuffer? {
        guard readableBytes > 0 else { return nil }
        var result: ByteBuffer
        if readable[0].readableBytes <= maximum {
            result = readable.removeFirst()
        } else {
            result = readable[0].readSlice(length: maximum)!
        }
        // Gather more chunks while they fit.
        while let next = readable.first, result.readableBytes + next.readableBytes <= maximum {
            var chunk = readable.removeFirst()
            result.writeBuffer(&chunk)
        }
        if readable.isEmpty { lastPieceGathers = false }
        taken(result.readableBytes, now: now)
        return result
    }

    /// Appends up to `maximum` received bytes to `chunks`, in order, in the pieces they arrived in:
    /// no piece is copied to join it to the next (as `read` does), so a burst of segments is taken
    /// in one call without a copy. Reading opens the window. Returns the bytes taken.
    @discardableResult
    public mutating func readChunks(maximum: Int = .max, now: NIODeadline, into chunks: inout [ByteBuffer]) -> Int {
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
        if total > 0 { taken(total, now: now) }
        return total
    }

    /// `count` received bytes were handed to the application: the window opens, and when it grew by
    /// two segments or half the buffer the peer hears of it at once (SWS avoidance, RFC 1122).
    private mutating func taken(_ count: Int, now: NIODeadline) {
        let before = receiveWindow
        readableBytes -= count
        let after = receiveWindow
        if state.canReceive, after - before >= min(2 * configuration.effectiveMaximumSegmentSize, configuration.receiveBufferSize / 2) || (before < configuration.effectiveMaximumSegmentSize && after >= configuration.effectiveMaximumSegmentSize) {
            ackNow = true
            flush(now: now)
        }
    }

    /// Queues bytes to send; returns how many were accepted (the send buffer is bounded).
    @discardableResult
    public mutating func write(_ data: ByteBuffer, now: NIODeadline) -> Int {
        guard state.canSend, !finQueued else { return 0 }
        let room = configuration.sendBufferSize - sendQueue.count
        let n = min(room, data.readableBytes)
        guard n > 0 else { return 0 }
        sendQueue.append(data.getSlice(at: data.readerIndex, length: n)!)
        flush(now: now)
        return n
    }

    /// Closes our side: a FIN after the queued data.
    public mutating func close(now: NIODeadline) {
        switch state {
        case .synSent:
            enterClosed(.closed)
        case .synReceived, .established:
            finQueued = true
            state = .finWait1
            flush(now: now)
        case .closeWait:
            finQueued = true
            state = .lastAck
            flush(now: now)
        default:
            break
        }
    }

    /// Aborts: a RST to the peer (in synchronized states) and CLOSED.
    public mutating func abort() {
        if state.isSynchronized || state == .synReceived {
            let h = TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: sndNxt, acknowledgmentNumber: rcvNxt, flags: [.rst, .ack], window: 0)
            output.append(TCPOutgoing(header: h, payload: ByteBuffer()))
        }
        enterClosed(.aborted)
    }

    // MARK: - Timers

    /// The earliest time `poll(now:)` has work (retransmission, loss probe, delayed ACK, zero-window
    /// probe, keep-alive, user timeout or end of TIME-WAIT); nil when no timer runs.
    public var nextDeadline: NIODeadline? {
        // `mutating` for the reason `status()` is: a stack asks this after every segment, of a
        // connection kept in a class. No array either.
        mutating get {
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
            if let timeout = configuration.userTimeout, let since = unacknowledgedSince { consider(since + timeout) }
            return earliest
        }
    }

    /// Runs the timers due at `now`: it may retransmit, send a delayed ACK, probe, or close the connection
    /// (end of TIME-WAIT, too many retransmissions, keep-alive or user timeout). New segments are queued for
    /// `takeOutput()`.
    public mutating func poll(now: NIODeadline) {
        if let t = timeWaitUntil, now >= t {
            timeWaitUntil = nil
            enterClosed(.closed)
            return
        }
        if let t = delayedACKAt, now >= t {
            delayedACKAt = nil
            ackNow = true
        }
        if let t = retransmitAt, now >= t {
            lossProbeAt = nil
            retransmitTimeout(now: now)
        } else if let t = lossProbeAt, now >= t {
            lossProbeAt = nil
            sendLossProbe(now: now)
        }
        if let t = persistAt, now >= t {
            persistAt = nil
            probeZeroWindow(now: now)
        }
        if let timeout = configuration.userTimeout, let since = unacknowledgedSince, now - since >= timeout {
            abort()
            closeReason = .timedOut
            return
        }
        if let t = keepAliveAt, now >= t, state.isSynchronized {
            if keepAliveProbesSent >= configuration.keepAliveProbes {
                enterClosed(.timedOut)
                return
            }
            // A probe: an ACK for one byte before sndUna, which the peer must answer (RFC 1122 §4.2.3.6).
            keepAliveProbesSent += 1
            emit(flags: .ack, seq: sndUna + (-1), payload: ByteBuffer(), now: now)
            keepAliveAt = now + configuration.keepAliveInterval
        }
        flush(now: now)
    }

    /// RFC 5961 §7: challenge ACKs, at most `challengeACKsPerSecond`.
    private mutating func challengeACK(now: NIODeadline) {
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

    // MARK: - Input

    /// Processes one segment from the peer (RFC 9293 §3.10.7): acknowledgments, data, FIN and RST, with the
    /// RFC 5961 and PAWS checks. The caller has already matched it to this connection and verified its
    /// checksum; replies are queued for `takeOutput()`.
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
        keepAliveProbesSent = 0
        if let idle = configuration.keepAliveIdle { keepAliveAt = now + idle }

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
        flush(now: now, holdingACK: holdingACK && outOfOrder.isEmpty)
    }

    /// Sends the ACK `receive(_:now:holdingACK:)` held, unless a segment sent since carried it.
    public mutating func sendHeldACK(now: NIODeadline) {
        guard ackHeld else { return }
        ackHeld = false
        guard state != .closed else { return }
        emit(flags: .ack, seq: sndNxt, payload: ByteBuffer(), now: now)
    }

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
            if let sample = rttSample, backoff == 0 { updateRTT(now - sample.sent) }
            rttSample = nil
            retransmitAt = nil
            backoff = 0
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

    private mutating func negotiate(_ syn: TCPHeader) {
        if let mss = syn.maximumSegmentSize { peerMSS = max(64, Int(mss)) }
        if configuration.windowScaling, let shift = syn.windowScale {
            sendScale = min(14, shift)
            receiveScale = configuration.windowScaleShift
        } else {
            sendScale = 0
            receiveScale = 0
        }
        useTimestamps = configuration.timestamps && syn.timestamps != nil
        if let ts = syn.timestamps { tsRecent = ts.value }
        useSACK = configuration.selectiveAcknowledgments && syn.sackPermitted
    }

    private var finAcknowledged: Bool { finSent && sndUna == sndMax }

    /// Takes the acknowledgment, SACK blocks and window of `h`. Returns false, having changed
    /// nothing but the ACK owed, when the ACK is not acceptable: the caller then drops the segment.
    @discardableResult
    private mutating func processACK(_ h: TCPHeader, carriesData: Bool, now: NIODeadline) -> Bool {
        let ack = h.acknowledgmentNumber
        if sndMax < ack {
            // ACK for something not yet sent (RFC 9293 §3.10.7.4): ACK back and drop the segment.
            ackNow = true
            return false
        }
        if ack < sndUna + (-maximumSendWindow) {
            // RFC 5961 §5.2: older than any window the peer was offered, so not from the peer's
            // view of this connection (blind data injection): a challenge ACK, and drop.
            challengeACK(now: now)
            return false
        }
        let window = Int(h.window) << Int(sendScale)
        var newlySACKed = false
        if useSACK {
            let blocks = h.sackBlocks
            if !blocks.isEmpty || !sacked.isEmpty {
                // New data SACKed: what the merged ranges cover above the new ACK grew.
                let before = sackedBytes(above: ack)
                updateScoreboard(blocks, ack: ack)
                newlySACKed = sackedBytes > before
                // The timed segment SACKed: a round trip measured while the cumulative ACK is held
                // at a hole (timestamps cannot give one then: the peer echoes the segment before it).
                if newlySACKed, let sample = rttSample, sacked.contains(where: { !(sample.seq < $0.left) && sample.seq < $0.right }) {
                    updateRTT(now - sample.sent)
                    rttSample = nil
                }
            }
        }
        let acknowledgedNew = sndUna < ack
        if sndUna < ack {
            let acked = ack - sndUna
            var dataAcked = acked
            // Karn's rule for a repeated SYN: its ACK, even its echoed timestamp, may answer either
            // copy (the peer echoes the last one it took in order), so the handshake gives no sample.
            var timed = true
            if !synAcknowledged {
                synAcknowledged = true
                dataAcked -= 1
                timed = backoff == 0 && counters.retransmissions == 0
            }
            if finSent && ack == sndMax { dataAcked -= 1 }
            sendQueue.removeFirst(max(0, min(dataAcked, sendQueue.count)))
            sndUna = ack
            if sndNxt < sndUna { sndNxt = sndUna }
            duplicateACKs = 0
            limitedTransmitAllowance = 0
            unacknowledgedSince = sndUna == sndMax ? nil : now
            // RTT: timestamps (RFC 7323) or the one timed segment (Karn: never a retransmitted one).
            if !timed {
                rttSample = nil
            } else if useTimestamps, let ts = h.timestamps, ts.echoReply != 0 {
                let sent = Int64(ts.echoReply)
                let nowMS = Int64(truncatingIfNeeded: UInt32(truncatingIfNeeded: now.uptimeNanoseconds / 1_000_000))
                let delta = (nowMS - sent) & 0xFFFF_FFFF
                if delta < 60_000 { updateRTT(.milliseconds(delta)) }
            } else if let sample = rttSample, sample.seq < ack || sample.seq == ack {
                updateRTT(now - sample.sent)
                rttSample = nil
            }
            backoff = 0
            // Congestion control.
            if let r = recover, r < ack || r == ack {
                // Full ACK: leave fast recovery (RFC 6582 / RFC 6675).
                cwnd = ssthresh
                recover = nil
                highRetransmitted = nil
            } else if recover != nil, sackRecovery {
                // RFC 6675: fill holes while the pipe has room.
                fillHoles(now: now)
            } else if recover != nil {
                // Partial ACK: retransmit the next hole, deflate.
                retransmitFirst(now: now)
                cwnd = max(configuration.effectiveMaximumSegmentSize, cwnd - acked + configuration.effectiveMaximumSegmentSize)
            } else if cwnd < ssthresh {
                cwnd += min(acked, effectiveMSS)
            } else if configuration.congestionControl == .cubic {
                cubicIncrease(acked: acked, now: now)
            } else {
                cwnd += max(1, effectiveMSS * effectiveMSS / max(1, cwnd))
            }
            retransmitAt = sndUna == sndMax ? nil : now + rto
            if finSent && sndUna == sndMax {
                switch state {
                case .finWait1: state = .finWait2
                case .closing:
                    state = .timeWait
                    enterTimeWait(now: now)
                case .lastAck:
                    enterClosed(.closed)
                    return true
                default: break
                }
            }
        } else if ack == sndUna, sndUna != sndMax, h.flags == .ack || h.flags == [.ack, .psh],
                  useSACK ? newlySACKed : window == sndWnd && !carriesData {
            // A duplicate ACK (RFC 5681 §2: no data, same window). With SACK, one that SACKs new
            // data (RFC 6675 §2), whether or not the window moved; one that says nothing new (a
            // duplicate segment arriving, as after a spurious retransmission) does not count.
            duplicateACKs += 1
            // Loss: three duplicates, or three segments' worth SACKed above the hole (RFC 6675 IsLost).
            if duplicateACKs >= 3 || sackedBytes >= 3 * effectiveMSS, recover == nil {
                enterFastRecovery(now: now)
            } else if recover != nil, sackRecovery {
                fillHoles(now: now)
            } else if duplicateACKs > 3, recover != nil {
                cwnd += effectiveMSS
            } else if duplicateACKs < 3, recover == nil, configuration.limitedTransmit {
                // RFC 3042: each of the first two duplicate ACKs lets one new segment out.
                // One new full segment per duplicate ACK, in flight staying within cwnd + 2 MSS.
                let mss = effectiveMSS
                limitedTransmitAllowance = max(0, min(cwnd + 2 * mss, (sndNxt - sndUna) + mss) - cwnd)
            }
        }
        if newlySACKed || acknowledgedNew { lossProbesUnanswered = 0 }
        // Window update (RFC 9293 §3.10.7.4).
        if sndWl1 < h.sequenceNumber || (sndWl1 == h.sequenceNumber && !(ack < sndWl2)) {
            let wasClosed = sndWnd == 0
            sndWnd = window
            sndWl1 = h.sequenceNumber
            sndWl2 = ack
            if sndWnd > 0 {
                persistAt = nil
                persistBackoff = 0
                if wasClosed, sndUna != sndMax { retransmitAt = now + rto }
            }
        }
        // A closed window is probed (persist timer), not retransmitted into: the peer is alive and
        // answering, so no retransmission count may run out (RFC 9293 §3.8.6.1).
        if sndWnd == 0, sendQueue.count > 0 || (finQueued && !finSent) {
            retransmitAt = nil
            backoff = 0
            if persistAt == nil { persistAt = now + persistInterval }
        }
        return true
    }

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
            deliver(data)
            // Pull contiguous out-of-order data.
            while let first = outOfOrder.first, !(rcvNxt < first.seq) {
                outOfOrder.removeFirst()
                outOfOrderBytes -= first.data.readableBytes
                let end = first.seq + first.data.readableBytes
                if rcvNxt < end {
                    var rest = first.data
                    rest.moveReaderIndex(forwardBy: rcvNxt - first.seq)
                    deliver(rest)
                }
            }
            // A segment larger than the MSS (the link merged or never cut it) counts as the segments it
            // stands for: every second full-sized segment's worth is acknowledged at once.
            unackedSegments += max(1, data.readableBytes / max(1, effectiveMSS))
            if !outOfOrder.isEmpty || !configuration.delayedACK || unackedSegments >= 2 || data.readableBytes < effectiveMSS {
                ackNow = true
            } else if delayedACKAt == nil {
                delayedACKAt = now + configuration.delayedACKTimeout
            }
        } else {
            counters.outOfOrderSegments += 1
            insertOutOfOrder(seq: seq, data: data)
            lastOutOfOrder = seq
            ackNow = true  // a duplicate ACK at once (RFC 5681 §4.2)
        }
    }

    /// Queues in-order data for reading. A payload that fills at least half of its buffer is kept
    /// as it is, a slice (no copy: bulk data). A sparse one is copied into the gathering buffer at the
    /// end of the queue (a new one when there is none or it is full), so that tiny segments neither
    /// pin a frame buffer each nor make a piece each: what the queue holds stays within about twice
    /// its bytes, plus `pieceOverhead` per piece, whatever the segment sizes.
    private mutating func deliver(_ data: ByteBuffer) {
        readableBytes += data.readableBytes
        rcvNxt = rcvNxt + data.readableBytes
        readable.appendGathering(data, lastGathers: &lastPieceGathers)
    }

    private mutating func insertOutOfOrder(seq: SequenceNumber, data: ByteBuffer) {
        guard outOfOrder.count < configuration.maximumOutOfOrderSegments else { return }
        var index = outOfOrder.endIndex
        while index > 0, seq < outOfOrder[index - 1].seq { index -= 1 }
        // Drop exact or fully covered duplicates; partial overlaps are kept (delivery trims them).
        if index > 0, let prev = Optional(outOfOrder[index - 1]), !((prev.seq + prev.data.readableBytes) < (seq + data.readableBytes)) {
            counters.duplicateSegments += 1
            return
        }
        outOfOrder.insert((seq, data.compactedIfSparse()), at: index)
        outOfOrderBytes += data.readableBytes
    }

    // MARK: - Output

    /// The payload that fits one segment now: the MSS less the options this segment will carry
    /// (RFC 6691: the MSS excludes options; timestamps take 12 bytes, SACK blocks 4 + 8 each).
    private var effectiveMSS: Int {
        var options = useTimestamps ? 12 : 0
        if useSACK, !outOfOrder.isEmpty { options += 4 + 8 * min(sackBlockCount, useTimestamps ? 3 : 4) }
        return max(1, min(peerMSS, configuration.effectiveMaximumSegmentSize) - options)
    }

    /// The most payload one new segment may carry: the MSS, or with segmentation offload as many
    /// whole MSS as fit the offload size.
    private var sendSegmentLimit: Int {
        let mss = effectiveMSS
        guard let offload = configuration.segmentationOffloadBytes, offload > mss else { return mss }
        return offload - offload % mss
    }

    /// Distinct SACK blocks the out-of-order queue makes.
    private var sackBlockCount: Int {
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
    private var flightSize: Int { sndMax - sndUna }

    /// What each piece of data held (in order or out of order) is charged against the receive
    /// buffer besides its bytes: about what the piece itself costs (its buffer's header and
    /// allocation, its place in the queue), so that a peer's tiny segments close the window by
    /// what they really hold.
    static let pieceOverhead = 128
    /// Sparse payloads are gathered into buffers of at least this size, and at most `gatherLimit`.
    static let gatherCapacity = 256
    static let gatherLimit = 65536

    /// The window we can advertise: the free part of the receive buffer, the pieces' overhead
    /// counted.
    private var receiveWindow: Int {
        let pieces = (readable.count + outOfOrder.count) * Self.pieceOverhead
        return max(0, configuration.receiveBufferSize - readableBytes - outOfOrderBytes - pieces)
    }
    private var receiveWindowRightEdge: SequenceNumber {
        let edge = rcvNxt + receiveWindow
        guard let advertised = advertisedRightEdge, edge < advertised else { return edge }
        return advertised
    }

    private mutating func flush(now: NIODeadline, holdingACK: Bool = false) {
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

    /// Schedules a loss probe (RFC 8985 §7.2) two round trips out while data is in flight and no
    /// ACK brings news, doubling for each probe left unanswered (at most three), and only while it
    /// comes before the retransmission timer. A single segment in flight outside recovery waits for
    /// the peer's delayed ACK too.
    private mutating func armLossProbe(now: NIODeadline) {
        guard useSACK, configuration.lossProbes, backoff == 0, lossProbesUnanswered < 3, sndUna != sndMax, sndNxt == sndMax,
              state == .established || state == .closeWait, let srtt, let retransmitAt
        else {
            lossProbeAt = nil
            return
        }
        if let at = lossProbeAt, now < at, lossProbesUnanswered > 0 { return }
        var timeout = max(srtt * 2, .milliseconds(2)) * Int64(1 << lossProbesUnanswered)
        if recover == nil, sndMax - sndUna <= effectiveMSS { timeout = timeout + .milliseconds(200) }
        let at = now + timeout
        lossProbeAt = at < retransmitAt ? at : nil
    }

    /// The probe. In recovery, the first hole's retransmission is taken as lost and goes again.
    /// Otherwise, if the peer has SACKed data above a hole, the hole is lost (nothing came to fill it
    /// in two round trips) and recovery starts; else one new segment if the window allows, or the
    /// last segment again, so that the ACK it draws shows what is missing.
    private mutating func sendLossProbe(now: NIODeadline) {
        guard state.isSynchronized, sndUna != sndMax, sndNxt == sndMax else { return }
        counters.lossProbes += 1
        lossProbesUnanswered += 1
        if recover != nil {
            let end = sacked.first.map { $0.left - sndUna } ?? sendQueue.count
            let size = min(effectiveMSS, end, sendQueue.count)
            guard size > 0 else { return }
            emit(flags: .ack, seq: sndUna, payload: sendQueue.bytes(from: 0, count: size), now: now)
            counters.retransmissions += 1
            counters.lostRetransmissions += 1
            forgetRTTSample(ifIn: sndUna, size)
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
            forgetRTTSample(ifIn: sndUna + start, size)
        }
    }

    /// Starts fast recovery for a loss (RFC 5681, RFC 6675): the window is reduced once for it; with
    /// SACK holes known they are filled as the pipe allows (no inflation), otherwise the first
    /// segment goes again with the window inflated by the three duplicates.
    private mutating func enterFastRecovery(now: NIODeadline) {
        counters.fastRetransmits += 1
        ssthresh = reducedWindow(now: now)
        recover = sndMax
        if sackRecovery {
            cwnd = ssthresh
            highRetransmitted = nil
            fillHoles(now: now)
        } else {
            cwnd = ssthresh + 3 * effectiveMSS
            retransmitFirst(now: now)
        }
    }

    private mutating func sendData(now: NIODeadline) {
        guard state.isSynchronized || state == .closeWait || state == .lastAck || state == .finWait1 || state == .closing else { return }
        while true {
            // Resending after a timeout: what the peer SACKed is skipped.
            if sndNxt < sndMax { for range in sacked where !(sndNxt < range.left) && sndNxt < range.right { sndNxt = range.right } }
            let offset = sndNxt - sndUna
            let unsent = sendQueue.count - offset
            let window = min(sndWnd, cwnd + limitedTransmitAllowance)
            let outstanding = recover != nil && sackRecovery ? pipe : sndNxt - sndUna
            let usable = min(window - outstanding, sndWnd - (sndNxt - sndUna))
            if unsent > 0 {
                if sndWnd == 0 {
                    if persistAt == nil && retransmitAt == nil { persistAt = now + rto }
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
                if sndNxt < sndMax, let next = sacked.first(where: { sndNxt < $0.left }), next.left - sndNxt < size { size = next.left - sndNxt }
                let payload = sendQueue.bytes(from: offset, count: size)
                var flags: TCPFlags = [.ack]
                let last = offset + size == sendQueue.count
                if last { flags.insert(.psh) }
                let withFIN = last && finQueued && !finSent
                if withFIN { flags.insert(.fin) }
                emit(flags: flags, seq: sndNxt, payload: payload, now: now)
                if rttSample == nil, sndNxt == sndMax { rttSample = (sndNxt, now) }
                sndNxt = sndNxt + size + (withFIN ? 1 : 0)
                if withFIN { finSent = true }
                if sndMax < sndNxt { sndMax = sndNxt }
                if retransmitAt == nil { retransmitAt = now + rto }
                continue
            }
            if finQueued && !finSent {
                emit(flags: [.fin, .ack], seq: sndNxt, payload: ByteBuffer(), now: now)
                finSent = true
                sndNxt = sndNxt + 1
                if sndMax < sndNxt { sndMax = sndNxt }
                if retransmitAt == nil { retransmitAt = now + rto }
            } else if finQueued && finSent && sndNxt < sndMax {
                // After a timeout rewound sndNxt past all data: resend the FIN.
                emit(flags: [.fin, .ack], seq: sndNxt, payload: ByteBuffer(), now: now)
                sndNxt = sndMax
            }
            return
        }
    }

    private mutating func emit(flags: TCPFlags, seq: SequenceNumber, payload: ByteBuffer, now: NIODeadline) {
        var header = TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: seq, acknowledgmentNumber: rcvNxt, flags: flags, window: 0)
        // The window never shrinks (RFC 9293 §3.8.6.2.2): out-of-order data fills the buffer, but
        // the edge already offered stays, so duplicate ACKs carry the same window and count as such.
        // Everything accepted still fits the buffer: the edge was set from free space.
        let window = max(receiveWindow, advertisedRightEdge.map { max(0, $0 - rcvNxt) } ?? 0)
        let scaled = min(65535, window >> Int(receiveScale))
        header.window = UInt16(scaled)
        let edge = rcvNxt + (scaled << Int(receiveScale))
        if advertisedRightEdge.map({ $0 < edge }) ?? true { advertisedRightEdge = edge }
        if useSACK, !outOfOrder.isEmpty {
            var options: [TCPOption] = []
            if useTimestamps { options += [.noOperation, .noOperation, .timestamps(value: timestamp(now), echoReply: tsRecent)] }
            options += [.noOperation, .noOperation, .sack(sackBlocks(limit: useTimestamps ? 3 : 4))]
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
        if unacknowledgedSince == nil, sndUna != sndMax { unacknowledgedSince = now }
        ackNow = false
        ackHeld = false
        delayedACKAt = nil
        unackedSegments = 0
    }

    private func timestamp(_ now: NIODeadline) -> UInt32 {
        let ms = UInt32(truncatingIfNeeded: now.uptimeNanoseconds / 1_000_000)
        return ms == 0 ? 1 : ms
    }

    /// SACK blocks from the out-of-order queue, the most recently received first (RFC 2018 §4).
    private func sackBlocks(limit: Int) -> [SACKBlock] {
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

    private mutating func sendSYN(ack: Bool, now: NIODeadline) {
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
        if rttSample == nil && backoff == 0 { rttSample = (iss, now) }
        retransmitAt = now + rto
    }

    private mutating func retransmitFirst(now: NIODeadline) {
        counters.retransmissions += 1
        rttSample = nil
        let size = min(sendQueue.count, effectiveMSS)
        if size > 0 {
            var flags: TCPFlags = [.ack]
            let withFIN = finSent && size == sendQueue.count
            if withFIN { flags.insert(.fin) }
            emit(flags: flags, seq: sndUna, payload: sendQueue.bytes(from: 0, count: size), now: now)
        } else if finSent {
            emit(flags: [.fin, .ack], seq: sndUna, payload: ByteBuffer(), now: now)
        }
        retransmitAt = now + rto
    }

    private mutating func retransmitTimeout(now: NIODeadline) {
        counters.timeouts += 1
        backoff += 1
        if backoff > configuration.maximumRetransmissions {
            enterClosed(.timedOut)
            return
        }
        rto = min(configuration.maximumRTO, rto + rto)
        rttSample = nil
        switch state {
        case .synSent:
            counters.retransmissions += 1
            sendSYN(ack: false, now: now)
        case .synReceived:
            counters.retransmissions += 1
            sendSYN(ack: true, now: now)
        default:
            // RFC 5681 §3.1: one segment, from sndUna (go back N).
            ssthresh = reducedWindow(now: now)
            cwnd = effectiveMSS
            recover = nil
            // What the peer SACKed is not sent again after a first timeout (RFC 6675 §5.1 allows
            // keeping it); a second timeout in a row forgets it, in case the peer reneged.
            if backoff > 1 { sacked.removeAll() }
            highRetransmitted = nil
            duplicateACKs = 0
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
            retransmitAt = now + rto
        }
    }

    private mutating func probeZeroWindow(now: NIODeadline) {
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
        persistBackoff += 1
        persistAt = now + persistInterval
    }

    /// Persist timer interval: the RTO, doubled per unanswered probe, between 200 ms and 60 s.
    private var persistInterval: TimeAmount {
        let base = max(TimeAmount.milliseconds(200), rto)
        return min(configuration.maximumRTO, base * Int64(1 << min(persistBackoff, 8)))
    }

    /// Karn's rule for the one timed segment: a retransmission of it makes its ACK ambiguous. Other
    /// segments' retransmissions leave it timed.
    private mutating func forgetRTTSample(ifIn start: SequenceNumber, _ count: Int) {
        if let sample = rttSample, !(sample.seq < start), sample.seq < start + count { rttSample = nil }
    }

    /// SACK-based recovery applies when SACK was negotiated and the peer has reported holes.
    private var sackRecovery: Bool { useSACK && !sacked.isEmpty }

    /// Bytes SACKed above sndUna.
    private var sackedBytes: Int { sackedBytes(above: sndUna) }

    /// Bytes the scoreboard covers above `ack`.
    private func sackedBytes(above ack: SequenceNumber) -> Int {
        sacked.reduce(0) { $0 + max(0, $1.right - ($1.left < ack ? ack : $1.left)) }
    }

    /// RFC 6675 "pipe", approximated: what is outstanding and not SACKed.
    private var pipe: Int { max(0, (sndMax - sndUna) - sackedBytes) }

    /// Merges the peer's SACK blocks (those inside (ack, sndMax]) into the scoreboard and drops what
    /// the cumulative ACK now covers. At most 64 ranges are kept.
    private mutating func updateScoreboard(_ blocks: [SACKBlock], ack: SequenceNumber) {
        for block in blocks {
            var left = SequenceNumber(block.left)
            let right = SequenceNumber(block.right)
            guard left < right, !(sndMax < right) else { continue }
            if left < ack { left = ack }
            guard left < right else { continue }
            sacked.append((left, right))
        }
        sacked.sort { $0.left < $1.left }
        var merged: [(left: SequenceNumber, right: SequenceNumber)] = []
        for range in sacked {
            guard ack < range.right else { continue }
            let left = range.left < ack ? ack : range.left
            if let last = merged.last, !(last.right < left) {
                if last.right < range.right { merged[merged.count - 1].right = range.right }
            } else {
                merged.append((left, range.right))
            }
        }
        // The lowest ranges are the ones recovery works on; a range left out only makes the pipe
        // estimate larger (more cautious) until the peer reports it again.
        sacked = Array(merged.prefix(64))
    }

    /// RFC 6675 §5 NextSeg: retransmit unSACKed holes below the highest SACKed byte, in order,
    /// while the pipe leaves room in the congestion window.
    private mutating func fillHoles(now: NIODeadline) {
        guard let highestSacked = sacked.last?.right else { return }
        var next = highRetransmitted.map { $0 < sndUna ? sndUna : $0 } ?? sndUna
        var budget = max(effectiveMSS, cwnd - pipe)
        for range in sacked {
            guard budget > 0 else { break }
            if next < range.left {
                // A hole [next, range.left).
                while next < range.left, budget > 0 {
                    let size = min(effectiveMSS, range.left - next, sendQueue.count - (next - sndUna))
                    guard size > 0 else { break }
                    emit(flags: .ack, seq: next, payload: sendQueue.bytes(from: next - sndUna, count: size), now: now)
                    counters.retransmissions += 1
                    forgetRTTSample(ifIn: next, size)
                    next = next + size
                    budget -= size
                    highRetransmitted = next
                }
            }
            if next < range.right { next = range.right }
            if !(next < highestSacked) { break }
        }
        if retransmitAt == nil { retransmitAt = now + rto }
    }

    /// The slow-start threshold after a loss: NewReno halves the flight (RFC 5681); CUBIC keeps
    /// β = 0.7 of the window and remembers W_max with fast convergence (RFC 9438 §4.6–4.7).
    private mutating func reducedWindow(now: NIODeadline) -> Int {
        let mss = effectiveMSS
        switch configuration.congestionControl {
        case .newReno:
            return max(flightSize / 2, 2 * mss)
        case .cubic:
            let window = Double(cwnd)
            cubicWMax = window < cubicWMax ? window * (1 + 0.7) / 2 : window
            cubicEpoch = nil
            return max(Int(window * 0.7), 2 * mss)
        }
    }

    /// RFC 9438 §4.2–4.4: grow toward W_cubic(t + RTT), never slower than the Reno-friendly W_est.
    private mutating func cubicIncrease(acked: Int, now: NIODeadline) {
        let mss = Double(effectiveMSS)
        if cubicEpoch == nil {
            cubicEpoch = now
            let wMaxSegments = max(cubicWMax, Double(cwnd)) / mss
            let cwndSegments = Double(cwnd) / mss
            cubicK = cbrt(max(0, wMaxSegments - cwndSegments) / 0.4)
            if cubicWMax < Double(cwnd) { cubicWMax = Double(cwnd) }
            cubicWEst = Double(cwnd)
        }
        let rtt = Double((srtt ?? .milliseconds(100)).nanoseconds) / 1e9
        let t = Double((now - cubicEpoch!).nanoseconds) / 1e9 + rtt
        let target = (0.4 * pow(t - cubicK, 3) + cubicWMax / mss) * mss
        // Reno-friendly estimate (α = 3β/(2−β) ≈ 0.53 segments per RTT).
        cubicWEst += 0.529 * mss * Double(acked) / Double(cwnd)
        let goal = max(target, cubicWEst)
        if goal > Double(cwnd) {
            let increase = (goal - Double(cwnd)) / Double(cwnd) * mss
            cwnd += max(1, Int(min(increase, mss / 2)))
        } else {
            cwnd += max(1, Int(mss * mss / Double(cwnd) / 100))
        }
    }

    private mutating func updateRTT(_ sample: TimeAmount) {
        // RFC 6298 §2.
        if let s = srtt {
            let delta = TimeAmount.nanoseconds(abs((s - sample).nanoseconds))
            rttvar = .nanoseconds((3 * rttvar.nanoseconds + delta.nanoseconds) / 4)
            srtt = .nanoseconds((7 * s.nanoseconds + sample.nanoseconds) / 8)
        } else {
            srtt = sample
            rttvar = .nanoseconds(sample.nanoseconds / 2)
        }
        let candidate = srtt! + max(.milliseconds(1), rttvar * 4)
        rto = min(configuration.maximumRTO, max(configuration.minimumRTO, candidate))
    }

    private mutating func enterTimeWait(now: NIODeadline) {
        retransmitAt = nil
        lossProbeAt = nil
        persistAt = nil
        keepAliveAt = nil
        unacknowledgedSince = nil
        timeWaitUntil = now + configuration.timeWait
    }

    private mutating func enterClosed(_ reason: TCPCloseReason) {
        state = .closed
        if closeReason == nil { closeReason = reason }
        retransmitAt = nil
        lossProbeAt = nil
        delayedACKAt = nil
        persistAt = nil
        timeWaitUntil = nil
        keepAliveAt = nil
        unacknowledgedSince = nil
    }

    /// The connection's variables, for diagnostics.
    public var debugDescription: String {
        "\(state.rawValue) una=\(sndUna) nxt=\(sndNxt) max=\(sndMax) wnd=\(sndWnd) cwnd=\(cwnd) ssthresh=\(ssthresh) queue=\(sendQueue.count) rcvNxt=\(rcvNxt) rwnd=\(receiveWindow) ooo=\(outOfOrder.count) readable=\(readableBytes) rto=\(rto) backoff=\(backoff) rtx=\(String(describing: retransmitAt)) persist=\(String(describing: persistAt)) recover=\(String(describing: recover)) dup=\(duplicateACKs) fin=\(finQueued)/\(finSent)"
    }

    /// Smoothed RTT and current RTO, for diagnostics.
    public var roundTrip: (smoothed: TimeAmount?, rto: TimeAmount) { (srtt, rto) }
    /// The congestion window in bytes, for diagnostics.
    public var congestionWindow: Int { cwnd }
}

extension TCPState {
    var isSynchronized: Bool {
        switch self {
        case .closed, .synSent, .synReceived: return false
        default: return true
        }
    }
    var canSend: Bool { self == .established || self == .closeWait || self == .synReceived || self == .synSent }
    var canReceive: Bool { self == .established || self == .finWait1 || self == .finWait2 || self == .synReceived }
}

/// The bytes of the send buffer from sndUna on, as a list of slices. A segment that lies within one
/// of them is a slice of it (no copy: a link that gathers sends it as is, any other copies it once
/// when the headers go in front); one that spans two is copied into a buffer of its own. Sparse
/// writes (a few bytes read into a large buffer) are copied into a gathering buffer of our own, as
/// received data is, so what the queue pins stays within about twice its bytes.
struct SendQueue: Sendable {
    private var chunks: [ByteBuffer] = []
    private(set) var count = 0
    private var lastChunkGathers = false

    mutating func append(_ data: ByteBuffer) {
        count += data.readableBytes
        chunks.appendGathering(data, lastGathers: &lastChunkGathers)
    }

    mutating func removeFirst(_ n: Int) {
        var n = n
        count -= n
        while n > 0, !chunks.isEmpty {
            if chunks[0].readableBytes <= n {
                n -= chunks[0].readableBytes
                chunks.removeFirst()
                if chunks.isEmpty { lastChunkGathers = false }
            } else {
                chunks[0].moveReaderIndex(forwardBy: n)
                n = 0
            }
        }
    }

    /// How many bytes from `offset` lie in one chunk (0 past the end).
    func contiguousBytes(from offset: Int) -> Int {
        var skip = offset
        for chunk in chunks {
            if skip < chunk.readableBytes { return chunk.readableBytes - skip }
            skip -= chunk.readableBytes
        }
        return 0
    }

    /// `count` bytes from `offset`: a slice of the chunk that holds them, or a copy with headroom for
    /// the headers when they span chunks.
    func bytes(from offset: Int, count n: Int) -> ByteBuffer {
        var skip = offset
        for chunk in chunks {
            if skip >= chunk.readableBytes {
                skip -= chunk.readableBytes
                continue
            }
            if chunk.readableBytes - skip >= n { return chunk.getSlice(at: chunk.readerIndex + skip, length: n)! }
            break
        }
        var out = ByteBuffer.withHeadroom(capacity: n)
        skip = offset
        var need = n
        for chunk in chunks where need > 0 {
            if skip >= chunk.readableBytes {
                skip -= chunk.readableBytes
                continue
            }
            let take = min(need, chunk.readableBytes - skip)
            out.writeImmutableBuffer(chunk.getSlice(at: chunk.readerIndex + skip, length: take)!)
            need -= take
            skip = 0
        }
        return out
    }
}

/// A connection's state and its buffers' fill, read in one call (`TCPConnection.status()`).
public struct TCPConnectionStatus: Sendable, Hashable {
    /// The TCP state.
    public var state: TCPState
    /// Bytes waiting to be read.
    public var bytesToRead: Int
    /// Whether the peer has closed its side and everything before its FIN has been read.
    public var isReadClosed: Bool
    /// Room left in the send buffer (0 once our side is closed).
    public var writableBytes: Int
    /// Bytes queued and not yet acknowledged.
    public var unacknowledgedBytes: Int
    /// An ACK is held for `TCPConnection.sendHeldACK(now:)`.
    public var hasHeldACK: Bool
}

extension Array where Element == ByteBuffer {
    /// Appends `data` as it is (a slice, no copy) when it fills at least half of its buffer;
    /// otherwise copies it into the gathering buffer at the end (`lastGathers` says whether the last
    /// element is one), or into a new one when there is none or it would pass
    /// `TCPConnection.gatherLimit`. What the list holds then stays within about twice its bytes.
    mutating func appendGathering(_ data: ByteBuffer, lastGathers: inout Bool) {
        guard data.isSparse else {
            append(data)
            lastGathers = false
            return
        }
        if lastGathers, let last = indices.last, self[last].readableBytes + data.readableBytes <= TCPConnection.gatherLimit {
            self[last].writeImmutableBuffer(data)
        } else {
            var piece = ByteBufferAllocator().buffer(capacity: Swift.max(TCPConnection.gatherCapacity, data.readableBytes))
            piece.writeImmutableBuffer(data)
            append(piece)
            lastGathers = true
        }
    }
}
