public import NIOCore
public import VPNKitBase

/// Wraps an event-loop transport and applies seeded faults to both directions, timed by the event loop's
/// clock: what `vpnkit run --fault-*` puts on the guest link.
///
/// Create it and use it on `eventLoop` (the wrapped transport's) only: delayed frames are scheduled there.
public final class FaultInjectingTransport: FrameTransport {
    /// The wrapped transport. This transport takes over its `onFrame`; do not set that yourself.
    public let inner: any FrameTransport
    private let eventLoop: any EventLoop
    private var outbound: FaultInjector
    private var inbound: FaultInjector
    /// Receives the guest's frames after the `fromGuest` faults: at once, or later from a task on the
    /// event loop when the frame is delayed.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// The wrapped transport's `onClose`: reading or setting it goes straight through.
    public var onClose: (((any Error)?) -> Void)? {
        get { inner.onClose }
        set { inner.onClose = newValue }
    }
    private var closed = false

    /// Wraps `inner`, whose frames are then delivered through this transport's `onFrame`. `toGuest`
    /// applies to frames we send, `fromGuest` to frames we receive.
    public init(wrapping inner: any FrameTransport, on eventLoop: any EventLoop, toGuest: FaultConfiguration, fromGuest: FaultConfiguration) {
        self.inner = inner
        self.eventLoop = eventLoop
        self.outbound = FaultInjector(toGuest)
        self.inbound = FaultInjector(fromGuest)
        inner.onFrame = { [weak self] frame in self?.received(frame) }
    }

    /// The wrapped transport's MTU.
    public var mtu: Int { inner.mtu }
    /// The wrapped transport's guest MAC address, if it knows one.
    public var guestAddress: MACAddress? { inner.guestAddress }
    /// The wrapped transport's statistics: sent frames counted after the faults (dropped ones missing,
    /// duplicates twice), received frames before them. `counters` tells what the faults did.
    public var statistics: TransportStatistics { inner.statistics }
    /// Faults applied so far, per direction.
    public var counters: (toGuest: FaultCounters, fromGuest: FaultCounters) { (outbound.counters, inbound.counters) }

    private func received(_ frame: ByteBuffer) {
        let now = NIODeadline.now()
        for (copy, at) in inbound.process(frame, now: now) {
            if at <= now {
                onFrame?(copy)
            } else {
                eventLoop.assumeIsolated().scheduleTask(deadline: at) { [weak self] in
                    guard let self, !self.closed else { return }
                    self.onFrame?(copy)
                }
            }
        }
    }

    /// Applies the `toGuest` faults and hands the result to the wrapped transport, at once or from a task
    /// scheduled for its delivery time.
    ///
    /// Returns false when this transport is closed or an immediate send failed. A frame the faults drop,
    /// or a delayed one, returns true.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        guard !closed else { return false }
        let now = NIODeadline.now()
        var sent = true
        for (copy, at) in outbound.process(frame, now: now) {
            if at <= now {
                sent = inner.send(copy) && sent
            } else {
                eventLoop.assumeIsolated().scheduleTask(deadline: at) { [weak self] in
                    guard let self, !self.closed else { return }
                    self.inner.send(copy)
                }
            }
        }
        return sent
    }

    /// Closes the wrapped transport. Delayed frames still scheduled are discarded when their time comes.
    public func close() {
        closed = true
        inner.close()
    }
}
