// The IPv6 header, ICMPv6 and the extension header walk against frames the Linux kernel sent.

import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv6

@Suite struct IPv6WireTests {
    private let three = IPv6Address("fd00:65::3")!
    private let one = IPv6Address("fd00:65::1")!

    @Test func echoRequestParsesAndReEmitsByteForByte() throws {
        let buffer = KernelFrames.packet(KernelFrames.echoRequest)
        let packet = try IPv6Packet(buffer)
        #expect(packet.payloadLength == 64)
        #expect(packet.nextHeader == .icmpv6)
        #expect(packet.hopLimit == 64)
        #expect(packet.flowLabel == 0x71D2E)
        #expect(packet.trafficClass == 0)
        #expect(packet.source == three)
        #expect(packet.destination == one)
        let chain = try packet.headerChain()
        #expect(chain.upperLayer == .icmpv6 && chain.upperLayerOffset == 40 && chain.headerCount == 0 && chain.fragment == nil)
        let icmp = try ICMPv6Packet(packet.payload)
        #expect(icmp.type == .echoRequest && icmp.code == 0)
        #expect(icmp.identifier == 0x5411 && icmp.sequenceNumber == 1)
        #expect(icmp.isChecksumValid(source: three, destination: one))
        #expect(!icmp.isChecksumValid(source: three, destination: IPv6Address("fd00:65::2")!))

        var out = ByteBuffer(bytes: icmp.body.array)
        ICMPv6Header(parsing: icmp).prepend(to: &out, source: three, destination: one)
        IPv6Header(parsing: packet).prepend(to: &out)
        #expect(Array(out.readableBytesView) == Array(buffer.readableBytesView))
    }

    @Test func udpAndTCPChecksumsVerifyOverTheIPv6PseudoHeader() throws {
        for hex in [KernelFrames.udp, KernelFrames.tcpSYN] {
            let packet = try IPv6Packet(KernelFrames.packet(hex))
            let chain = try packet.headerChain()
            let transport = packet.payload
            let pseudo = IPPseudoHeader(source: .v6(packet.source), destination: .v6(packet.destination), protocol: chain.upperLayer, length: transport.count)
            #expect(pseudo.verifies(transport), "\(chain.upperLayer)")
            let wrong = IPPseudoHeader(source: .v6(packet.source), destination: .v6(packet.destination), protocol: chain.upperLayer, length: transport.count + 1)
            #expect(!wrong.verifies(transport))
        }
    }

    @Test func portUnreachableQuotesTheDatagram() throws {
        let packet = try IPv6Packet(KernelFrames.packet(KernelFrames.portUnreachable))
        let icmp = try ICMPv6Packet(packet.payload)
        #expect(icmp.type == .destinationUnreachable && icmp.code == 4 && icmp.type.isError)
        #expect(icmp.isChecksumValid(source: one, destination: three))
        let quoted = try IPv6Packet(icmp.body)
        #expect(quoted.source == three && quoted.destination == one && quoted.nextHeader == .udp)
    }

    @Test func firstFragmentStopsTheWalkAtItsFragmentHeader() throws {
        var bytes = KernelFrames.bytes(KernelFrames.firstFragmentHeaders)
        bytes += [UInt8](repeating: 0, count: 40 + 1456 - bytes.count)
        let packet = try IPv6Packet(ByteBuffer(bytes: bytes))
        let chain = try packet.headerChain()
        #expect(chain.fragment == IPv6FragmentHeader(nextHeader: .icmpv6, offset: 0, moreFragments: true, identification: 0x24BB_B559))
        #expect(chain.upperLayer == .icmpv6 && chain.upperLayerOffset == 48 && chain.fragmentHeaderOffset == 40)

        var header = ByteBuffer(bytes: [UInt8](repeating: 0, count: 8))
        chain.fragment!.prepend(to: &header)
        #expect(Array(header.readableBytesView.prefix(8)) == Array(bytes[40..<48]))
    }

    @Test func mldReportBehindHopByHopWithRouterAlert() throws {
        let packet = try IPv6Packet(KernelFrames.packet(KernelFrames.mldReport))
        #expect(packet.nextHeader == .ipv6HopByHop && packet.hopLimit == 1)
        let chain = try packet.headerChain()
        #expect(chain.upperLayer == .icmpv6 && chain.upperLayerOffset == 48 && chain.nextHeaderFieldOffset == 40)
        #expect(chain.routerAlert && chain.headerCount == 1)
        let icmp = try ICMPv6Packet(packet.bytes.view(from: chain.upperLayerOffset, length: 40 + packet.payloadLength - chain.upperLayerOffset))
        #expect(icmp.type == .multicastListenerReportV2)
        #expect(icmp.isChecksumValid(source: packet.source, destination: packet.destination))
    }

    @Test func headerValueWritesEveryField() throws {
        var header = IPv6Header(source: three, destination: one, nextHeader: .udp, hopLimit: 255)
        header.trafficClass = 0xB8
        header.flowLabel = 0xF_FFFF
        var buffer = ByteBuffer(bytes: [1, 2, 3])
        header.prepend(to: &buffer, trailingLength: 5)
        let packet = try IPv6Packet(ByteBuffer(bytes: Array(buffer.readableBytesView) + [UInt8](repeating: 0, count: 5)))
        #expect(packet.trafficClass == 0xB8 && packet.flowLabel == 0xF_FFFF && packet.payloadLength == 8)
        #expect(packet.hopLimit == 255 && packet.nextHeader == .udp && packet.source == three && packet.destination == one)
    }

    @Test func malformedHeadersAreTypedErrors() {
        #expect(throws: WireError.truncated(needed: 40, available: 39)) { try IPv6Packet(ByteBuffer(bytes: [UInt8](repeating: 0x60, count: 39))) }
        var v4 = KernelFrames.bytes(KernelFrames.firstFragmentHeaders)
        v4[0] = 0x45
        #expect(throws: WireError.unsupported(field: "version", value: 4)) { try IPv6Packet(ByteBuffer(bytes: v4)) }
        // The payload length (1,456) runs past the 8 bytes present.
        #expect(throws: WireError.lengthExceedsBuffer(field: "payload length", value: 1456, available: 8)) {
            try IPv6Packet(ByteBuffer(bytes: KernelFrames.bytes(KernelFrames.firstFragmentHeaders)))
        }
        #expect(throws: WireError.truncated(needed: 8, available: 7)) { try ICMPv6Packet(ByteBuffer(bytes: [UInt8](repeating: 0, count: 7))) }
    }

    @Test func everyTruncationOfEveryFrameFailsCleanly() {
        var parsed = 0
        for hex in KernelFrames.all {
            let whole = Array(KernelFrames.bytes(hex).dropFirst(14))
            for length in 0...whole.count {
                guard let packet = try? IPv6Packet(ByteBuffer(bytes: whole.prefix(length))) else { continue }
                parsed += 1
                guard let chain = try? packet.headerChain() else { continue }
                let upper = packet.bytes.view(from: chain.upperLayerOffset, length: max(0, 40 + packet.payloadLength - chain.upperLayerOffset))
                if chain.upperLayer == .icmpv6, let icmp = try? ICMPv6Packet(upper) { _ = try? NDPMessage(parsing: icmp) }
            }
        }
        // A truncated packet fails its payload length check: only the whole ones parse.
        #expect(parsed == KernelFrames.all.count)
    }
}
