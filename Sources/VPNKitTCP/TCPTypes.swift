// The values a TCP connection takes in and hands out: its states, the segments going in and out,
// why it closed, its counters and its status.

public import NIOCore

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

extension TCPState {
    /// Whether both sides' initial sequence numbers are known and acknowledged (ESTABLISHED and later).
    var isSynchronized: Bool {
        switch self {
        case .closed, .synSent, .synReceived: return false
        default: return true
        }
    }
    /// Whether the application may still queue data to send.
    var canSend: Bool { self == .established || self == .closeWait || self == .synReceived || self == .synSent }
    /// Whether data from the peer is still taken in.
    var canReceive: Bool { self == .established || self == .finWait1 || self == .finWait2 || self == .synReceived }
}
