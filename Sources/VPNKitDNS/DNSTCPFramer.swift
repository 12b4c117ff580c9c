public import NIOCore

/// DNS over TCP framing (RFC 1035 §4.2.2, RFC 7766 §8): each message is preceded by its length as
/// a 2-byte big-endian integer. The framer accumulates a connection's bytes and yields the complete
/// messages; it holds at most `maximumBufferedBytes` unframed bytes.
public struct DNSTCPFramer: Sendable {
    /// The largest message a 2-byte length can announce.
    public static let maximumMessageLength = 0xFFFF
    /// Enough for one largest message and its prefix.
    public static let minimumBufferLimit = maximumMessageLength + 2

    /// The most bytes held waiting for their message to complete.
    public let maximumBufferedBytes: Int
    private var buffer = ByteBuffer()

    /// A framer holding at most `maximumBufferedBytes` (raised to `minimumBufferLimit` if lower).
    public init(maximumBufferedBytes: Int = 2 * minimumBufferLimit) {
        self.maximumBufferedBytes = max(maximumBufferedBytes, Self.minimumBufferLimit)
    }

    /// Bytes received and not yet returned as a message.
    public var bufferedBytes: Int { buffer.readableBytes }

    /// Adds bytes received on the connection. Throws, keeping nothing of `bytes`, if the framer
    /// would then hold more than its limit: the peer is sending faster than messages are taken, and
    /// the connection should be closed.
    public mutating func append(_ bytes: ByteBuffer) throws(DNSError) {
        let total = buffer.readableBytes + bytes.readableBytes
        guard total <= maximumBufferedBytes else { throw .framerOverflow(buffered: total, limit: maximumBufferedBytes) }
        if buffer.readerIndex > 0, buffer.readerIndex >= buffer.readableBytes {
            buffer.discardReadBytes()
        }
        buffer.writeImmutableBuffer(bytes)
    }

    /// The next complete message, without its length prefix, or nil until one has fully arrived.
    public mutating func nextMessage() -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        return buffer.readSlice(length: Int(length))
    }

    /// Adds `bytes` and returns every message now complete.
    public mutating func messages(appending bytes: ByteBuffer) throws(DNSError) -> [ByteBuffer] {
        try append(bytes)
        var messages: [ByteBuffer] = []
        while let message = nextMessage() { messages.append(message) }
        return messages
    }

    /// `message` preceded by its 2-byte length; throws if it is longer than 65535 bytes.
    public static func frame(_ message: ByteBuffer) throws(DNSError) -> ByteBuffer {
        guard message.readableBytes <= maximumMessageLength else { throw .frameTooLong(message.readableBytes) }
        var framed = ByteBuffer()
        framed.reserveCapacity(message.readableBytes + 2)
        framed.writeInteger(UInt16(truncatingIfNeeded: message.readableBytes))
        framed.writeImmutableBuffer(message)
        return framed
    }
}
