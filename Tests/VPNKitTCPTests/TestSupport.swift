// Helpers shared by the component tests: byte patterns and buffers that are dense or sparse.

import NIOCore
import VPNKitTCP

/// `count` bytes counting up from `start` (mod 256).
func bytes(_ count: Int, from start: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: start + $0) }
}

/// A buffer holding exactly `content` (dense: it fills its storage).
func dense(_ content: [UInt8]) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: content.count)
    buffer.writeBytes(content)
    return buffer
}

/// A buffer holding `content` in much larger storage (sparse: a few bytes read into a big buffer).
func sparse(_ content: [UInt8], capacity: Int = 4096) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: max(capacity, 4 * content.count))
    buffer.writeBytes(content)
    return buffer
}

/// All readable bytes of `buffer`.
func contents(_ buffer: ByteBuffer) -> [UInt8] {
    buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
}

/// The bytes of several buffers, one after the other.
func contents(_ buffers: [ByteBuffer]) -> [UInt8] {
    buffers.flatMap { contents($0) }
}

extension TCPConnection {
    /// The segments waiting to be sent, taken through `drainOutput(_:)`.
    mutating func takeOutput() -> [TCPOutgoing] {
        var segments: [TCPOutgoing] = []
        drainOutput { segments.append($0) }
        return segments
    }
}
