// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//
// Why this file is safe: the summing loop reads only inside an `UnsafeRawBufferPointer` handed to it
// by `withUnsafeReadableBytes`/`withUnsafeBytes`, with every load at an index `i` checked by the loop
// bounds (`i + 8 <= count`, `i + 2 <= count`, `i < count`) and made with `loadUnaligned`, so there is no
// out-of-bounds or misaligned access. This is one of the few files allowed to use unsafe pointers.

public import NIOCore

/// A running ones'-complement sum. Add pieces in wire order (a pseudo-header, a header, a payload);
/// pieces of odd length are handled, so a payload can be split anywhere.
public struct InternetChecksum: Sendable, Hashable {
    /// The 16-bit ones'-complement sum so far, in host byte order (not yet complemented).
    public var sum: UInt16 = 0
    /// Whether an odd number of bytes has been added so far.
    @usableFromInline internal var odd = false

    /// Creates an empty sum, ready for the first piece.
    public init() {}

    /// The checksum to write into a header: the complement of the sum.
    @inlinable public var value: UInt16 { ~self.sum }

    /// Adds a 16-bit value (a pseudo-header field) at the current, even, position.
    @inlinable
    public mutating func add(_ value: UInt16) {
        let v = self.odd ? value.byteSwapped : value
        self.sum = Self.onesAdd(self.sum, v)
    }

    /// Adds a 32-bit value as two 16-bit words.
    @inlinable
    public mutating func add(_ value: UInt32) {
        self.add(UInt16(truncatingIfNeeded: value >> 16))
        self.add(UInt16(truncatingIfNeeded: value))
    }

    /// Adds raw bytes.
    @inlinable
    public mutating func add(bytes: UnsafeRawBufferPointer) {
        let partial = Self.sum16(bytes)
        self.sum = Self.onesAdd(self.sum, self.odd ? partial.byteSwapped : partial)
        if bytes.count & 1 == 1 { self.odd.toggle() }
    }

    /// Adds `length` readable bytes of `buffer` starting `offset` bytes past its reader index.
    /// Out-of-range parts are ignored (callers pass validated ranges).
    @inlinable
    public mutating func add(_ buffer: ByteBuffer, offset: Int = 0, length: Int? = nil) {
        let range = clampedRange(offset: offset, length: length, count: buffer.readableBytes)
        buffer.withUnsafeReadableBytes { raw in
            self.add(bytes: UnsafeRawBufferPointer(rebasing: raw[range]))
        }
    }

    /// Ones'-complement addition of two 16-bit values.
    @inlinable
    public static func onesAdd(_ a: UInt16, _ b: UInt16) -> UInt16 {
        let (s, overflow) = a.addingReportingOverflow(b)
        return overflow ? s &+ 1 : s
    }

    /// The checksum of a whole buffer's readable bytes (complemented, ready to write).
    @inlinable
    public static func checksum(of buffer: ByteBuffer, offset: Int = 0, length: Int? = nil) -> UInt16 {
        var c = InternetChecksum()
        c.add(buffer, offset: offset, length: length)
        return c.value
    }

    /// The ones'-complement sum (not complemented) of `bytes`, in host order, as if the first byte
    /// were at an even position.
    @inlinable
    public static func sum16(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        let count = bytes.count
        // Sum little-endian 32-bit halves of 64-bit loads into four 64-bit accumulators; they cannot
        // overflow before 2^32 loads, far beyond any frame. Byte order is restored at the end
        // (RFC 1071 §2(B): the sum is byte-order independent up to a final swap).
        var a0: UInt64 = 0, a1: UInt64 = 0, a2: UInt64 = 0, a3: UInt64 = 0
        var i = 0
        while i &+ 16 <= count {
            let w0 = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let w1 = bytes.loadUnaligned(fromByteOffset: i &+ 8, as: UInt64.self)
            a0 &+= w0 & 0xFFFF_FFFF
            a1 &+= w0 >> 32
            a2 &+= w1 & 0xFFFF_FFFF
            a3 &+= w1 >> 32
            i &+= 16
        }
        var acc = a0 &+ a1 &+ a2 &+ a3
        while i &+ 2 <= count {
            acc &+= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i &+= 2
        }
        if i < count {
            // A trailing odd byte is the high-order byte of a zero-padded big-endian word, i.e. the
            // low byte of a native little-endian word.
            #if _endian(little)
            acc &+= UInt64(bytes[i])
            #else
            acc &+= UInt64(bytes[i]) << 8
            #endif
        }
        // Fold to 16 bits.
        acc = (acc & 0xFFFF_FFFF) &+ (acc >> 32)
        acc = (acc & 0xFFFF_FFFF) &+ (acc >> 32)
        acc = (acc & 0xFFFF) &+ (acc >> 16)
        acc = (acc & 0xFFFF) &+ (acc >> 16)
        acc = (acc & 0xFFFF) &+ (acc >> 16)
        let nativeSum = UInt16(truncatingIfNeeded: acc)
        #if _endian(little)
        return nativeSum.byteSwapped
        #else
        return nativeSum
        #endif
    }

    /// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
    @inlinable
    public static func updated(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        ~onesAdd(onesAdd(~checksum, ~old), new)
    }

    /// RFC 1624 for a 32-bit field (an address).
    @inlinable
    public static func updated(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        let c = updated(checksum, old: UInt16(truncatingIfNeeded: old >> 16), new: UInt16(truncatingIfNeeded: new >> 16))
        return updated(c, old: UInt16(truncatingIfNeeded: old), new: UInt16(truncatingIfNeeded: new))
    }
}

extension ByteBuffer {
    /// Finishes a partial transport checksum (see `FrameOffload`): the field `offset` bytes after
    /// `start` (both relative to the reader index) holds the pseudo-header's sum; the ones'-complement
    /// sum from `start` to the end, field included, is complemented into it. Does nothing when the
    /// field lies outside the readable bytes.
    public mutating func completePartialChecksum(start: Int, offset: Int) {
        let field = start + offset
        guard start >= 0, offset >= 0, field + 2 <= self.readableBytes else { return }
        var c = InternetChecksum()
        c.add(self, offset: start, length: self.readableBytes - start)
        self.setInteger(c.value, at: self.readerIndex + field)
    }
}
