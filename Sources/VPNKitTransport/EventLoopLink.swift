public import NIOCore
public import VPNKitBase

/// Two connected in-memory transports on one SwiftNIO event loop: a frame sent by one end arrives at
/// the other on a later turn of the loop (never inside `send`), in order. Use it to wire two stacks
/// together in one process (a DHCP server and its client, a TCP client and server) without a kernel
/// device. For reproducible simulations with faults and a virtual clock use `InMemoryLink` instead.
///
/// Each direction holds at most `maximumQueuedFrames` undelivered frames; beyond that `send` drops
/// the frame, returns false and counts it in the sender's `TransportStatistics/sendDrops`.
/// Both ends are confined to `eventLoop`.
public final class EventLoopLink {
    /// One end; give it to the first stack.
    public let a: Endpoint
    /// The other end; give it to the second stack.
    public let b: Endpoint
    /// The loop every delivery runs on.
    public let eventLoop: any EventLoop

    /// Makes a link on `eventLoop` that carries IP datagrams of up to `mtu` bytes.
    public init(mtu: Int = 1500, maximumQueuedFrames: Int = 4096, on eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        a = Endpoint(mtu: mtu, limit: max(1, maximumQueuedFrames), eventLoop: eventLoop)
        b = Endpoint(mtu: mtu, limit: max(1, maximumQueuedFrames), eventLoop: eventLoop)
        a.peer = b
        b.peer = a
    }

    /// One end of an ``EventLoopLink``.
    public final class Endpoint: FrameTransport {
        /// The largest IP datagram a frame may carry.
        public let mtu: Int
        /// Set it to tell the stack on this end which MAC its guest has; nil by default.
        public var guestAddress: MACAddress?
        /// Called on the event loop for every frame the other end sent.
        public var onFrame: ((ByteBuffer) -> Void)?
        /// Called once, with nil, when the other end closes.
        public var onClose: (((any Error)?) -> Void)?
        /// Frames and bytes moved through this end.
        public private(set) var statistics = TransportStatistics()

        fileprivate weak var peer: Endpoint?
        private let limit: Int
        private let eventLoop: any EventLoop
        private var inbox: [ByteBuffer] = []
        private var inboxHead = 0
        private var drainScheduled = false
        private var closed = false

        fileprivate init(mtu: Int, limit: Int, eventLoop: any EventLoop) {
            self.mtu = mtu
            self.limit = limit
            self.eventLoop = eventLoop
        }

        /// Queues `frame` for the other end; false (and counted) when the link is closed or full.
        @discardableResult
        public func send(_ frame: ByteBuffer) -> Bool {
            eventLoop.preconditionInEventLoop()
            guard !closed, let peer, !peer.closed, peer.inbox.count - peer.inboxHead < limit else {
                statistics.sendDrops &+= 1
                return false
            }
            statistics.countSent(frame.readableBytes)
            peer.enqueue(frame)
            return true
        }

        private func enqueue(_ frame: ByteBuffer) {
            inbox.append(frame)
            guard !drainScheduled else { return }
            drainScheduled = true
            let loop = eventLoop
            loop.assumeIsolated().execute { [weak self] in self?.drain() }
        }

        private func drain() {
            drainScheduled = false
            // Frames queued while delivering wait for the next turn, so a ping-pong cannot starve the loop.
            let end = inbox.count
            while inboxHead < end, !closed {
                let frame = inbox[inboxHead]
                inboxHead += 1
                statistics.countReceived(frame.readableBytes)
                onFrame?(frame)
            }
            if inboxHead == inbox.count {
                inbox.removeAll(keepingCapacity: true)
                inboxHead = 0
            } else if !drainScheduled, !closed {
                drainScheduled = true
                eventLoop.assumeIsolated().execute { [weak self] in self?.drain() }
            }
        }

        /// Closes this end; the other end's `onClose` is called with nil on a later turn.
        public func close() {
            guard !closed else { return }
            closed = true
            inbox.removeAll()
            inboxHead = 0
            onFrame = nil
            if let peer, !peer.closed {
                eventLoop.assumeIsolated().execute { [weak peer] in
                    guard let peer, !peer.closed else { return }
                    peer.closed = true
                    let callback = peer.onClose
                    peer.onClose = nil
                    peer.onFrame = nil
                    callback?(nil)
                }
            }
        }
    }
}
