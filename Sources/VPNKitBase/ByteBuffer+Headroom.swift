public import NIOCore

/// Room to leave in front of a payload so every lower-layer header can be written in place:
/// Ethernet with an 802.1Q tag (18) + IPv4 with maximal options (60) + TCP with maximal options (60).
public enum Headroom {
    /// Bytes for an Ethernet header with one 802.1Q VLAN tag (14 + 4).
    public static let ethernet = 18
    /// Bytes for the largest IPv4 header (20 bytes plus 40 bytes of options).
    public static let ipv4 = 60
    /// Bytes for the largest transport header (a TCP header with 40 bytes of options).
    public static let transport = 60
    /// Enough for any header stack this project emits.
    public static let maximum = ethernet + ipv4 + transport
}

extension ByteBuffer {
    /// Allocates a buffer whose reader index sits `headroom` bytes in, so headers can later be
    /// prepended with `prependHeader(length:)` without moving the payload.
    public static func withHeadroom(
        _ headroom: Int = Headroom.maximum, capacity: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headroom + capacity)
        buffer.moveWriterIndex(forwardBy: headroom)
        buffer.moveReaderIndex(forwardBy: headroom)
        return buffer
    }

    /// Grows the readable region `length` bytes toward the front: in place when there is headroom
    /// (the reader index moves back), otherwise by copying once into a new buffer with headroom.
    /// The new bytes are zeroed, ready for a header to be stored into them.
    public mutating func prependHeader(length: Int) {
        self.reserveHeadroom(length: length)
        self.setRepeatingByte(0, count: length, at: self.readerIndex)
    }

    /// Like `prependHeader(length:)` but leaves the new bytes as they were (the caller overwrites
    /// every one of them).
    public mutating func reserveHeadroom(length: Int) {
        precondition(length >= 0)
        if self.readerIndex >= length {
            self.moveReaderIndex(to: self.readerIndex - length)
        } else {
            var grown = ByteBuffer.withHeadroom(Headroom.maximum, capacity: length + self.readableBytes)
            grown.writeRepeatingByte(0, count: length)
            grown.writeImmutableBuffer(self)
            self = grown  // keeps headroom for further prepends
        }
    }

    /// The readable bytes in a new buffer of just their size (drops a large backing store).
    public func compacted() -> ByteBuffer {
        var copy = ByteBufferAllocator().buffer(capacity: self.readableBytes)
        copy.writeImmutableBuffer(self)
        return copy
    }

    /// Whether these bytes use less than half of the storage they share: held as they are, they
    /// would pin more than twice their size (a short segment read into a 2 KiB or 64 KiB frame
    /// buffer).
    public var isSparse: Bool { self.readableBytes * 2 < self.storageCapacity }

    /// These bytes in a buffer of their own when they are sparse (see `isSparse`), otherwise
    /// unchanged: what is held through this pins at most twice its size.
    public func compactedIfSparse() -> ByteBuffer {
        self.isSparse ? self.compacted() : self
    }

    /// The readable bytes as an array (tests and diagnostics; not for the hot path).
    public var readableByteArray: [UInt8] { self.getBytes(at: self.readerIndex, length: self.readableBytes) ?? [] }
}
