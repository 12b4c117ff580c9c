public import NIOCore
public import VPNKitBase

/// A domain name as a sequence of labels (RFC 1035 §3.1), without the root label.
///
/// Equality and hashing ignore ASCII case, as DNS name comparison does (RFC 4343); the labels keep
/// the case they were written with. Every value satisfies the wire limits: labels of 1…63 bytes and
/// at most 255 bytes in wire form.
public struct DNSName: Sendable, Hashable, CustomStringConvertible {
    /// The longest name in wire form, length bytes and root label included.
    public static let maximumWireLength = 255
    /// The longest label.
    public static let maximumLabelLength = 63
    /// A name can have at most this many labels, so a reader never needs to follow more pointers.
    static let maximumPointers = 127

    /// The labels, most specific first ("www", "example", "com").
    public let labels: [[UInt8]]

    /// The root name ".".
    public static let root = DNSName(uncheckedLabels: [])

    init(uncheckedLabels: [[UInt8]]) { self.labels = uncheckedLabels }

    /// A name from raw labels; throws if a label is empty or longer than 63 bytes, or the name is
    /// longer than 255 bytes in wire form.
    public init(labels: [[UInt8]]) throws(DNSError) {
        var length = 1
        for label in labels {
            guard !label.isEmpty else { throw .emptyLabel(DNSName(uncheckedLabels: labels).description) }
            guard label.count <= Self.maximumLabelLength else { throw .labelTooLong(label.count) }
            length += label.count + 1
        }
        guard length <= Self.maximumWireLength else { throw .nameTooLong(length) }
        self.labels = labels
    }

    /// Parses dotted text ("example.com", "example.com." or "." for the root; "" is the root too).
    /// One trailing dot is tolerated; labels are taken as UTF-8 bytes, with no escapes.
    public init(_ text: some StringProtocol) throws(DNSError) {
        var body = Substring(text)
        if body.hasSuffix(".") { body = body.dropLast() }
        if body.isEmpty {
            self = .root
            return
        }
        let parts = body.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.allSatisfy({ !$0.isEmpty }) else { throw .emptyLabel(String(text)) }
        try self.init(labels: parts.map { Array($0.utf8) })
    }

    /// The reverse-lookup name of `address`: "d.c.b.a.in-addr.arpa" (RFC 1035 §3.5).
    public init(reverseOf address: IPv4Address) {
        let octets = address.octets.reversed().map { Array(String($0).utf8) }
        self.init(uncheckedLabels: octets + [Array("in-addr".utf8), Array("arpa".utf8)])
    }

    /// The address this name is the reverse-lookup name of, if it has the exact form
    /// "d.c.b.a.in-addr.arpa" with decimal octets of 1…3 digits.
    public var reverseIPv4Address: IPv4Address? {
        guard labels.count == 6,
            DNSName(uncheckedLabels: Array(labels[4...])) == DNSName(uncheckedLabels: [Array("in-addr".utf8), Array("arpa".utf8)])
        else { return nil }
        var value: UInt32 = 0
        for label in labels[0..<4].reversed() {
            guard label.count <= 3, label.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            let octet = label.reduce(UInt32(0)) { $0 * 10 + UInt32($1 - 0x30) }
            guard octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        return IPv4Address(rawValue: value)
    }

    /// The reverse-lookup name of `address`: its 32 nibbles, lowest first, then "ip6.arpa"
    /// (RFC 3596 §2.5), such as "1.0.0.0…5.6.0.0.0.0.d.f.ip6.arpa" for fd00:65::1.
    public init(reverseOf address: IPv6Address) {
        let hex = Array("0123456789abcdef".utf8)
        var labels: [[UInt8]] = []
        labels.reserveCapacity(34)
        for octet in address.octets.reversed() {
            labels.append([hex[Int(octet & 0x0F)]])
            labels.append([hex[Int(octet >> 4)]])
        }
        self.init(uncheckedLabels: labels + [Array("ip6".utf8), Array("arpa".utf8)])
    }

    /// The address this name is the reverse-lookup name of, if it has the exact form of 32
    /// single hexadecimal digits (either case) followed by "ip6.arpa".
    public var reverseIPv6Address: IPv6Address? {
        guard labels.count == 34,
            DNSName(uncheckedLabels: Array(labels[32...])) == DNSName(uncheckedLabels: [Array("ip6".utf8), Array("arpa".utf8)])
        else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, label) in labels[0..<32].reversed().enumerated() {
            guard label.count == 1, let nibble = Self.hexValue(label[0]) else { return nil }
            if index < 16 { high = high << 4 | UInt64(nibble) } else { low = low << 4 | UInt64(nibble) }
        }
        return IPv6Address(high: high, low: low)
    }

    /// The value of one ASCII hexadecimal digit.
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        case 0x61...0x66: return byte - 0x61 + 10
        default: return nil
        }
    }

    /// The length of the uncompressed wire form, root label included.
    public var wireLength: Int { labels.reduce(1) { $0 + $1.count + 1 } }

    /// True for the root name.
    public var isRoot: Bool { labels.isEmpty }

    /// Dotted text without the trailing dot ("." for the root). Dots and backslashes inside a label
    /// are escaped with a backslash, other bytes outside printable ASCII as `\DDD`.
    public var description: String {
        guard !labels.isEmpty else { return "." }
        return labels.map { label in
            var text = ""
            for byte in label {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    text.append("\\")
                    text.append(Character(Unicode.Scalar(byte)))
                case 0x21...0x7E:
                    text.append(Character(Unicode.Scalar(byte)))
                default:
                    let digits = String(byte)
                    text.append("\\" + String(repeating: "0", count: 3 - digits.count) + digits)
                }
            }
            return text
        }.joined(separator: ".")
    }

    /// Compares names label by label, ignoring ASCII case (RFC 4343), so `Example.COM` equals `example.com`.
    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        guard lhs.labels.count == rhs.labels.count else { return false }
        for (left, right) in zip(lhs.labels, rhs.labels) {
            guard left.count == right.count else { return false }
            for (a, b) in zip(left, right) where lowercase(a) != lowercase(b) { return false }
        }
        return true
    }

    /// Hashes the ASCII-lowercased labels, consistent with the case-insensitive `==`.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(labels.count)
        for label in labels {
            hasher.combine(label.count)
            for byte in label { hasher.combine(Self.lowercase(byte)) }
        }
    }

    @inline(__always)
    static func lowercase(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }

    /// The name with ASCII letters in lower case.
    public func lowercased() -> DNSName {
        DNSName(uncheckedLabels: labels.map { $0.map(Self.lowercase) })
    }

    // MARK: Wire form

    /// Reads the possibly compressed name at `offset` of `message` (RFC 1035 §4.1.4) and returns
    /// it with the offset just past it in the original byte sequence.
    ///
    /// Each compression pointer must point strictly before the run of labels that led to it, which
    /// rules out loops and forward pointers; at most 127 pointers are followed, and the name may
    /// not exceed 255 bytes. Label types 0b01 and 0b10 are rejected.
    public static func read(from message: ByteView, at offset: Int) throws(DNSError) -> (name: DNSName, end: Int) {
        var labels: [[UInt8]] = []
        var wireLength = 1
        var position = offset
        var segmentStart = offset
        var end: Int?
        var pointers = 0
        while true {
            guard position >= 0, position < message.count else {
                throw .truncated(offset: position, needed: 1, available: message.count)
            }
            let byte = message.loadU8(at: position)
            switch byte & 0xC0 {
            case 0x00:
                let length = Int(byte)
                if length == 0 {
                    return (DNSName(uncheckedLabels: labels), end ?? position + 1)
                }
                guard length <= message.count - position - 1 else {
                    throw .truncated(offset: position + 1, needed: length, available: message.count)
                }
                wireLength += length + 1
                guard wireLength <= maximumWireLength else { throw .nameTooLong(wireLength) }
                labels.append(message.view(from: position + 1, length: length).array)
                position += 1 + length
            case 0xC0:
                guard position + 2 <= message.count else {
                    throw .truncated(offset: position, needed: 2, available: message.count)
                }
                let target = Int(message.loadU16(at: position) & 0x3FFF)
                guard target < segmentStart else { throw .badCompressionPointer(offset: position, target: target) }
                pointers += 1
                guard pointers <= maximumPointers else { throw .tooManyCompressionPointers(offset: offset) }
                if end == nil { end = position + 2 }
                position = target
                segmentStart = target
            default:
                throw .reservedLabelType(offset: position, byte: byte)
            }
        }
    }

    /// Writes the uncompressed wire form.
    public func write(to buffer: inout ByteBuffer) {
        for label in labels {
            buffer.writeInteger(UInt8(truncatingIfNeeded: label.count))
            buffer.writeBytes(label)
        }
        buffer.writeInteger(UInt8(0))
    }
}

/// Writes names into one message, replacing each suffix already written by a pointer to it
/// (RFC 1035 §4.1.4) when enabled.
struct DNSNameCompressor {
    let enabled: Bool
    /// The writer index at which the message starts; pointers are relative to it.
    let messageStart: Int
    var offsets: [DNSName: Int] = [:]

    init(enabled: Bool, messageStart: Int) {
        self.enabled = enabled
        self.messageStart = messageStart
    }

    mutating func write(_ name: DNSName, to buffer: inout ByteBuffer) {
        guard enabled else {
            name.write(to: &buffer)
            return
        }
        for index in name.labels.indices {
            let suffix = DNSName(uncheckedLabels: Array(name.labels[index...]))
            if let offset = offsets[suffix] {
                buffer.writeInteger(UInt16(0xC000 | offset))
                return
            }
            let here = buffer.writerIndex - messageStart
            if here <= 0x3FFF { offsets[suffix] = here }
            let label = name.labels[index]
            buffer.writeInteger(UInt8(truncatingIfNeeded: label.count))
            buffer.writeBytes(label)
        }
        buffer.writeInteger(UInt8(0))
    }
}
