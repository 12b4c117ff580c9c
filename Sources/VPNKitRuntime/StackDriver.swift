public import NIOCore
public import VPNKitStack
import VPNKitBase
public import VPNKitTransport
#if os(Linux)
import VPNKitReactor
#endif

/// Runs a `NetworkStack` on one SwiftNIO event loop over a transport: frames from the transport go
/// into the stack with the loop's clock, frames out of the stack go to the transport one by one, and
/// the stack's next deadline is kept as one scheduled task. Confined to its event loop.
public final class StackDriver {
    /// The stack being driven. Use it only on `eventLoop`, through `perform(_:)` when the call
    /// produces frames, so that they are sent at once.
    public let stack: NetworkStack
    /// The link the stack's frames travel over; once started, the driver owns its `onFrame` and
    /// `onClose`.
    public let transport: any FrameTransport
    /// The transport, when it offers offloads (a TAP device with a virtio-net header): frames then
    /// travel with their `FrameOffload` both ways.
    private let offloading: (any OffloadingFrameTransport)?
    /// The loop the driver, the stack, its sockets and the transport's callbacks all run on.
    public let eventLoop: any EventLoop
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    #if os(Linux)
    /// On a reactor: one timer armed again and again (no allocation per arming), instead of `timer`.
    private lazy var reactorTimer: ReactorTimer? = (eventLoop as? Reactor).map { reactor in
        ReactorTimer(reactor: reactor) { [weak self] in self?.timerFired() }
    }
    #endif
    private var stopped = false
    /// Inside one of our own calls into the stack, which flush (or schedule the turn's flush) when
    /// they return.
    private var busy = false
    private var flushScheduled = false
    /// The task that ends a turn of the loop in which frames came in or output appeared: the ACKs
    /// connections held go out (one per connection for every frame the turn read), then everything
    /// queued. Made once, not a closure allocated per turn.
    private lazy var scheduledFlush: () -> Void = { [weak self] in
        guard let self else { return }
        self.flushScheduled = false
        guard !self.stopped else { return }
        if self.stack.hasHeldACKs {
            self.busy = true
            self.stack.sendHeldACKs(now: .now())
            self.busy = false
        }
        self.flush()
    }
    /// Called when the transport ends (nil error: orderly end).
    public var onTransportClosed: (((any Error)?) -> Void)?
    /// Objects that live as long as the driver (sockets, services attached to the stack); released
    /// by `stop()`.
    public var attachments: [any StackDriverAttachment] = []

    /// Creates a driver for `stack` over `transport`; nothing happens until `start()`. Must be called
    /// on `eventLoop`.
    public init(stack: NetworkStack, transport: any FrameTransport, eventLoop: any EventLoop) {
        eventLoop.preconditionInEventLoop()
        self.stack = stack
        self.transport = transport
        self.eventLoop = eventLoop
        // Every frame one turn of the loop reads (a TAP drain, a socket read of many frames) is
        // handed over before the turn's tasks run, `scheduledFlush` among them: one ACK per
        // connection for all of them.
        stack.holdsACKs = true
        if let offloading = transport as? any OffloadingFrameTransport, !offloading.offloads.isEmpty {
            self.offloading = offloading
            stack.linkOffloads = offloading.offloads
        } else {
            self.offloading = nil
        }
    }

    /// Starts receiving, announces the stack (gratuitous ARP, if configured) and arms the timers.
    /// Call it once, on `eventLoop`.
    public func start() {
        eventLoop.preconditionInEventLoop()
        if let offloading {
            offloading.onOffloadedFrame = { [weak self] frame, offload in self?.receive(frame, offload: offload) }
        } else {
            transport.onFrame = { [weak self] frame in self?.receive(frame, offload: .none) }
        }
        stack.onOutput = { [weak self] in self?.outputQueued() }
        transport.onClose = { [weak self] error in
            guard let self else { return }
            self.stop()
            self.onTransportClosed?(error)
        }
        stack.start(now: .now())
        flush()
    }

    /// One frame from the link into the stack. What it produced goes out once the turn of the loop
    /// has handed over every frame it read: per turn, not per frame, the transport is written and
    /// the timer re-armed.
    private func receive(_ frame: ByteBuffer, offload: FrameOffload) {
        busy = true
        stack.receive(frame, offload: offload, now: .now())
        busy = false
        scheduleFlush()
    }

    /// Runs `body` against the stack with the loop's current time (to send a datagram, say), then
    /// transmits what it produced, even when `body` throws. Must be called on `eventLoop`.
    public func perform<T>(_ body: (NetworkStack, NIODeadline) throws -> T) rethrows -> T {
        eventLoop.preconditionInEventLoop()
        let wasBusy = busy
        busy = true
        defer {
            busy = wasBusy
            flush()
        }
        return try body(stack, .now())
    }

    /// Output appeared outside our own calls (a socket used from a task, a service's timer): send
    /// it on the next turn of the loop, once for everything queued until then.
    private func outputQueued() {
        guard !busy else { return }
        scheduleFlush()
    }

    private func scheduleFlush() {
        guard !flushScheduled, !stopped else { return }
        flushScheduled = true
        eventLoop.assumeIsolated().execute(scheduledFlush)
    }

    /// Sends every frame the stack has produced and re-arms the timer for its next deadline. Frames
    /// the transport refuses are counted in `transmitDrops`; after `stop()` it does nothing.
    public func flush() {
        guard !stopped else { return }
        // Frames handed over through `perform`: their held ACKs go at the end of this turn.
        if stack.hasHeldACKs { scheduleFlush() }
        if stack.hasOutput {
            var drops: UInt64 = 0
            if let offloading {
                stack.drainOutput { outgoing in
                    if !offloading.send(outgoing.frame, payload: outgoing.payload, offload: outgoing.offload) { drops += 1 }
                }
            } else {
                let transport = self.transport
                stack.drainOutput { outgoing in
                    if !transport.send(outgoing.joined) { drops += 1 }
                }
            }
            if drops > 0 { stack.counters.increment(.transmitDrops, by: drops) }
        }
        armTimer()
    }

    private func armTimer() {
        guard let next = stack.nextDeadline else {
            cancelTimer()
            return
        }
        if let current = timerDeadline, current <= next { return }
        timerDeadline = next
        #if os(Linux)
        if let reactorTimer {
            reactorTimer.arm(at: next)
            return
        }
        #endif
        timer?.cancel()
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: next) { [weak self] in self?.timerFired() }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        #if os(Linux)
        reactorTimer?.cancel()
        #endif
    }

    private func timerFired() {
        guard !stopped else { return }
        timerDeadline = nil
        timer = nil
        busy = true
        stack.poll(now: .now())
        busy = false
        flush()
    }

    deinit {
        timer?.cancel()
        #if os(Linux)
        reactorTimer?.cancel()
        #endif
        transport.onFrame = nil
        offloading?.onOffloadedFrame = nil
    }

    /// Stops the timers, detaches from the stack and closes the transport, then releases
    /// `attachments`, telling those that are a ``StackDriverAttachment``. Later calls do nothing;
    /// `onTransportClosed` is not called for a stop you asked for.
    public func stop() {
        guard !stopped else { return }
        stopped = true
        cancelTimer()
        transport.onFrame = nil
        offloading?.onOffloadedFrame = nil
        stack.onOutput = nil
        transport.close()
        let attached = attachments
        attachments.removeAll()
        for attachment in attached { attachment.driverDidStop() }
    }
}

/// An attachment that holds resources of its own (host sockets, timers): told when the driver stops.
public protocol StackDriverAttachment: AnyObject {
    /// Called once, on the driver's event loop, when the driver stops: close host sockets and cancel
    /// timers here.
    func driverDidStop()
}
