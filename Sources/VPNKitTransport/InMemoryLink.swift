public import NIOCore
public import VPNKitBase

/// Two connected in-memory endpoints, each a `FrameTransport`, with independent seeded faults per
/// direction and a virtual clock: frames sent are delivered when the driver calls
/// `deliver(until:)` with a time at or after their delivery time. Nothing happens on its own, so a
/// simulation is reproducible step by step.
public final class InMemoryLink {
    public let a: Endpoint
    public let b: Endpoint
    /// The link's current (virtual) time: sends are stamped with it.
    public private(set) var now: NIODeadline

    /// `aToB` applies to frames sent by `a`, `bToA` to frames sent by `b`.
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
        public let mtu: Int
        public var guestAddress: MACAddress?
        public var onFrame: ((ByteBuffer) -> Void)?
        public var onClose: (((any Error)?) -> Void)?
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

        public var peer: Endpoint? {
            guard let link else { return nil }
            return link.a === self ? link.b : link.a
        }

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
