public import NIOCore
public import VPNKitBase

/// Wraps any event-loop transport and applies seeded faults to both directions, using the event
/// loop's clock: what `vpnkit run --fault-*` puts on the guest link.
public final class FaultInjectingTransport: FrameTransport {
    public let inner: any FrameTransport
    private let eventLoop: any EventLoop
    private var outbound: FaultInjector
    private var inbound: FaultInjector
    public var onFrame: ((ByteBuffer) -> Void)?
    public var onClose: (((any Error)?) -> Void)? {
        get { inner.onClose }
        set { inner.onClose = newValue }
    }
    private var closed = false

    /// `toGuest` applies to frames we send, `fromGuest` to frames we receive.
    public init(wrapping inner: any FrameTransport, on eventLoop: any EventLoop, toGuest: FaultConfiguration, fromGuest: FaultConfiguration) {
        self.inner = inner
        self.eventLoop = eventLoop
        self.outbound = FaultInjector(toGuest)
        self.inbound = FaultInjector(fromGuest)
        inner.onFrame = { [weak self] frame in self?.received(frame) }
    }

    public var mtu: Int { inner.mtu }
    public var guestAddress: MACAddress? { inner.guestAddress }
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

    public func close() {
        closed = true
        inner.close()
    }
}
