public import NIOCore
import VPNKitBase
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
    /// The frames held, preceded by evicted frames not yet compacted away (from `head` on).
    private var frames: [(time: NIODeadline, frame: ByteBuffer)] = []
    private var head = 0
    /// The bytes of the frames held now.
    private var bytes = 0
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
}
