import VPNKitBase

/// A bounds-checked cursor over a message: every read checks that its bytes exist and throws
/// `DNSError.truncated` otherwise, so no input can make a read leave the message.
struct DNSReader {
    let message: ByteView
    var offset: Int

    init(_ message: ByteView, offset: Int = 0) {
        self.message = message
        self.offset = offset
    }

    var remaining: Int { message.count - offset }

    /// Throws unless `count` bytes are available at the cursor.
    func require(_ count: Int) throws(DNSError) {
        guard count >= 0, offset >= 0, offset <= message.count, count <= message.count - offset else {
            throw .truncated(offset: offset, needed: count, available: message.count)
        }
    }

    mutating func readU8() throws(DNSError) -> UInt8 {
        try require(1)
        defer { offset += 1 }
        return message.loadU8(at: offset)
    }

    mutating func readU16() throws(DNSError) -> UInt16 {
        try require(2)
        defer { offset += 2 }
        return message.loadU16(at: offset)
    }

    mutating func readU32() throws(DNSError) -> UInt32 {
        try require(4)
        defer { offset += 4 }
        return message.loadU32(at: offset)
    }

    mutating func readBytes(_ count: Int) throws(DNSError) -> [UInt8] {
        try require(count)
        defer { offset += count }
        return message.view(from: offset, length: count).array
    }

    mutating func readName() throws(DNSError) -> DNSName {
        let (name, end) = try DNSName.read(from: message, at: offset)
        offset = end
        return name
    }
}
