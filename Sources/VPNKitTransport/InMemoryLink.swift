public import NIOCore
public import VPNKitBase

/// Two connected in-memory endpoints, each a `FrameTransport`, with independent seeded faults per
/// direction and a virtual clock: frames sent are delivered when the driver calls
/// `deliver(until:)` with a time at or after their delivery time. Nothing happens on its own, so a
/// simulation is reproducible step by step.
public final class InMemoryLink {
    /// One end of the link; the frames it sends get the `aToB` faults.
    public let a: Endpoint
    /// The other end; the frames it sends get the `bToA` faults.
    public let b: Endpoint
    /// The link's current (virtual) time: sends are stamped with it.
    public private(set) var now: NIODeadline

    /// Creates a link whose clock starts at `start`. `aToB` applies to frames sent by `a`, `bToA` to
    /// frames sent by `b`. At most `maximumQueuedFrames` frames (default 65536) wait for each endpoint;
    /// more are dropped and counted in the sender's `sendDrops`.
    public init(
        mtu: Int = 1500, aToB: FaultConfiguration = FaultConfiguration(), bToA: FaultConfiguration = FaultConfiguration(),
        start: NIODeadline = .uptimeNanoseconds(0), maximumQueuedFrames: Int = 65536
    ) {
        self.now = start
        self.a = Endpoint(mtu: mtu, faults: aToB, maximumQueuedFrames: maximumQueuedFrames)
        self.b = Endpoint(mtu: mtu, faults: bToA, maximumQueuedFrames: maximumQueuedFrames)
        a.link = self
        b.link = self
    }

    /// Advances the clock to `time`, delivering in time order every frame due by then; while a frame
    /// is delivered, `now` is that frame's delivery time. Frames sent by receivers during delivery
    /// are delivered in the same call if they are due.
    public func deliver(until time: NIODeadline) {
        defer { if time > now { now = time } }
        while true {
            let nextA = a.inbox.first?.at
            let nextB = b.inbox.first?.at
            let next: Endpoint
            switch (nextA, nextB) {
            case (let x?, let y?): next = x <= y ? a : b
            case (.some, nil): next = a
            case (nil, .some): next = b
            case (nil, nil): return
            }
            guard let head = next.inbox.first, head.at <= max(now, time) else { return }
            next.inbox.removeFirst()
            if head.at > now { now = head.at }
            next.statistics.countReceived(head.frame.readableBytes)
            next.onFrame?(head.frame)
        }
    }

    /// The earliest time a queued frame is due, if any.
    public var nextDelivery: NIODeadline? {
        [a.inbox.first?.at, b.inbox.first?.at].compactMap { $0 }.min()
    }

    /// One end of the link.
    public final class Endpoint: FrameTransport {
        /// The MTU given to the link. It is reported, not enforced: longer frames are carried too.
        public let mtu: Int
        /// Nil unless set, for tests that need a transport that knows its guest's MAC address.
        public var guestAddress: MACAddress?
        /// Called from `InMemoryLink.deliver(until:)` for every frame due to this endpoint.
        public var onFrame: ((ByteBuffer) -> Void)?
        /// Called once, with nil, when the other endpoint closes.
        public var onClose: (((any Error)?) -> Void)?
        /// This endpoint's counters. A frame counts as received when it is delivered, not when it is queued.
        public var statistics = TransportStatistics()
        /// Faults applied to frames this endpoint sends.
        public private(set) var injector: FaultInjector
        weak var link: InMemoryLink?
        /// Frames on their way to this endpoint, ordered by delivery time then by send order.
        var inbox: [(at: NIODeadline, sequence: UInt64, frame: ByteBuffer)] = []
        private var sequence: UInt64 = 0
        private let maximumQueuedFrames: Int
        private var closed = false

        init(mtu: Int, faults: FaultConfiguration, maximumQueuedFrames: Int) {
            self.mtu = mtu
            self.injector = FaultInjector(faults)
            self.maximumQueuedFrames = maximumQueuedFrames
        }

        /// The other endpoint; nil once the link is gone (the link owns both endpoints, which refer to it
        /// weakly).
        public var peer: Endpoint? {
            guard let link else { return nil }
            return link.a === self ? link.b : link.a
        }

        /// Applies this endpoint's faults and queues the result for the peer, due at the link's current
        /// time plus any delay.
        ///
        /// Returns false, counting a send drop, when either end is closed or the link is gone. Frames
        /// beyond the peer's queue limit are dropped and counted too, but the call still returns true.
        @discardableResult
        public func send(_ frame: ByteBuffer) -> Bool {
            guard !closed, let link, let peer = peer, !peer.closed else {
                statistics.sendDrops &+= 1
                return false
            }
            statistics.countSent(frame.readableBytes)
            for (copy, at) in injector.process(frame, now: link.now) {
                guard peer.inbox.count < maximumQueuedFrames else {
                    statistics.sendDrops &+= 1
                    continue
                }
                peer.enqueue(copy, at: at)
            }
            return true
        }

        func enqueue(_ frame: ByteBuffer, at: NIODeadline) {
            sequence &+= 1
            let entry = (at: at, sequence: sequence, frame: frame)
            // Keep the inbox sorted; most frames go at the end.
            var index = inbox.endIndex
            while index > inbox.startIndex, inbox[index - 1].at > at { index -= 1 }
            inbox.insert(entry, at: index)
        }

        /// Closes this end: discards the frames queued for it and calls the peer's `onClose` with nil.
        /// Idempotent.
        public func close() {
            guard !closed else { return }
            closed = true
            inbox.removeAll()
            if let peer, !peer.closed {
                let callback = peer.onClose
                peer.onClose = nil
                callback?(nil)
            }
        }
    }
}
