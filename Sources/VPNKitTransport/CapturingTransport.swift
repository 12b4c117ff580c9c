public import NIOCore
public import VPNKitBase
public import VPNKitPcap

/// Where captured frames go.
public protocol CaptureSink: AnyObject {
    /// Records `frame`, seen at stack time `time`; `wallClockNanoseconds` is the timestamp for files,
    /// in nanoseconds since the epoch of the capturing transport's wall clock. Called synchronously
    /// on the transport's thread for every frame in either direction.
    func capture(_ frame: ByteBuffer, at time: NIODeadline, wallClockNanoseconds: Int64)
}

/// Writes captured frames to a pcap file (flushed every `flushEvery` frames and on close).
public final class PcapFileSink: CaptureSink {
    /// The writer of the pcap file.
    public let writer: PcapWriter
    private let flushEvery: Int
    private var unflushed = 0

    /// Creates (or truncates) the pcap file at `path`: Ethernet frames, nanosecond timestamps.
    /// `snapshotLength` is the record length announced in the header (frames are written whole
    /// anyway); `flushEvery` is raised to at least 1. Throws `PcapError.cannotWrite` when the file
    /// cannot be created.
    public init(path: String, snapshotLength: Int = 65550 + 4, flushEvery: Int = 64) throws(PcapError) {
        self.writer = try PcapWriter(path: path, linkType: .ethernet, snapshotLength: snapshotLength)
        self.flushEvery = max(1, flushEvery)
    }

    /// Appends `frame` stamped with `wallClockNanoseconds` (`time` is not used), flushing every
    /// `flushEvery` frames.
    public func capture(_ frame: ByteBuffer, at time: NIODeadline, wallClockNanoseconds: Int64) {
        writer.write(
            PcapRecord(
                seconds: wallClockNanoseconds / 1_000_000_000, nanoseconds: Int32(wallClockNanoseconds % 1_000_000_000),
                data: frame))
        unflushed += 1
        if unflushed >= flushEvery {
            writer.flush()
            unflushed = 0
        }
    }

    /// Writes the records buffered so far to the file.
    public func flush() {
        writer.flush()
        unflushed = 0
    }
}

/// Keeps the most recent frames in memory, bounded by a frame count and a byte budget: the oldest
/// are dropped first. For tests and for dumping the last moments before a failure.
public final class CaptureRing: CaptureSink {
    /// The most frames kept (at least 1).
    public let maximumFrames: Int
    /// The most frame bytes kept (at least 1); the newest frame is kept even when it alone is larger.
    public let maximumBytes: Int
    /// The ring's storage: the frames held, possibly preceded by evicted frames not yet compacted
    /// away. Use `contents` for exactly the frames held.
    public private(set) var frames: [(time: NIODeadline, frame: ByteBuffer)] = []
    private var head = 0
    /// The bytes of the frames held now.
    public private(set) var bytes = 0
    /// Frames pushed out by newer ones.
    public private(set) var evicted: UInt64 = 0

    /// Creates an empty ring keeping at most `maximumFrames` frames and `maximumBytes` bytes
    /// (by default 1024 frames and 4 MiB); each limit is raised to at least 1.
    public init(maximumFrames: Int = 1024, maximumBytes: Int = 4 << 20) {
        self.maximumFrames = max(1, maximumFrames)
        self.maximumBytes = max(1, maximumBytes)
    }

    /// Keeps `frame` with its stack time `time` (the wall-clock time is not kept), evicting the
    /// oldest frames until both limits hold again.
    public func capture(_ frame: ByteBuffer, at time: NIODeadline, wallClockNanoseconds: Int64) {
        frames.append((time, frame))
        bytes += frame.readableBytes
        while frames.count - head > maximumFrames || (bytes > maximumBytes && frames.count - head > 1) {
            bytes -= frames[head].frame.readableBytes
            head += 1
            evicted &+= 1
        }
        if head > 1024 && head * 2 > frames.count {
            frames.removeFirst(head)
            head = 0
        }
    }

    /// The frames held, oldest first.
    public var contents: [(time: NIODeadline, frame: ByteBuffer)] { Array(frames[head...]) }

    /// Writes the frames held to a pcap file at `path`, oldest first, stamped with their stack time
    /// (uptime), since the ring keeps no wall-clock time. Throws `PcapError.cannotWrite` when the file
    /// cannot be created.
    public func write(to path: String) throws(PcapError) {
        let writer = try PcapWriter(path: path, linkType: .ethernet)
        for (time, frame) in contents {
            let ns = Int64(time.uptimeNanoseconds)
            writer.write(PcapRecord(seconds: ns / 1_000_000_000, nanoseconds: Int32(ns % 1_000_000_000), data: frame))
        }
        writer.flush()
    }
}

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
