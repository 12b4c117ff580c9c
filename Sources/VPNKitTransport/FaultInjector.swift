public import NIOCore
import VPNKitBase

/// Faults to inject on one direction of a link. Probabilities are per frame, in 0…1.
public struct FaultConfiguration: Sendable, Hashable {
    /// Probability a frame is lost; default 0.
    public var drop: Double = 0
    /// Probability a frame is delivered twice; default 0.
    public var duplicate: Double = 0
    /// Probability a frame is held back by `reorderDelay`, so later frames overtake it; default 0.
    public var reorder: Double = 0
    /// How long a reordered frame is held back; default 5 ms.
    public var reorderDelay: TimeAmount = .milliseconds(5)
    /// Probability one random bit of the frame is flipped; default 0.
    public var corrupt: Double = 0
    /// Fixed one-way delay added to every frame; default none.
    public var delay: TimeAmount = .zero
    /// Link rate in bytes per second; default nil, unlimited. Frames queue behind each other at this
    /// rate; a frame that would wait longer than `maximumQueueDelay` is dropped.
    public var bytesPerSecond: Int?
    /// With `bytesPerSecond` set, the longest a frame may wait for the link; a frame that would wait
    /// longer is dropped (counted in `rateLimited`). Default 100 ms.
    public var maximumQueueDelay: TimeAmount = .milliseconds(100)
    /// Seed of the pseudo-random sequence; default 1. The same seed and the same frames give the same faults.
    public var seed: UInt64 = 1

    /// Creates a configuration; every fault left out is off. `reorderDelay` (5 ms) and
    /// `maximumQueueDelay` (100 ms) keep their defaults: set the properties to change them.
    public init(
        drop: Double = 0, duplicate: Double = 0, reorder: Double = 0, corrupt: Double = 0, delay: TimeAmount = .zero,
        bytesPerSecond: Int? = nil, seed: UInt64 = 1
    ) {
        self.drop = drop
        self.duplicate = duplicate
        self.reorder = reorder
        self.corrupt = corrupt
        self.delay = delay
        self.bytesPerSecond = bytesPerSecond
        self.seed = seed
    }

    /// True when no fault is configured (frames pass through untouched and immediately).
    public var isNone: Bool {
        drop == 0 && duplicate == 0 && reorder == 0 && corrupt == 0 && delay == .zero && bytesPerSecond == nil
    }
}

/// What the injector did, by kind.
public struct FaultCounters: Sendable, Hashable, CustomStringConvertible {
    /// Frames let through (possibly delayed, corrupted or duplicated). A duplicated frame counts once.
    public var passed: UInt64 = 0
    /// Frames lost to the `drop` probability.
    public var dropped: UInt64 = 0
    /// Frames delivered twice.
    public var duplicated: UInt64 = 0
    /// Frames held back by `reorderDelay`.
    public var reordered: UInt64 = 0
    /// Frames delivered with one bit flipped.
    public var corrupted: UInt64 = 0
    /// Frames dropped because they would have waited longer than `maximumQueueDelay` behind the rate limit.
    public var rateLimited: UInt64 = 0
    /// Creates counters that are all zero.
    public init() {}
    /// All counters on one line, for logs.
    public var description: String {
        "passed \(passed), dropped \(dropped), duplicated \(duplicated), reordered \(reordered), corrupted \(corrupted), rate-limited \(rateLimited)"
    }
}

/// The fault model as a state machine: a frame and the time go in, the frames to deliver and when
/// come out. No clock and no I/O, so the same faults replay under a virtual clock in simulations and
/// under the event loop's clock in the daemon.
public struct FaultInjector: Sendable {
    /// The faults this injector applies.
    public let configuration: FaultConfiguration
    /// What the injector did to the frames processed so far.
    public private(set) var counters = FaultCounters()
    private var random: SplitMix64
    /// When the rate-limited link is next free.
    private var linkFreeAt: NIODeadline = .uptimeNanoseconds(0)

    /// Creates an injector whose random sequence starts from `configuration.seed`.
    public init(_ configuration: FaultConfiguration) {
        self.configuration = configuration
        self.random = SplitMix64(seed: configuration.seed)
    }

    /// Applies the faults to one frame sent at `now`; returns zero, one or two frames with their
    /// delivery times.
    public mutating func process(_ frame: ByteBuffer, now: NIODeadline) -> [(frame: ByteBuffer, at: NIODeadline)] {
        let c = configuration
        if c.isNone {
            counters.passed &+= 1
            return [(frame, now)]
        }
        if c.drop > 0, random.chance(c.drop) {
            counters.dropped &+= 1
            return []
        }
        var frame = frame
        if c.corrupt > 0, random.chance(c.corrupt), frame.readableBytes > 0 {
            let bit = Int(random.next() % UInt64(frame.readableBytes * 8))
            let index = frame.readerIndex + bit / 8
            if let byte = frame.getInteger(at: index, as: UInt8.self) {
                frame.setInteger(byte ^ (1 << UInt8(bit % 8)), at: index)
            }
            counters.corrupted &+= 1
        }
        var at = now + c.delay
        if let rate = c.bytesPerSecond, rate > 0 {
            let start = max(linkFreeAt, now)
            if start - now > c.maximumQueueDelay {
                counters.rateLimited &+= 1
                return []
            }
            let transmission = TimeAmount.nanoseconds(Int64(frame.readableBytes) * 1_000_000_000 / Int64(rate))
            linkFreeAt = start + transmission
            at = linkFreeAt + c.delay
        }
        if c.reorder > 0, random.chance(c.reorder) {
            at = at + c.reorderDelay
            counters.reordered &+= 1
        }
        counters.passed &+= 1
        if c.duplicate > 0, random.chance(c.duplicate) {
            counters.duplicated &+= 1
            return [(frame, at), (frame, at)]
        }
        return [(frame, at)]
    }
}

