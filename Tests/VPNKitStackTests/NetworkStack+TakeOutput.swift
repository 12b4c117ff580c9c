// The tests' view of the stack's output: the frames waiting, each joined into one buffer.

import NIOCore
import VPNKitBase
import VPNKitStack

extension NetworkStack {
    /// Every frame waiting to be sent, in order, its gathered payload joined to it (the frame a link
    /// would carry). Empties the stack's queue like `drainOutput(_:)`, over which it is built.
    func takeOutput() -> [ByteBuffer] {
        var frames: [ByteBuffer] = []
        drainOutput { frames.append($0.joined) }
        return frames
    }
}
