// Read-only views over a frame's bytes, and the in-place header writer.
//
// Why this file is safe:
// - `ByteView` keeps the `ByteBuffer` it was made from (so the storage stays alive) and a pointer to
//   that buffer's readable bytes, obtained once. The pointer stays valid and the bytes stay unchanged
//   for the view's whole life: ByteBuffer is copy-on-write, and the view's own reference makes the
//   storage non-unique, so any mutation through another copy first copies the storage elsewhere;
//   storage is never reallocated while shared. (This is the ownership pattern NIO's
//   `withUnsafeReadableBytesWithStorageManagement` documents, with the buffer itself as the retain.)
// - Every load checks `offset >= 0 && offset + width <= count` and returns 0 otherwise; sub-views are
//   clamped to the parent's range. No read can leave the bytes the view covers.
// - `HeaderWriter` exists only inside `ByteBuffer.withHeaderWriter`, over a uniquely owned buffer
//   (NIO's mutable accessor guarantees that), is non-copyable so it cannot escape the closure, and
//   bounds-checks every store.
// This is one of the few files allowed to use unsafe pointers.

public import NIOCore

/// The part of `[offset, offset + length)` (to the end when `length` is nil) that lies inside
/// `[0, count)`, computed without overflow.
@inlinable
public func clampedRange(offset: Int, length: Int?, count: Int) -> Range<Int> {
    let lower = max(0, min(offset, count))
    var upper = count
    if let length {
        let (end, overflow) = offset.addingReportingOverflow(max(0, length))
        upper = overflow ? count : max(lower, min(end, count))
    }
    return lower..<upper
}

/// An immutable, bounds-checked window on bytes owned by a `ByteBuffer`. Loads are big-endian and
/// unaligned; out-of-range loads return 0. Making sub-views costs no allocation and no lookup.
public struct ByteView: @unchecked Sendable {
    /// The buffer that owns the bytes (its readable bytes begin at `offset` 0 of the root view).
    @usableFromInline let owner: ByteBuffer
    /// Offset of this view's first byte from the owner's reader index.
    @usableFromInline let start: Int
    /// Number of bytes in view.
    public let count: Int
    /// Address of this view's first byte; nil only when the owner has no readable bytes.
    @usableFromInline let base: UnsafeRawPointer?

    /// A view of `buffer`'s readable bytes.
    @inlinable
    public init(_ buffer: ByteBuffer) {
        self.owner = buffer
        self.start = 0
        self.count = buffer.readableBytes
        self.base = buffer.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress) }
    }

    @inlinable
    init(owner: ByteBuffer, start: Int, count: Int, base: UnsafeRawPointer?) {
        self.owner = owner
        self.start = start
        self.count = count
        self.base = base
    }

    /// The bytes `[offset, offset + length)` of this view, clamped to it.
    @inlinable
    public func view(from offset: Int, length: Int? = nil) -> ByteView {
        let range = clampedRange(offset: offset, length: length, count: count)
        return ByteView(owner: owner, start: start &+ range.lowerBound, count: range.count, base: base.map { $0 + range.lowerBound })
    }

    /// The capacity of the storage this view keeps alive.
    @inlinable public var storageCapacity: Int { owner.capacity }

    /// The bytes as a `ByteBuffer` slice sharing the storage (no copy).
    @inlinable
    public var buffer: ByteBuffer {
        owner.getSlice(at: owner.readerIndex &+ start, length: count) ?? ByteBuffer()
    }

    /// The byte at `offset`, or 0 when `offset` is outside the view.
    @inlinable
    public func loadU8(at offset: Int) -> UInt8 {
        guard offset >= 0, offset < count, let base else { return 0 }
        return base.load(fromByteOffset: offset, as: UInt8.self)
    }

    /// The big-endian 16-bit value at `offset`, or 0 when any of its two bytes is outside the view.
    @inlinable
    public func loadU16(at offset: Int) -> UInt16 {
        guard offset >= 0, offset <= count &- 2, let base else { return 0 }
        return UInt16(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    /// The big-endian 32-bit value at `offset`, or 0 when any of its four bytes is outside the view.
    @inlinable
    public func loadU32(at offset: Int) -> UInt32 {
        guard offset >= 0, offset <= count &- 4, let base else { return 0 }
        return UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Six bytes as the low 48 bits of a `UInt64` (a MAC address).
    @inlinable
    public func loadU48(at offset: Int) -> UInt64 {
        guard offset >= 0, offset <= count &- 6, let base else { return 0 }
        let high = UInt64(UInt16(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
        let low = UInt64(UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset &+ 2, as: UInt32.self)))
        return high << 32 | low
    }

    /// The ones'-complement sum of `[offset, offset + length)` (clamped), for checksums.
    @inlinable
    public func sum16(from offset: Int = 0, length: Int? = nil) -> (sum: UInt16, count: Int) {
        let part = view(from: offset, length: length)
        guard let base = part.base, part.count > 0 else { return (0, 0) }
        return (InternetChecksum.sum16(UnsafeRawBufferPointer(start: base, count: part.count)), part.count)
    }

    /// The bytes copied into an array (tests and diagnostics; not for the hot path).
    public var array: [UInt8] {
        guard let base, count > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: base, count: count))
    }
}

extension InternetChecksum {
    /// Adds `length` bytes of `view` from `offset` (clamped to the view).
    @inlinable
    public mutating func add(_ view: ByteView, offset: Int = 0, length: Int? = nil) {
        let (partial, count) = view.sum16(from: offset, length: length)
        self.sum = Self.onesAdd(self.sum, self.odd ? partial.byteSwapped : partial)
        if count & 1 == 1 { self.odd.toggle() }
    }
}

/// Writes a header into the bytes in front of a payload. Only available inside
/// `ByteBuffer.withHeaderWriter`; every store is bounds-checked and out-of-range stores are ignored.
public struct HeaderWriter: ~Copyable {
    @usableFromInline let bytes: UnsafeMutableRawBufferPointer

    @inlinable init(_ bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// The number of bytes from the header's start to the end of the buffer (header + payload).
    @inlinable public var count: Int { bytes.count }

    /// Stores `value` at `offset`; does nothing when `offset` is outside the buffer.
    @inlinable
    public func storeU8(_ value: UInt8, at offset: Int) {
        guard offset >= 0, offset < bytes.count else { return }
        bytes.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    /// Stores `value` big-endian at `offset`; does nothing unless both bytes fit in the buffer.
    @inlinable
    public func storeU16(_ value: UInt16, at offset: Int) {
        guard offset >= 0, offset <= bytes.count &- 2 else { return }
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Stores `value` big-endian at `offset`; does nothing unless all four bytes fit in the buffer.
    @inlinable
    public func storeU32(_ value: UInt32, at offset: Int) {
        guard offset >= 0, offset <= bytes.count &- 4 else { return }
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// Stores the low 48 bits of `value` big-endian at `offset` (a MAC address); does nothing unless all six
    /// bytes fit.
    @inlinable
    public func storeU48(_ value: UInt64, at offset: Int) {
        guard offset >= 0, offset <= bytes.count &- 6 else { return }
        bytes.storeBytes(of: UInt16(truncatingIfNeeded: value >> 32).bigEndian, toByteOffset: offset, as: UInt16.self)
        bytes.storeBytes(of: UInt32(truncatingIfNeeded: value).bigEndian, toByteOffset: offset &+ 2, as: UInt32.self)
    }

    /// Copies `source` to `offset` (clamped).
    @inlinable
    public func storeBytes(_ source: [UInt8], at offset: Int) {
        guard offset >= 0, offset < bytes.count else { return }
        let n = min(source.count, bytes.count - offset)
        source.withUnsafeBytes { raw in
            guard let from = raw.baseAddress, let to = bytes.baseAddress, n > 0 else { return }
            (to + offset).copyMemory(from: from, byteCount: n)
        }
    }

    /// The ones'-complement sum of `[offset, offset + length)` (clamped), for checksums.
    @inlinable
    public func sum16(from offset: Int = 0, length: Int? = nil) -> UInt16 {
        let range = clampedRange(offset: offset, length: length, count: bytes.count)
        return InternetChecksum.sum16(UnsafeRawBufferPointer(rebasing: bytes[range]))
    }

    /// Adds `[offset, offset + length)` (clamped) to a running checksum.
    @inlinable
    public func add(to checksum: inout InternetChecksum, from offset: Int = 0, length: Int? = nil) {
        let range = clampedRange(offset: offset, length: length, count: bytes.count)
        checksum.add(bytes: UnsafeRawBufferPointer(rebasing: bytes[range]))
    }
}

extension ByteBuffer {
    /// Makes room for a `length`-byte header in front of the readable bytes (in place when there is
    /// headroom; see `prependHeader(length:)`), zeroes it and hands a writer over the header and
    /// everything after it to `body`, with a single uniqueness check for all the stores.
    @inlinable
    public mutating func withHeaderWriter<T>(length: Int, _ body: (inout HeaderWriter) -> T) -> T {
        self.reserveHeadroom(length: length)
        return self.withUnsafeMutableReadableBytes { raw in
            if length > 0, let base = raw.baseAddress { base.initializeMemory(as: UInt8.self, repeating: 0, count: min(length, raw.count)) }
            var writer = HeaderWriter(raw)
            return body(&writer)
        }
    }
}
