import NIOCore
import VPNKitBase
import VPNKitDNS

/// A buffer holding `bytes`.
func buffer(_ bytes: [UInt8]) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeBytes(bytes)
    return buffer
}

/// The uncompressed wire form of dotted `text`, built by hand (independent of `DNSName`).
func wireName(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    for label in text.split(separator: ".") {
        bytes.append(UInt8(label.utf8.count))
        bytes += Array(label.utf8)
    }
    return bytes + [0]
}

func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
func be32(_ value: UInt32) -> [UInt8] { be16(UInt16(value >> 16)) + be16(UInt16(value & 0xFFFF)) }

/// A standard query built by hand: RD set, one question, and an OPT record advertising
/// `ednsSize` when given.
func queryBytes(id: UInt16, name: String, type: UInt16, ednsSize: UInt16? = nil, flags: UInt16 = 0x0100) -> [UInt8] {
    var bytes = be16(id) + be16(flags) + be16(1) + be16(0) + be16(0) + be16(ednsSize == nil ? 0 : 1)
    bytes += wireName(name) + be16(type) + be16(1)
    if let ednsSize {
        bytes += [0] + be16(41) + be16(ednsSize) + be32(0) + be16(0)
    }
    return bytes
}

func query(id: UInt16, name: String, type: UInt16, ednsSize: UInt16? = nil) -> ByteBuffer {
    buffer(queryBytes(id: id, name: name, type: type, ednsSize: ednsSize))
}

/// The single answer action in `actions`, or nil.
func singleAnswer(_ actions: [DNSAction]) -> (bytes: ByteBuffer, client: DNSClient, overTCP: Bool)? {
    guard actions.count == 1, case .answer(let bytes, let client, let overTCP) = actions[0] else { return nil }
    return (bytes, client, overTCP)
}

/// The single forward action in `actions`, or nil.
func singleForward(_ actions: [DNSAction]) -> (query: ByteBuffer, upstream: DNSUpstream, overTCP: Bool)? {
    guard actions.count == 1, case .forward(let query, let upstream, let overTCP) = actions[0] else { return nil }
    return (query, upstream, overTCP)
}

/// An upstream's response to `forwarded`: same id and question, RA set, with `answers`.
func upstreamResponse(to forwarded: ByteBuffer, answers: [DNSResourceRecord], id: UInt16? = nil) throws -> ByteBuffer {
    let query = try DNSMessage(parsing: forwarded)
    var header = query.header
    header.isResponse = true
    header.recursionAvailable = true
    if let id { header.id = id }
    return try DNSMessage(header: header, questions: query.questions, answers: answers).encoded()
}
