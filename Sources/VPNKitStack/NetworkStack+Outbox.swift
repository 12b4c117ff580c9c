// The way out of the stack: frames queue in the outbox, the owner drains them through
// `drainOutput(_:)`, and buffers that held only headers are recycled for the next frames.

import NIOCore
public import VPNKitBase

extension NetworkStack {
    /// The stack's one way out: hands every frame waiting to be sent to `body`, in order, each with
    /// the offloads it asks of the link (always `.none` unless `linkOffloads` allows some), then
    /// empties the queue keeping its storage (no array per flush). Frames queued while it runs are
    /// handed over in the same call. A frame's buffer may be reused by the stack once `body`
    /// returns, so a caller that keeps it keeps a copy-on-write reference, never shared bytes.
    public func drainOutput(_ body: (OutgoingFrame) -> Void) {
        var index = 0
        while index < outbox.count {
            let frame = outbox[index]
            index += 1
            body(frame)
            let capacity = frame.frame.capacity
            if capacity >= Headroom.maximum, capacity <= Self.headerBufferCapacity, headerBuffers.count < Self.headerBufferLimit {
                headerBuffers.append(frame.frame)
            }
        }
        outbox.removeAll(keepingCapacity: true)
    }

    /// An empty buffer with `Headroom.maximum` in front, for a frame that is only headers: a
    /// recycled one when there is one.
    func headerBuffer() -> ByteBuffer {
        guard var buffer = headerBuffers.popLast() else { return .withHeadroom(capacity: 0) }
        buffer.clear()
        buffer.moveWriterIndex(to: Headroom.maximum)
        buffer.moveReaderIndex(to: Headroom.maximum)
        return buffer
    }

    /// Whether frames are waiting for `drainOutput(_:)`.
    public var hasOutput: Bool { !outbox.isEmpty }

    func transmit(_ frame: ByteBuffer, offload: FrameOffload = .none, payload: ByteBuffer? = nil) {
        counters.increment(.framesSent)
        let first = outbox.isEmpty
        outbox.append(OutgoingFrame(frame: frame, offload: offload, payload: payload))
        if first { onOutput?() }
    }
}
