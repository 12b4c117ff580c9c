public import NIOCore
public import VPNKitBase
public import VPNKitPcap

/// Plays a capture to the stack as if it came from a guest: each `step()` delivers the next frame and
/// returns its timestamp, which the driver uses as the stack's clock. Frames the stack sends are kept
/// in `transmitted` with the time they were sent, for golden comparisons.
public final class PcapReplayTransport: FrameTransport {
    /// The MTU reported to the stack (by default 65520); frames are replayed whatever their size.
    public let mtu: Int
    /// The guest's MAC address to report; nil unless set.
    public var guestAddress: MACAddress?
    /// Called by `step()` with each frame of the capture.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// Called once when `step()` reaches the end of the capture: nil, or the read error that stopped
    /// it. Not called after `close()`.
    public var onClose: (((any Error)?) -> Void)?
    /// Frames replayed (received) and frames the stack sent (never dropped).
    public private(set) var statistics = TransportStatistics()
    /// Frames the stack sent, in order, each with the replay time (`now`) at which it was sent.
    public private(set) var transmitted: [(time: NIODeadline, frame: ByteBuffer)] = []
    private let reader: PcapReader
    private var finished = false
    /// The timestamp of the frame delivered last (the replay's clock).
    public private(set) var now: NIODeadline = .uptimeNanoseconds(0)
    private var origin: Int64?

    /// Opens the capture at `path` for replay. Timestamps are rebased so the first frame is at
    /// `start` (one earlier than the first frame's is clamped to `start`). Throws
    /// `PcapError.cannotOpen` when the file cannot be read as a capture.
    public init(path: String, mtu: Int = 65520, start: NIODeadline = .uptimeNanoseconds(1_000_000_000)) throws(PcapError) {
        self.reader = try PcapReader(path: path)
        self.mtu = mtu
        self.now = start
        self.startTime = start
    }
    private let startTime: NIODeadline

    /// Delivers the next frame; returns its (rebased) time, or nil at the end. Reaching the end calls
    /// `onClose` once, with nil, or with the read error when the file is damaged or truncated; after
    /// that, or after `close()`, it returns nil and does nothing.
    @discardableResult
    public func step() -> NIODeadline? {
        guard !finished else { return nil }
        guard let record = reader.next() else {
            finished = true
            onClose?(reader.readError)
            return nil
        }
        let stamp = record.timestampNanoseconds
        let first = origin ?? stamp
        origin = first
        now = startTime + .nanoseconds(max(0, stamp - first))
        statistics.countReceived(record.data.readableBytes)
        onFrame?(record.data)
        return now
    }

    /// Records `frame` in `transmitted` at the current replay time; always succeeds.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        statistics.countSent(frame.readableBytes)
        transmitted.append((now, frame))
        return true
    }

    /// Ends the replay: `step()` delivers nothing more and `onClose` is not called.
    public func close() { finished = true }
}
