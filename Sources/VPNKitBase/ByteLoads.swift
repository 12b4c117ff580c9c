// Unaligned big-endian loads and stores over a ByteBuffer's readable bytes.
//
// Why this file is safe: every function checks `offset >= 0 && offset + width <= readableBytes`
// before touching memory and returns 0 (loads) or does nothing (stores) otherwise, so no read or
// write can leave the buffer. The raw-pointer accesses use `loadUnaligned`/`storeBytes(toByteOffset:)`,
// which have no alignment requirement. Header views validate their lengths once at construction, so
// on the hot path the check is a single well-predicted compare that never fails. This is one of the
// few files in the project allowed to use unsafe pointers.

public import NIOCore

extension ByteBuffer {
    /// Reads one byte at `offset` bytes past the reader index; 0 if out of range.
    @inlinable
    public func loadU8(at offset: Int) -> UInt8 {
        guard offset >= 0, offset < self.readableBytes else { return 0 }
        return self.withUnsafeReadableBytes { $0[offset] }
    }

    /// Reads a big-endian `UInt16` at `offset` bytes past the reader index; 0 if out of range.
    @inlinable
    public func loadU16(at offset: Int) -> UInt16 {
        guard offset >= 0, offset &+ 2 <= self.readableBytes else { return 0 }
        return self.withUnsafeReadableBytes {
            UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        }
    }

    /// Reads a big-endian `UInt32` at `offset` bytes past the reader index; 0 if out of range.
    @inlinable
    public func loadU32(at offset: Int) -> UInt32 {
        guard offset >= 0, offset &+ 4 <= self.readableBytes else { return 0 }
        return self.withUnsafeReadableBytes {
            UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        }
    }

    /// Reads six bytes (a MAC address) at `offset` as the low 48 bits of a `UInt64`; 0 if out of range.
    @inlinable
    public func loadU48(at offset: Int) -> UInt64 {
        guard offset >= 0, offset &+ 6 <= self.readableBytes else { return 0 }
        return self.withUnsafeReadableBytes {
            let high = UInt64(UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
            let low = UInt64(UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: offset &+ 2, as: UInt32.self)))
            return high << 32 | low
        }
    }

    /// Writes one byte at `offset` past the reader index; ignored if out of range.
    @inlinable
    public mutating func storeU8(_ value: UInt8, at offset: Int) {
        guard offset >= 0, offset < self.readableBytes else { return }
        self.withUnsafeMutableReadableBytes { $0[offset] = value }
    }

    /// Writes a big-endian `UInt16` at `offset` past the reader index; ignored if out of range.
    @inlinable
    public mutating func storeU16(_ value: UInt16, at offset: Int) {
        guard offset >= 0, offset &+ 2 <= self.readableBytes else { return }
        self.withUnsafeMutableReadableBytes {
            $0.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
        }
    }

    /// Writes a big-endian `UInt32` at `offset` past the reader index; ignored if out of range.
    @inlinable
    public mutating func storeU32(_ value: UInt32, at offset: Int) {
        guard offset >= 0, offset &+ 4 <= self.readableBytes else { return }
        self.withUnsafeMutableReadableBytes {
            $0.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
        }
    }

    /// Writes the low 48 bits of `value` as six big-endian bytes; ignored if out of range.
    @inlinable
    public mutating func storeU48(_ value: UInt64, at offset: Int) {
        guard offset >= 0, offset &+ 6 <= self.readableBytes else { return }
        self.withUnsafeMutableReadableBytes {
            $0.storeBytes(of: UInt16(truncatingIfNeeded: value >> 32).bigEndian, toByteOffset: offset, as: UInt16.self)
            $0.storeBytes(of: UInt32(truncatingIfNeeded: value).bigEndian, toByteOffset: offset &+ 2, as: UInt32.self)
        }
    }
}
