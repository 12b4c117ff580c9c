// One TCP connection (RFC 9293): its stored state, how it opens, and what it reports. Its input,
// output, timers and application calls are extensions in the TCPConnection+… files; the parts with
// arithmetic of their own (send queue, reassembly, SACK scoreboard, RTT estimator, congestion
// control, timers) are components stored inline.

public import NIOCore

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
    public internal(set) var state: TCPState
    /// Event counts for this connection since it was opened.
    public internal(set) var counters = TCPConnectionCounters()
    /// Why the connection ended; nil while it is still open.
    public internal(set) var closeReason: TCPCloseReason?

    // Send sequence space (RFC 9293 §3.3.1).
    let iss: SequenceNumber
    var sndUna: SequenceNumber
    var sndNxt: SequenceNumber
    /// The highest sequence number sent so far (retransmission after a timeout rewinds sndNxt).
    var sndMax: SequenceNumber
    var sndWnd = 0 {
        didSet { if sndWnd > maximumSendWindow { maximumSendWindow = sndWnd } }
    }
    /// The largest window the peer ever offered (for silly window avoidance, and RFC 5961 §5.2).
    var maximumSendWindow = 0
    var sndWl1 = SequenceNumber(0)
    var sndWl2 = SequenceNumber(0)
    var sendScale: UInt8 = 0
    var peerMSS = 536
    /// Bytes from sndUna on (sent and not acknowledged, then unsent).
    var sendQueue = SendQueue()
    var finQueued = false
    var finSent = false
    /// Whether the peer has acknowledged our SYN (its sequence number holds no byte).
    var synAcknowledged = false

    // Receive sequence space.
    var irs = SequenceNumber(0)
    var rcvNxt = SequenceNumber(0)
    var receiveScale: UInt8 = 0
    /// The right edge we last advertised; never moved left (RFC 9293 §3.8.6.2.2). Nil until the
    /// first advertisement (comparing with an arbitrary start value breaks across the 2^32 wrap).
    var advertisedRightEdge: SequenceNumber?
    /// Received data: in order for reading, and out of order.
    var reassembly = Reassembly()
    var finReceived = false

    // Options in use.
    var useTimestamps = false
    var useSACK = false
    var tsRecent: UInt32 = 0

    // Acknowledgments owed.
    /// Full-sized segments' worth received since our last ACK (every second one is acknowledged).
    var unackedSegments = 0
    /// An ACK is owed now: the next flush sends one if no data segment carries it.
    var ackNow = false
    /// `ackNow` was left for `sendHeldACK(now:)` (see `receive(_:now:holdingACK:)`).
    var ackHeld = false
    /// RFC 5961 §7 rate limit: the current one-second window and the challenge ACKs sent in it.
    var challengeWindowStart: NIODeadline?
    var challengesInWindow = 0

    // Components.
    var timers = TCPTimers()
    var rtt: RTTEstimator
    var congestion: CongestionControl
    var scoreboard = SACKScoreboard()

    var output: [TCPOutgoing] = []
    /// The options of the last segment with timestamps only, reused (see `emit`).
    var timestampOptions: [TCPOption] = []

    /// Active open: the connection starts in SYN-SENT; `drainOutput(_:)` hands over the SYN.
    public static func connect(localPort: UInt16, remotePort: UInt16, iss: SequenceNumber, configuration: TCPConfiguration, now: NIODeadline) -> TCPConnection {
        var c = TCPConnection(localPort: localPort, remotePort: remotePort, iss: iss, configuration: configuration, state: .synSent)
        c.sendSYN(ack: false, now: now)
        return c
    }

    /// Passive open from a SYN to a listening port: SYN-RECEIVED with the SYN-ACK waiting for `drainOutput(_:)`.
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
        self.rtt = RTTEstimator(initial: configuration.initialRTO, minimum: configuration.minimumRTO, maximum: configuration.maximumRTO)
        self.congestion = CongestionControl(
            configuration.congestionControl, initialWindow: configuration.initialWindowSegments * configuration.effectiveMaximumSegmentSize)
    }

    /// Takes the options of the peer's SYN: its MSS, and which of window scaling, timestamps and
    /// SACK both sides use.
    mutating func negotiate(_ syn: TCPHeader) {
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

    // MARK: - State

    /// What a stack checks after every segment, in one call. `mutating` only so that a connection
    /// kept in a class is read in place: each getter called on such a connection copies the whole
    /// struct first (retaining every buffer in it), and this is asked after every segment.
    public mutating func status() -> TCPConnectionStatus {
        TCPConnectionStatus(
            state: state, bytesToRead: reassembly.readableBytes, isReadClosed: isReadClosed, writableBytes: writableBytes,
            unacknowledgedBytes: sendQueue.count, hasHeldACK: ackHeld)
    }

    /// Bytes waiting to be read.
    public var bytesToRead: Int { reassembly.readableBytes }
    /// The next sequence number expected from the peer.
    public var receiveNext: SequenceNumber { rcvNxt }
    /// Whether the peer has closed its side and everything before its FIN has been read.
    public var isReadClosed: Bool { finReceived && reassembly.readableBytes == 0 }
    /// Room left in the send buffer.
    public var writableBytes: Int { state.canSend ? max(0, configuration.sendBufferSize - sendQueue.count) : 0 }
    /// Bytes queued and not yet acknowledged.
    public var unacknowledgedBytes: Int { sendQueue.count }
    /// Pieces of received data held (in order and out of order), each a buffer or a slice of one:
    /// what the per-piece overhead is charged for.
    public var receivedPieces: Int { reassembly.pieces }

    /// Whether everything we sent, our FIN included, has been acknowledged.
    var finAcknowledged: Bool { finSent && sndUna == sndMax }

    /// Bytes sent and not yet acknowledged (RFC 5681 FlightSize).
    var flightSize: Int { sndMax - sndUna }

    /// SACK-based loss recovery (RFC 6675) applies: SACK was negotiated and the peer has SACKed data
    /// above a hole.
    var sackRecovery: Bool { useSACK && !scoreboard.isEmpty }

    /// TIME-WAIT: only the timer that ends it runs.
    mutating func enterTimeWait(now: NIODeadline) {
        timers.enterTimeWait(until: now + configuration.timeWait)
    }

    /// CLOSED for `reason` (the first reason given is kept); every timer stops.
    mutating func enterClosed(_ reason: TCPCloseReason) {
        state = .closed
        if closeReason == nil { closeReason = reason }
        timers.stopAll()
    }

    // MARK: - Diagnostics

    /// The connection's variables, for diagnostics.
    public var debugDescription: String {
        "\(state.rawValue) una=\(sndUna) nxt=\(sndNxt) max=\(sndMax) wnd=\(sndWnd) cwnd=\(congestion.cwnd) ssthresh=\(congestion.ssthresh) queue=\(sendQueue.count) rcvNxt=\(rcvNxt) rwnd=\(receiveWindow) ooo=\(reassembly.outOfOrder.count) readable=\(reassembly.readableBytes) rto=\(rtt.rto) backoff=\(rtt.backoff) rtx=\(String(describing: timers.retransmitAt)) persist=\(String(describing: timers.persistAt)) recover=\(String(describing: congestion.recover)) dup=\(congestion.duplicateACKs) fin=\(finQueued)/\(finSent)"
    }

    /// Smoothed RTT and current RTO, for diagnostics.
    public var roundTrip: (smoothed: TimeAmount?, rto: TimeAmount) { (rtt.smoothed, rtt.rto) }
}
