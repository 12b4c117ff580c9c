import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv4

@Suite("IPv4")
struct IPv4Tests {
    // A classic UDP/IPv4 header: 192.168.0.1 → 192.168.0.199, total length 0x73, checksum b861.
    let header = hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")

    func packet(payload: Int = 0x73 - 20, padding: Int = 0) -> [UInt8] {
        header + [UInt8](repeating: 0x5A, count: payload) + [UInt8](repeating: 0, count: padding)
    }

    @Test func deconstruct() throws {
        let ip = try IPv4Packet(buffer(packet(padding: 6)))
        #expect(ip.headerLength == 20)
        #expect(ip.totalLength == 0x73)
        #expect(ip.identification == 0)
        #expect(ip.dontFragment && !ip.moreFragments && !ip.isFragment)
        #expect(ip.fragmentOffset == 0)
        #expect(ip.timeToLive == 64)
        #expect(ip.protocol == .udp)
        #expect(ip.headerChecksum == 0xB861)
        #expect(ip.isHeaderChecksumValid)
        #expect(ip.source == IPv4Address(192, 168, 0, 1))
        #expect(ip.destination == IPv4Address(192, 168, 0, 199))
        // Link padding is not payload.
        #expect(ip.payload.count == 0x73 - 20)
        #expect(ip.options.count == 0)
    }

    @Test("emit computes the RFC example checksum")
    func construct() {
        var payload = ByteBuffer.withHeadroom(capacity: 0x73 - 20)
        payload.writeBytes([UInt8](repeating: 0x5A, count: 0x73 - 20))
        var h = IPv4Header(
            source: IPv4Address(192, 168, 0, 1), destination: IPv4Address(192, 168, 0, 199), protocol: .udp,
            timeToLive: 64, identification: 0, dontFragment: true)
        h.totalLength = 0  // recomputed from the payload
        h.prepend(to: &payload)
        #expect(payload.readableByteArray == packet())
    }

    @Test("a corrupted header fails the checksum, reported not thrown")
    func badChecksum() throws {
        var bytes = packet()
        bytes[8] = 1  // TTL
        let ip = try IPv4Packet(buffer(bytes))
        #expect(!ip.isHeaderChecksumValid)
    }

    @Test("fragments: offset in bytes, MF, DF")
    func fragments() throws {
        var bytes = packet()
        bytes[6] = 0x20 | 0x00; bytes[7] = 185  // MF, offset 185×8 = 1480
        let ip = try IPv4Packet(buffer(bytes))
        #expect(ip.moreFragments && !ip.dontFragment && ip.isFragment)
        #expect(ip.fragmentOffset == 1480)
        var value = IPv4Header(parsing: ip)
        #expect(value.fragmentOffset == 1480 && value.moreFragments)
        value.moreFragments = false
        var out = ByteBuffer.withHeadroom(capacity: 0)
        out.writeBytes([UInt8](repeating: 0x5A, count: 0x73 - 20))
        value.prepend(to: &out)
        let reparsed = try IPv4Packet(out)
        #expect(reparsed.isFragment && !reparsed.moreFragments && reparsed.fragmentOffset == 1480)
        #expect(reparsed.isHeaderChecksumValid)
    }

    @Test("options are skipped by the header length and re-emitted")
    func options() throws {
        // Record route (7), length 7 pointer 4, one slot, then EOL padding → 8 bytes of options.
        let options: [UInt8] = [7, 7, 4, 0, 0, 0, 0, 0]
        var h = IPv4Header(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2), protocol: .icmp)
        h.options = options
        var out = ByteBuffer.withHeadroom(capacity: 4)
        out.writeBytes([1, 2, 3, 4])
        h.prepend(to: &out)
        let ip = try IPv4Packet(out)
        #expect(ip.headerLength == 28)
        #expect(ip.options.array == options)
        #expect(ip.payload.array == [1, 2, 3, 4])
        #expect(ip.isHeaderChecksumValid)
    }

    @Test("malformed headers are typed errors")
    func malformed() {
        #expect(throws: WireError.truncated(needed: 20, available: 19)) { try IPv4Packet(buffer(Array(header.prefix(19)))) }
        var bytes = packet()
        bytes[0] = 0x65
        #expect(throws: WireError.unsupported(field: "version", value: 6)) { try IPv4Packet(buffer(bytes)) }
        bytes = packet()
        bytes[0] = 0x44
        #expect(throws: WireError.lengthTooSmall(field: "header length", value: 16, minimum: 20)) { try IPv4Packet(buffer(bytes)) }
        bytes = Array(packet().prefix(40))
        bytes[0] = 0x4F
        bytes[2] = 0; bytes[3] = 40
        #expect(throws: WireError.lengthExceedsBuffer(field: "header length", value: 60, available: 40)) { try IPv4Packet(buffer(bytes)) }
        bytes = packet()
        bytes[2] = 0; bytes[3] = 19
        #expect(throws: WireError.lengthTooSmall(field: "total length", value: 19, minimum: 20)) { try IPv4Packet(buffer(bytes)) }
        bytes = Array(packet().prefix(98))
        bytes[2] = 0x01; bytes[3] = 0x2C  // 300
        #expect(throws: WireError.lengthExceedsBuffer(field: "total length", value: 300, available: 98)) { try IPv4Packet(buffer(bytes)) }
        #expect(WireError.lengthExceedsBuffer(field: "total length", value: 300, available: 98).description == "total length 300 exceeds frame (98)")
    }
}

@Suite("ICMPv4")
struct ICMPTests {
    @Test("echo request: construct, deconstruct, verify")
    func echo() throws {
        var out = ByteBuffer.withHeadroom(capacity: 56)
        out.writeBytes(Array(0..<56))
        ICMPv4Header.echo(reply: false, identifier: 0x1234, sequenceNumber: 7).prepend(to: &out)
        let icmp = try ICMPv4Packet(out)
        #expect(icmp.type == .echoRequest)
        #expect(icmp.type.hasIdentifierAndSequence && !icmp.type.isError)
        #expect(icmp.code == 0)
        #expect(icmp.identifier == 0x1234 && icmp.sequenceNumber == 7)
        #expect(icmp.payload.array == Array(0..<56))
        #expect(icmp.isChecksumValid)
        #expect(icmp.checksum == referenceChecksum([8, 0, 0, 0, 0x12, 0x34, 0, 7] + Array(0..<56)))
        var corrupted = out
        corrupted.setInteger(UInt8(0xFF), at: corrupted.readerIndex + 20)
        #expect(try !ICMPv4Packet(corrupted).isChecksumValid)
    }

    @Test("destination unreachable is an error type without identifier")
    func unreachable() throws {
        let h = ICMPv4Header(type: .destinationUnreachable, code: 3)
        #expect(h.type.isError && !h.type.hasIdentifierAndSequence)
        #expect(throws: WireError.truncated(needed: 8, available: 7)) { try ICMPv4Packet(buffer([3, 3, 0, 0, 0, 0, 0])) }
    }
}
