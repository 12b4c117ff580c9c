public import NIOCore

/// Congestion control algorithms.
public enum TCPCongestionControl: String, Sendable, Hashable, CaseIterable {
    /// RFC 5681 + RFC 6582.
    case newReno
    /// RFC 9438 (with NewReno's fast recovery for the recovery phase itself).
    case cubic
}

/// Per-connection settings. Defaults follow Linux where RFCs leave room.
public struct TCPConfiguration: Sendable, Hashable {
    /// Our MSS; nil takes it from the link (MTU − 40). The peer's announced MSS caps what we send.
    public var maximumSegmentSize: Int?

    /// The MSS in effect (1460 when neither set nor derived from a link).
    public var effectiveMaximumSegmentSize: Int { max(88, maximumSegmentSize ?? 1460) }
    /// Bytes the application may queue for sending before `write` refuses more.
    public var sendBufferSize: Int = 256 * 1024
    /// Bytes received and not yet read, plus out-of-order bytes: the advertised window is exactly
    /// what is left of this.
    public var receiveBufferSize: Int = 256 * 1024
    /// Whether to offer the timestamps option (RFC 7323) for RTT measurement and PAWS; used only when the
    /// peer offers it too. On by default.
    public var timestamps = true
    /// Whether to offer SACK (RFC 2018); used only when the peer offers it too. On by default.
    public var selectiveAcknowledgments = true
    /// Whether to offer window scaling (RFC 7323) so windows above 64 KiB can be advertised; used only when
    /// the peer offers it too. On by default.
    public var windowScaling = true
    /// RFC 6298 bounds (the RFC's minimum of 1 s is lowered to Linux's 200 ms by default).
    public var initialRTO: TimeAmount = .seconds(1)
    /// The lower bound on the computed retransmission timeout; 200 ms by default.
    public var minimumRTO: TimeAmount = .milliseconds(200)
    /// The upper bound on the retransmission timeout after backoff (also caps the zero-window probe
    /// interval); 60 s by default.
    public var maximumRTO: TimeAmount = .seconds(60)
    /// Retransmissions of one segment (or SYN) before the connection is given up.
    public var maximumRetransmissions = 12
    /// Delayed ACK (every second full segment, or this timeout).
    public var delayedACK = true
    /// The longest an ACK is delayed when `delayedACK` is on; 40 ms by default.
    public var delayedACKTimeout: TimeAmount = .milliseconds(40)
    /// Nagle's algorithm (RFC 896).
    public var nagle = false
    /// How long TIME-WAIT lasts (2 MSL).
    public var timeWait: TimeAmount = .seconds(60)
    /// Initial congestion window in segments (RFC 6928).
    public var initialWindowSegments = 10
    /// The congestion control algorithm; NewReno by default.
    public var congestionControl = TCPCongestionControl.newReno
    /// Keep-alive (RFC 1122 §4.2.3.6): after this much idleness, probe; nil turns it off.
    public var keepAliveIdle: TimeAmount? = nil
    /// Time between unanswered keep-alive probes; 75 s by default.
    public var keepAliveInterval: TimeAmount = .seconds(75)
    /// Unanswered keep-alive probes after which the connection is closed as timed out; 9 by default.
    public var keepAliveProbes = 9
    /// User timeout: give up when sent data stays unacknowledged this long (nil: only the
    /// retransmission limit applies).
    public var userTimeout: TimeAmount? = nil
    /// Challenge ACKs per second at most (RFC 5961 §7).
    public var challengeACKsPerSecond = 10
    /// Limited transmit (RFC 3042): a new segment on each of the first two duplicate ACKs.
    public var limitedTransmit = true
    /// Loss probes (RFC 8985 §7) when SACK is in use: two round trips (at least 2 ms) without news
    /// from the peer, a probe goes out instead of waiting for the retransmission timer. On by
    /// default; see ``TCPConnectionCounters/lossProbes``.
    public var lossProbes = true
    /// Out-of-order segments kept (the bytes are bounded by the receive buffer).
    public var maximumOutOfOrderSegments = 256
    /// TCP segmentation offload: when set, new data goes out in segments of up to this many payload
    /// bytes (a whole number of MSS-sized pieces), which the link cuts into MSS-sized segments; each
    /// such segment's `TCPOutgoing.segmentSize` says the size to cut. Congestion control and
    /// retransmission still count in MSS. Nil (the default) keeps every segment within the MSS.
    public var segmentationOffloadBytes: Int? = nil

    /// Creates a configuration with the defaults shown on each property.
    public init() {}

    /// The window-scale shift announcing the receive buffer.
    public var windowScaleShift: UInt8 {
        guard windowScaling else { return 0 }
        var shift: UInt8 = 0
        while shift < 14 && (receiveBufferSize >> Int(shift)) > 65535 { shift += 1 }
        return shift
    }
}
