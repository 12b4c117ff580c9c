public import NIOCore

/// Buffers handed on, kept to be written into again: `take()` gives the oldest once the ring is
/// full (by then its reader has usually let it go), nil before. A buffer still referenced
/// elsewhere is never written over: ByteBuffer copies on write, so clearing it gives fresh storage,
/// which is what a new buffer would have cost anyway.
public struct BufferRing {
    private var buffers: [ByteBuffer] = []
    private var cursor = 0
    /// The most buffers kept.
    public let limit: Int

    /// An empty ring keeping at most `limit` buffers.
    public init(limit: Int) { self.limit = limit }

    /// The oldest buffer kept, once the ring is full (nil before, or when it has no storage).
    public mutating func take() -> ByteBuffer? {
        guard buffers.count == limit else { return nil }
        var buffer = ByteBuffer()
        swap(&buffer, &buffers[cursor])
        return buffer.capacity > 0 ? buffer : nil
    }

    /// Keeps `buffer` (in place of the oldest once full).
    public mutating func put(_ buffer: ByteBuffer) {
        if buffers.count < limit {
            buffers.append(buffer)
        } else {
            buffers[cursor] = buffer
            cursor = (cursor + 1) % limit
        }
    }

    /// Forgets every buffer.
    public mutating func removeAll() {
        buffers.removeAll()
        cursor = 0
    }
}
