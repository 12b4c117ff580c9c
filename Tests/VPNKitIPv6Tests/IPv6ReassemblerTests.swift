// IPv6 reassembly against what a hostile guest sends: fragments in any order, overlaps (RFC 5722
// drops the whole packet), duplicates, contradicting lengths, the bounds and the timeout.

import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv6

@Suite struct IPv6ReassemblerTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    /// A fragment of an ICMPv6 packet: `data` at `offset`, identification `id`.
    private func fragment(offset: Int, more: Bool, data: [UInt8], id: UInt32 = 1) throws -> (IPv6Packet, IPv6HeaderChain) {
        var buffer = ByteBuffer(bytes: data)
        IPv6FragmentHeader(nextHeader: .icmpv6, offset: offset, moreFragments: more, identification: id).prepend(to: &buffer)
        IPv6Header(source: IPv6Address("fd00:65::3")!, destination: IPv6Address("fd00:65::1")!, nextHeader: .ipv6Fragment).prepend(to: &buffer)
        let packet = try IPv6Packet(buffer)
        return (packet, try packet.headerChain())
    }

    private func add(_ reassembler: inout IPv6Reassembler, offset: Int, more: Bool, data: [UInt8], id: UInt32 = 1, at time: TimeAmount = .zero) throws -> IPv6Reassembler.Result {
        let (packet, chain) = try fragment(offset: offset, more: more, data: data, id: id)
        return reassembler.add(packet, chain: chain, now: start + time)
    }

    @Test func anyOrderGivesTheWholePacketWithItsHeaderRewritten() throws {
        let data = (0..<40).map { UInt8($0) }
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            var reassembler = IPv6Reassembler()
            var result: IPv6Reassembler.Result = .incomplete
            for index in order {
                result = try add(&reassembler, offset: index * 16, more: index < 2, data: Array(data[(index * 16)..<min(40, index * 16 + 16)]))
            }
            guard case .complete(let whole) = result else {
                Issue.record("order \(order): \(result)")
                continue
            }
            let packet = try IPv6Packet(whole)
            #expect(packet.nextHeader == .icmpv6 && packet.payloadLength == 40)
            #expect(packet.payload.array == data)
            #expect(try packet.headerChain().fragment == nil)
            #expect(reassembler.count == 0 && reassembler.bytesHeld == 0)
        }
    }

    @Test func overlapDropsTheWholePacket() throws {
        var reassembler = IPv6Reassembler()
        _ = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 1, count: 16))
        guard case .dropped(.overlap) = try add(&reassembler, offset: 8, more: false, data: [UInt8](repeating: 2, count: 16)) else {
            Issue.record("overlap not dropped")
            return
        }
        #expect(reassembler.count == 0 && reassembler.bytesHeld == 0)
        // The rest of the packet afterwards starts a new one; it never completes the old.
        guard case .incomplete = try add(&reassembler, offset: 16, more: false, data: [UInt8](repeating: 3, count: 8)) else {
            Issue.record("expected incomplete")
            return
        }
    }

    @Test func duplicatesAreIgnoredAndMalformedLengthsDrop() throws {
        var reassembler = IPv6Reassembler()
        _ = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 1, count: 16))
        guard case .dropped(.duplicate) = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 1, count: 16)) else {
            Issue.record("duplicate not recognised")
            return
        }
        // A non-final fragment whose length is not a multiple of 8.
        guard case .dropped(.malformed) = try add(&reassembler, offset: 16, more: true, data: [UInt8](repeating: 1, count: 12)) else {
            Issue.record("odd length accepted")
            return
        }
        // Two last fragments that disagree about the length.
        _ = try add(&reassembler, offset: 32, more: false, data: [1], id: 2)
        guard case .dropped(.malformed) = try add(&reassembler, offset: 40, more: false, data: [1], id: 2) else {
            Issue.record("contradicting lengths accepted")
            return
        }
        // Beyond the 16-bit payload length.
        guard case .dropped(.oversized) = try add(&reassembler, offset: 65528, more: false, data: [UInt8](repeating: 0, count: 16), id: 3) else {
            Issue.record("oversized accepted")
            return
        }
    }

    @Test func boundsHoldAtTheirLimitsAndTimeoutsExpire() throws {
        var configuration = ReassemblyConfiguration()
        configuration.maximumDatagrams = 2
        configuration.maximumFragmentsPerDatagram = 3
        configuration.maximumTotalBytes = 64
        configuration.timeout = .seconds(30)
        var reassembler = IPv6Reassembler(configuration: configuration)
        _ = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 0, count: 8), id: 1)
        _ = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 0, count: 8), id: 2)
        guard case .dropped(.limit) = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 0, count: 8), id: 3) else {
            Issue.record("third packet accepted")
            return
        }
        // Fragments per packet.
        _ = try add(&reassembler, offset: 8, more: true, data: [UInt8](repeating: 0, count: 8), id: 1)
        _ = try add(&reassembler, offset: 16, more: true, data: [UInt8](repeating: 0, count: 8), id: 1)
        guard case .dropped(.limit) = try add(&reassembler, offset: 24, more: true, data: [UInt8](repeating: 0, count: 8), id: 1) else {
            Issue.record("fourth fragment accepted")
            return
        }
        // Bytes held.
        guard case .dropped(.limit) = try add(&reassembler, offset: 8, more: true, data: [UInt8](repeating: 0, count: 64), id: 2) else {
            Issue.record("bytes beyond the limit accepted")
            return
        }
        #expect(reassembler.count == 0)
        _ = try add(&reassembler, offset: 0, more: true, data: [UInt8](repeating: 0, count: 8), id: 4, at: .seconds(1))
        #expect(reassembler.nextDeadline == start + .seconds(31))
        #expect(reassembler.poll(now: start + .seconds(30)) == 0)
        #expect(reassembler.poll(now: start + .seconds(31)) == 1)
        #expect(reassembler.count == 0 && reassembler.bytesHeld == 0 && reassembler.nextDeadline == nil)
    }
}
