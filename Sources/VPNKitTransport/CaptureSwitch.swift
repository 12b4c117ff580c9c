public import NIOCore
public import VPNKitBase

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Wraps a transport so that capturing can be switched on and off while frames flow: with no sink
/// it passes frames straight through (one optional check per frame); with one, every frame in both
/// directions is copied to it, stamped with the wall clock. Confined to the transport's thread.
///
/// Over a transport with offloads (a TAP device with a virtio-net header) it offers the same
/// offloads; captured frames are then as they crossed the device: TCP segments up to 64 KiB and
/// checksums left partial, as tcpdump shows them on an interface with offloads.
public final class CaptureSwitch: OffloadingFrameTransport {
    /// The transport being wrapped.
    public let inner: any FrameTransport
    /// Where frames go now; nil while capturing is off. Setting a new sink flushes and drops the old one.
    public var sink: (any CaptureSink)? {
        didSet { (oldValue as? PcapFileSink)?.flush() }
    }
    /// Frames copied to a sink since this switch was made.
    public private(set) var framesCaptured: UInt64 = 0
    /// Called for every frame from the guest (after it was captured).
    public var onFrame: ((ByteBuffer) -> Void)?
    /// The wrapped transport's offloads (none unless it is an `OffloadingFrameTransport`).
    public var offloads: LinkOffloads { offloadingInner?.offloads ?? [] }
    /// With an offloading inner transport: called for every frame from the guest, with its metadata,
    /// instead of `onFrame` (after it was captured).
    public var onOffloadedFrame: ((ByteBuffer, FrameOffload) -> Void)? {
        didSet {
            guard let offloadingInner else { return }
            if onOffloadedFrame == nil {
                offloadingInner.onOffloadedFrame = nil
            } else {
                offloadingInner.onOffloadedFrame = { [weak self] frame, offload in
                    guard let self else { return }
                    if let sink = self.sink { self.capture(frame, into: sink) }
                    self.onOffloadedFrame?(frame, offload)
                }
            }
        }
    }
    /// `inner` when it takes offloads, found once (not cast again on every frame sent).
    private let offloadingInner: (any OffloadingFrameTransport)?
    /// The wrapped transport's end-of-link callback.
    public var onClose: (((any Error)?) -> Void)? {
        get { inner.onClose }
        set { inner.onClose = newValue }
    }

    /// Gives each captured frame's stack time and wall-clock nanoseconds.
    private let clock: () -> (time: NIODeadline, wallClockNanoseconds: Int64)

    /// Wraps `inner`, capturing to `sink` from the start when one is given. `now`, when given, is
    /// the clock frames are stamped with (a simulation's virtual time; files then start near 1970);
    /// by default the loop's clock and the wall clock.
    public init(wrapping inner: any FrameTransport, sink: (any CaptureSink)? = nil, now: (() -> NIODeadline)? = nil) {
        self.inner = inner
        if let now {
            self.clock = {
                let time = now()
                return (time, Int64(time.uptimeNanoseconds))
            }
        } else {
            self.clock = {
                var wall = timespec()
                clock_gettime(CLOCK_REALTIME, &wall)
                return (.now(), Int64(wall.tv_sec) * 1_000_000_000 + Int64(wall.tv_nsec))
            }
        }
        self.offloadingInner = inner as? any OffloadingFrameTransport
        self.sink = sink
        inner.onFrame = { [weak self] frame in
            guard let self else { return }
            if let sink = self.sink { self.capture(frame, into: sink) }
            self.onFrame?(frame)
        }
    }

    /// The wrapped transport's MTU.
    public var mtu: Int { inner.mtu }
    /// The wrapped transport's guest MAC address, if it knows one.
    public var guestAddress: MACAddress? { inner.guestAddress }
    /// The wrapped transport's counters.
    public var statistics: TransportStatistics { inner.statistics }

    /// Captures `frame` when a sink is set, then sends it on the wrapped transport.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        if let sink { capture(frame, into: sink) }
        return inner.send(frame)
    }

    /// Captures the frame when a sink is set, then sends it with its offloads on the wrapped
    /// transport (joined, as `send(_:)`, when that has no offloads).
    @discardableResult
    public func send(_ frame: ByteBuffer, payload: ByteBuffer?, offload: FrameOffload) -> Bool {
        if let offloadingInner {
            if let sink { capture(OutgoingFrame(frame: frame, payload: payload).joined, into: sink) }
            return offloadingInner.send(frame, payload: payload, offload: offload)
        }
        // Joined once, for the capture and the wrapped transport alike.
        let whole = OutgoingFrame(frame: frame, payload: payload).joined
        if let sink { capture(whole, into: sink) }
        return inner.send(whole)
    }

    /// Flushes a file sink and closes the wrapped transport.
    public func close() {
        (sink as? PcapFileSink)?.flush()
        inner.close()
    }

    private func capture(_ frame: ByteBuffer, into sink: any CaptureSink) {
        framesCaptured &+= 1
        let stamp = clock()
        sink.capture(frame, at: stamp.time, wallClockNanoseconds: stamp.wallClockNanoseconds)
    }
}
