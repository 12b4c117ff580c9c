public import NIOCore
public import VPNKitBase
public import VPNKitPcap

/// Where captured frames go.
public protocol CaptureSink: AnyObject {
    func capture(_ frame: ByteBuffer, at time: NIODeadline, wallClockNanoseconds: Int64)
}

/// Writes captured frames to a pcap file (flushed every `flushEvery` frames and on close).
public final class PcapFileSink: CaptureSink {
    public let writer: PcapWriter
    private let flushEvery: Int
    private var unflushed = 0

    public init(path: String, snapshotLength: Int = 65550 + 4, flushEvery: Int = 64) throws(PcapError) {
        self.writer = try PcapWriter(path: path, linkType: .ethernet, snapshotLength: snapshotLength)
        self.flushEvery = max(1, flushEvery)
    }

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

    public func flush() {
        writer.flush()
        unflushed = 0
    }
}

/// Keeps the most recent frames in memory, bounded by a frame count and a byte budget: the oldest
/// are dropped first. For tests and for dumping the last moments before a failure.
public final class CaptureRing: CaptureSink {
    public let maximumFrames: Int
    public let maximumBytes: Int
    public private(set) var frames: [(time: NIODeadline, frame: ByteBuffer)] = []
    private var head = 0
    public private(set) var bytes = 0
    /// Frames pushed out by newer ones.
    public private(set) var evicted: UInt64 = 0

    public init(maximumFrames: Int = 1024, maximumBytes: Int = 4 << 20) {
        self.maximumFrames = max(1, maximumFrames)
        self.maximumBytes = max(1, maximumBytes)
    }

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

    /// Writes the frames held to a pcap file.
    public func write(to path: String) throws(PcapError) {
        let writer = try PcapWriter(path: path, linkType: .ethernet)
        for (time, frame) in contents {
            let ns = Int64(time.uptimeNanoseconds)
            writer.write(PcapRecord(seconds: ns / 1_000_000_000, nanoseconds: Int32(ns % 1_000_000_000), data: frame))
        }
        writer.flush()
    }
}

/// Wraps any transport and copies every frame, both directions, to a sink. The clock is injected
/// (`now`), so captures of simulations carry virtual time.
public final class CapturingTransport: FrameTransport {
    public let inner: any FrameTransport
    public let sink: any CaptureSink
    private let now: () -> NIODeadline
    private let wallClock: () -> Int64
    public var onFrame: ((ByteBuffer) -> Void)?
    public var onClose: (((any Error)?) -> Void)? {
        get { inner.onClose }
        set { inner.onClose = newValue }
    }

    public init(
        wrapping inner: any FrameTransport, sink: any CaptureSink, now: @escaping () -> NIODeadline = { .now() },
        wallClockNanoseconds: (() -> Int64)? = nil
    ) {
        self.inner = inner
        self.sink = sink
        self.now = now
        self.wallClock = wallClockNanoseconds ?? { Int64(now().uptimeNanoseconds) }
        inner.onFrame = { [weak self] frame in
            guard let self else { return }
            self.sink.capture(frame, at: self.now(), wallClockNanoseconds: self.wallClock())
            self.onFrame?(frame)
        }
    }

    public var mtu: Int { inner.mtu }
    public var guestAddress: MACAddress? { inner.guestAddress }
    public var statistics: TransportStatistics { inner.statistics }

    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        sink.capture(frame, at: now(), wallClockNanoseconds: wallClock())
        return inner.send(frame)
    }

    public func close() {
        (sink as? PcapFileSink)?.flush()
        inner.close()
    }
}

/// Plays a capture to the stack as if it came from a guest: each `step()` delivers the next frame and
/// returns its timestamp, which the driver uses as the stack's clock. Frames the stack sends are kept
/// in `transmitted` with the time they were sent, for golden comparisons.
public final class PcapReplayTransport: FrameTransport {
    public let mtu: Int
    public var guestAddress: MACAddress?
    public var onFrame: ((ByteBuffer) -> Void)?
    public var onClose: (((any Error)?) -> Void)?
    public private(set) var statistics = TransportStatistics()
    public private(set) var transmitted: [(time: NIODeadline, frame: ByteBuffer)] = []
    private let reader: PcapReader
    private var finished = false
    /// The timestamp of the frame delivered last (the replay's clock).
    public private(set) var now: NIODeadline = .uptimeNanoseconds(0)
    private var origin: Int64?

    /// Timestamps are rebased so the first frame is at `start`.
    public init(path: String, mtu: Int = 65520, start: NIODeadline = .uptimeNanoseconds(1_000_000_000)) throws(PcapError) {
        self.reader = try PcapReader(path: path)
        self.mtu = mtu
        self.now = start
        self.startTime = start
    }
    private let startTime: NIODeadline

    /// Delivers the next frame; returns its (rebased) time, or nil at the end (onClose(nil) fires once).
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

    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        statistics.countSent(frame.readableBytes)
        transmitted.append((now, frame))
        return true
    }

    public func close() { finished = true }
}
