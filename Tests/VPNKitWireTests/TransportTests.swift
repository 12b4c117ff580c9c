import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv4
import VPNKitTCP
import VPNKitUDP

let a = IPv4Address(192, 168, 65, 3)
let b = IPv4Address(192, 168, 65, 1)

@Suite("UDP")
struct UDPTests {
    @Test("construct → deconstruct → checksum verifies against the pseudo-header")
    func roundTrip() throws {
        var out = ByteBuffer.withHeadroom(capacity: 5)
        out.writeString("hello")
        UDPHeader(sourcePort: 40000, destinationPort: 53).prepend(to: &out, source: .v4(a), destination: .v4(b))
        let udp = try UDPDatagram(out)
        #expect(udp.sourcePort == 40000 && udp.destinationPort == 53)
        #expect(udp.length == 13)
        #expect(udp.payload.array == Array("hello".utf8))
        let pseudo = IPPseudoHeader(source: .v4(a), destination: .v4(b), protocol: .udp, length: 13)
        #expect(udp.isChecksumValid(pseudo))
        #expect(!udp.isChecksumValid(IPPseudoHeader(source: .v4(a), destination: .v4(IPv4Address(1, 2, 3, 4)), protocol: .udp, length: 13)))
        // Reference: pseudo-header + header + data summed by the RFC 1071 reference.
        let bytes = a.octets + b.octets + [0, 17, 0, 13] + out.readableByteArray
        #expect(referenceChecksum(bytes) == 0)
    }

    @Test("a zero checksum means none and is valid; emit can send none")
    func zeroChecksum() throws {
        var out = ByteBuffer.withHeadroom(capacity: 2)
        out.writeBytes([1, 2])
        UDPHeader(sourcePort: 1, destinationPort: 2, checksumEnabled: false).prepend(to: &out, source: .v4(a), destination: .v4(b))
        let udp = try UDPDatagram(out)
        #expect(udp.checksum == 0)
        #expect(udp.isChecksumValid(IPPseudoHeader(source: .v4(.any), destination: .v4(.any), protocol: .udp, length: 0)))
        #expect(UDPHeader(parsing: udp).checksumEnabled == false)
    }

    @Test("a computed checksum of zero is sent as 0xFFFF (RFC 768)")
    func zeroBecomesOnes() throws {
        // Find a payload whose checksum computes to 0 by choosing its last two bytes.
        var out = ByteBuffer.withHeadroom(capacity: 2)
        out.writeBytes([0, 0])
        UDPHeader(sourcePort: 1, destinationPort: 2).prepend(to: &out, source: .v4(a), destination: .v4(b))
        let first = try UDPDatagram(out).checksum
        // Adding the old checksum's value into the data drives the new sum to all ones → value 0.
        var again = ByteBuffer.withHeadroom(capacity: 2)
        again.writeBytes([UInt8(first >> 8), UInt8(first & 0xFF)])
        UDPHeader(sourcePort: 1, destinationPort: 2).prepend(to: &again, source: .v4(a), destination: .v4(b))
        let udp = try UDPDatagram(again)
        #expect(udp.checksum == 0xFFFF)
        #expect(udp.isChecksumValid(IPPseudoHeader(source: .v4(a), destination: .v4(b), protocol: .udp, length: 10)))
    }

    @Test("length field checks")
    func malformed() {
        #expect(throws: WireError.truncated(needed: 8, available: 7)) { try UDPDatagram(buffer([0, 1, 0, 2, 0, 8, 0])) }
        #expect(throws: WireError.lengthTooSmall(field: "length", value: 7, minimum: 8)) {
            try UDPDatagram(buffer([0, 1, 0, 2, 0, 7, 0, 0]))
        }
        #expect(throws: WireError.lengthExceedsBuffer(field: "length", value: 308, available: 10)) {
            try UDPDatagram(buffer([0, 1, 0, 2, 0x01, 0x34, 0, 0, 9, 9]))
        }
    }

    @Test("bytes past the length field are not payload")
    func trailing() throws {
        let udp = try UDPDatagram(buffer([0, 1, 0, 2, 0, 9, 0, 0, 7, 8, 8]))
        #expect(udp.payload.array == [7])
    }
}

@Suite("TCP")
struct TCPTests {
    // A Linux SYN: 37026 → 5002, seq 1109110817, win 64240, mss 1460, sackOK, TS 1444852:0, nop, wscale 10.
    let syn = hex("90a2 138a 421b b021 0000 0000 a002 faf0 0000 0000 020405b4 0402 080a 00160bf4 00000000 01 03030a")

    @Test func deconstruct() throws {
        let tcp = try TCPSegment(buffer(syn))
        #expect(tcp.sourcePort == 37026 && tcp.destinationPort == 5002)
        #expect(tcp.sequenceNumber.rawValue == 1_109_110_817)
        #expect(tcp.acknowledgmentNumber.rawValue == 0)
        #expect(tcp.flags == .syn)
        #expect(tcp.window == 64240)
        #expect(tcp.headerLength == 40)
        #expect(tcp.payloadLength == 0)
        let header = try TCPHeader(parsing: tcp)
        #expect(header.maximumSegmentSize == 1460)
        #expect(header.sackPermitted)
        #expect(header.timestamps?.value == 1_444_852 && header.timestamps?.echoReply == 0)
        #expect(header.windowScale == 10)
        #expect(header.sackBlocks.isEmpty)
        #expect(header.options == [.maximumSegmentSize(1460), .sackPermitted, .timestamps(value: 1_444_852, echoReply: 0), .noOperation, .windowScale(10)])
    }

    @Test("the standard option layout re-emits a Linux SYN byte for byte")
    func construct() throws {
        let options = TCPHeader.standardOptions(
            maximumSegmentSize: 1460, sackPermitted: true, timestamps: (1_444_852, 0), windowScale: 10)
        let header = TCPHeader(
            sourcePort: 37026, destinationPort: 5002, sequenceNumber: SequenceNumber(1_109_110_817), flags: .syn,
            window: 64240, options: options)
        var out = ByteBuffer.withHeadroom(capacity: 0)
        header.prepend(to: &out, source: .v4(a), destination: .v4(b))
        var expected = syn
        let sum = referenceChecksum(a.octets + b.octets + [0, 6, 0, 40] + expected)
        expected[16] = UInt8(sum >> 8)
        expected[17] = UInt8(sum & 0xFF)
        #expect(out.readableByteArray == expected)
        #expect(try TCPSegment(out).isChecksumValid(source: .v4(a), destination: .v4(b)))
    }

    @Test("SACK blocks, unknown options and EOL")
    func sackAndUnknown() throws {
        let options: [TCPOption] = [
            .noOperation, .noOperation, .sack([SACKBlock(left: 100, right: 200), SACKBlock(left: 0xFFFF_FF00, right: 10)]),
            .unknown(kind: 30, data: [1, 2, 3, 4]), .endOfList,
        ]
        let header = TCPHeader(
            sourcePort: 1, destinationPort: 2, sequenceNumber: SequenceNumber(5), acknowledgmentNumber: SequenceNumber(6),
            flags: [.ack, .psh], window: 100, options: options)
        #expect(header.headerLength == 20 + 28)
        var out = ByteBuffer.withHeadroom(capacity: 3)
        out.writeBytes([7, 8, 9])
        header.prepend(to: &out, source: .v4(a), destination: .v4(b))
        let tcp = try TCPSegment(out)
        #expect(tcp.payload.array == [7, 8, 9])
        #expect(tcp.flags == [.ack, .psh])
        let parsed = try TCPHeader(parsing: tcp)
        #expect(parsed.options == options)
        #expect(parsed.sackBlocks.count == 2)
        #expect(parsed.sackBlocks[1].left == 0xFFFF_FF00)
        #expect(tcp.isChecksumValid(source: .v4(a), destination: .v4(b)))
    }

    @Test("malformed options stop the walk with a typed error")
    func malformedOptions() throws {
        func segment(options: [UInt8]) -> ByteBuffer {
            let padded = options + [UInt8](repeating: 0, count: (4 - options.count % 4) % 4)
            var bytes = hex("0001 0002 00000000 00000000 0002 ffff 0000 0000") + padded
            bytes[12] = UInt8((20 + padded.count) / 4) << 4
            return buffer(bytes)
        }
        let cases: [([UInt8], WireError)] = [
            ([2, 0, 0, 0], .malformedOption(kind: 2, reason: "length 0 is below 2")),
            ([2, 1, 0, 0], .malformedOption(kind: 2, reason: "length 1 is below 2")),
            ([2, 8, 5, 180], .malformedOption(kind: 2, reason: "length 8 runs past the options (4 left)")),
            ([2, 3, 5, 1], .malformedOption(kind: 2, reason: "MSS length 3 is not 4")),
            ([3, 4, 7, 1], .malformedOption(kind: 3, reason: "window scale length 4 is not 3")),
            ([5, 6, 0, 0, 0, 0, 1, 1], .malformedOption(kind: 5, reason: "SACK length 6 is not 2 + 8n")),
            ([8, 6, 0, 0, 0, 0, 1, 1], .malformedOption(kind: 8, reason: "timestamps length 6 is not 10")),
            ([1, 1, 1, 9], .malformedOption(kind: 9, reason: "length byte missing")),
        ]
        for (bytes, error) in cases {
            let tcp = try TCPSegment(segment(options: bytes))
            #expect(throws: error) { try TCPHeader(parsing: tcp) }
        }
        // The lazy walk yields what came before the malformation.
        let tcp = try TCPSegment(segment(options: [1, 1, 2, 4, 5, 180, 3, 0]))
        var iterator = tcp.options.makeIterator()
        #expect(iterator.next() == .noOperation)
        #expect(iterator.next() == .noOperation)
        #expect(iterator.next() == .maximumSegmentSize(1460))
        #expect(iterator.next() == nil)
        #expect(iterator.error == .malformedOption(kind: 3, reason: "length 0 is below 2"))
    }

    @Test("data offset checks")
    func malformed() {
        var bytes = syn
        bytes[12] = 0x40
        #expect(throws: WireError.lengthTooSmall(field: "data offset", value: 16, minimum: 20)) { try TCPSegment(buffer(bytes)) }
        bytes[12] = 0xF0
        #expect(throws: WireError.lengthExceedsBuffer(field: "data offset", value: 60, available: 40)) { try TCPSegment(buffer(bytes)) }
        #expect(throws: WireError.truncated(needed: 20, available: 19)) { try TCPSegment(buffer(Array(syn.prefix(19)))) }
    }

    @Test("sequence numbers compare modulo 2^32")
    func sequenceArithmetic() {
        let nearTop = SequenceNumber(0xFFFF_FFF0)
        let wrapped = nearTop + 0x20
        #expect(wrapped.rawValue == 0x10)
        #expect(nearTop < wrapped)
        #expect(wrapped - nearTop == 0x20)
        #expect(nearTop - wrapped == -0x20)
        #expect(!(wrapped < nearTop))
        #expect(TCPFlags(rawValue: 0x12) == [.syn, .ack])
        #expect(TCPFlags(rawValue: 0xF012).rawValue == 0x012)
    }
}
