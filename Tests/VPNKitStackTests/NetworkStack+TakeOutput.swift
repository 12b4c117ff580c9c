// The tests' view of output: the stack's frames waiting, each joined into one buffer, and a
// connection's segments.

import NIOCore
import VPNKitBase
import VPNKitStack
import VPNKitTCP

extension NetworkStack {
    /// Every frame waiting to be sent, in order, its gathered payload joined to it (the frame a link
    /// would carry). Empties the stack's queue like `drainOutput(_:)`, over which it is built.
    func takeOutput() -> [ByteBuffer] {
        var frames: [ByteBuffer] = []
        drainOutput { frames.append($0.joined) }
        return frames
    }
}

extension TCPConnection {
    /// The segments waiting to be sent, taken through `drainOutput(_:)`.
    mutating func takeOutput() -> [TCPOutgoing] {
        var segments: [TCPOutgoing] = []
        drainOutput { segments.append($0) }
        return segments
    }
}
