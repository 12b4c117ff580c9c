// Neighbour discovery messages: the kernel's, parsed and re-emitted byte for byte, and ours (the
// router advertisement the stack will send), round-tripped.

import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv6

@Suite struct NDPTests {
    private func message(_ hex: String) throws -> (IPv6Packet, ICMPv6Packet, NDPMessage) {
        let packet = try IPv6Packet(KernelFrames.packet(hex))
        let icmp = try ICMPv6Packet(packet.payload)
        return (packet, icmp, try NDPMessage(parsing: icmp))
    }

    /// The message written again from its value, as the whole ICMPv6 message.
    private func reEmitted(_ message: NDPMessage, _ packet: IPv6Packet) -> [UInt8] {
        var buffer = ByteBuffer()
        message.prepend(to: &buffer, source: packet.source, destination: packet.destination)
        return Array(buffer.readableBytesView)
    }

    @Test func kernelMessagesParseAndReEmitByteForByte() throws {
        let guest = MACAddress("92:ed:1a:1b:ec:83")!
        let (rsPacket, rsICMP, rs) = try message(KernelFrames.routerSolicitation)
        #expect(rs == .routerSolicitation(options: [.sourceLinkLayerAddress(guest)]))
        #expect(rsPacket.hopLimit == 255 && rsICMP.isChecksumValid(source: rsPacket.source, destination: rsPacket.destination))
        #expect(reEmitted(rs, rsPacket) == rsICMP.bytes.array)

        let (nsPacket, nsICMP, ns) = try message(KernelFrames.neighborSolicitation)
        #expect(ns == .neighborSolicitation(target: IPv6Address("fd00:65::1")!, options: [.sourceLinkLayerAddress(guest)]))
        #expect(ns.linkLayerAddress == guest)
        #expect(reEmitted(ns, nsPacket) == nsICMP.bytes.array)

        let (naPacket, naICMP, na) = try message(KernelFrames.neighborAdvertisement)
        let peer = MACAddress("36:42:5c:53:6b:55")!
        #expect(
            na == .neighborAdvertisement(
                NDPNeighborAdvertisement(
                    router: false, solicited: true, override: true, target: IPv6Address("fd00:65::1")!, options: [.targetLinkLayerAddress(peer)])))
        #expect(reEmitted(na, naPacket) == naICMP.bytes.array)
    }

    @Test func dadProbeComesFromTheUnspecifiedAddressWithANonce() throws {
        let (packet, icmp, dad) = try message(KernelFrames.dadSolicitation)
        #expect(packet.source == .unspecified && packet.destination == IPv6Address("ff02::1:ff00:1")!)
        #expect(icmp.isChecksumValid(source: packet.source, destination: packet.destination))
        guard case .neighborSolicitation(let target, let options) = dad else {
            Issue.record("not a solicitation: \(dad)")
            return
        }
        #expect(target == IPv6Address("fd00:65::1")!)
        #expect(options == [.other(type: 14, data: [0x27, 0xE2, 0x15, 0xEC, 0xEC, 0x0B])])
        #expect(dad.linkLayerAddress == nil)
        #expect(reEmitted(dad, packet) == icmp.bytes.array)
    }

    @Test func routerAdvertisementRoundTrips() throws {
        var ra = NDPRouterAdvertisement(
            routerLifetime: 1800,
            options: [
                .sourceLinkLayerAddress(MACAddress("02:50:00:00:00:01")!),
                .mtu(1500),
                .prefixInformation(
                    NDPPrefixInformation(
                        prefix: IPv6Address("fd00:65::")!, prefixLength: 64, onLink: true, autonomous: true,
                        validLifetime: 86400, preferredLifetime: 14400)),
                .recursiveDNSServers(lifetime: 600, servers: [IPv6Address("fd00:65::1")!]),
                .dnsSearchList(lifetime: 600, domains: ["docker.internal", "example.test"]),
            ])
        ra.otherConfiguration = true
        ra.reachableTime = 30000
        let source = IPv6Address("fe80::1")!
        let destination = IPv6Address("ff02::1")!
        var buffer = ByteBuffer()
        NDPMessage.routerAdvertisement(ra).prepend(to: &buffer, source: source, destination: destination)
        // 16 bytes of message, then options of 8, 8, 32, 24 and 40 bytes.
        #expect(buffer.readableBytes == 16 + 8 + 8 + 32 + 24 + 40)
        let icmp = try ICMPv6Packet(buffer)
        #expect(icmp.type == .routerAdvertisement && icmp.isChecksumValid(source: source, destination: destination))
        #expect(try NDPMessage(parsing: icmp) == .routerAdvertisement(ra))
        // The prefix option as RFC 4861 §4.6.2 lays it out.
        let prefixOption = Array(buffer.readableBytesView.dropFirst(32).prefix(32))
        #expect(prefixOption.prefix(4) == [3, 4, 64, 0xC0])
        #expect(Array(prefixOption.suffix(16)) == IPv6Address("fd00:65::")!.octets)
    }

    @Test func anEmptySearchListReEncodesToAnOptionThatParses() throws {
        // Found by the ndp fuzz target: a DNSSL of only padding parses to no names, and was written
        // back as an 8-byte option, which the parser (rightly, RFC 8106 §5.2) refuses.
        let option = NDPOption.dnsSearchList(lifetime: 60, domains: [])
        #expect(option.encoded == [31, 2, 0, 0, 0, 0, 0, 60] + [UInt8](repeating: 0, count: 8))
        #expect(try NDPOptions.parse(ByteView(ByteBuffer(bytes: option.encoded))) == [option])
    }

    @Test func invalidMessagesAreTypedErrors() throws {
        let (_, icmp, _) = try message(KernelFrames.neighborSolicitation)
        var bytes = icmp.bytes.array
        // An option of length 0 invalidates the message (RFC 4861 §4.6).
        bytes[25] = 0
        #expect(throws: WireError.malformedOption(kind: 1, reason: "length 0")) { try NDPMessage(parsing: ICMPv6Packet(ByteBuffer(bytes: bytes))) }
        // An option running past the message.
        bytes[25] = 2
        #expect(throws: WireError.malformedOption(kind: 1, reason: "length 16 runs past the message")) {
            try NDPMessage(parsing: ICMPv6Packet(ByteBuffer(bytes: bytes)))
        }
        // A non-zero code, a short message, a multicast target.
        var coded = icmp.bytes.array
        coded[1] = 1
        #expect(throws: WireError.unsupported(field: "neighbor discovery code", value: 1)) { try NDPMessage(parsing: ICMPv6Packet(ByteBuffer(bytes: coded))) }
        #expect(throws: WireError.truncated(needed: 24, available: 20)) { try NDPMessage(parsing: ICMPv6Packet(ByteBuffer(bytes: Array(icmp.bytes.array.prefix(20))))) }
        var multicast = icmp.bytes.array
        multicast[8] = 0xFF
        #expect(throws: WireError.self) { try NDPMessage(parsing: ICMPv6Packet(ByteBuffer(bytes: multicast))) }
        // A compressed name in a DNSSL option.
        let dnssl: [UInt8] = [31, 2, 0, 0, 0, 0, 0, 60, 0xC0, 12, 0, 0, 0, 0, 0, 0]
        #expect(throws: WireError.malformedOption(kind: 31, reason: "label of 192 bytes (compression is not allowed)")) {
            try NDPOptions.parse(ByteView(ByteBuffer(bytes: dnssl)))
        }
        // More options than the bound.
        let many = [UInt8]((0..<65).flatMap { _ in [UInt8(14), 1, 0, 0, 0, 0, 0, 0] })
        #expect(throws: WireError.malformed("more than 64 options")) { try NDPOptions.parse(ByteView(ByteBuffer(bytes: many))) }
    }
}

@Suite struct NDPOptionLimitTests {
    @Test func optionsThatCannotBeWrittenValidlyAreCutOrLeftOut() throws {
        #expect(NDPOption.recursiveDNSServers(lifetime: 60, servers: []).encoded.isEmpty)
        let servers = (0..<200).map { IPv6Address(0xFD00, 0, 0, 0, 0, 0, 0, UInt16($0)) }
        let rdnss = NDPOption.recursiveDNSServers(lifetime: 60, servers: servers).encoded
        #expect(rdnss.count == 8 + 127 * 16 && Int(rdnss[1]) * 8 == rdnss.count)
        let names = (0..<300).map { "name\($0).example.test" }
        let dnssl = NDPOption.dnsSearchList(lifetime: 60, domains: names).encoded
        #expect(dnssl.count <= 2040 && Int(dnssl[1]) * 8 == dnssl.count)
        let parsed = try NDPOptions.parse(ByteView(ByteBuffer(bytes: dnssl + rdnss)))
        guard case .dnsSearchList(_, let kept)? = parsed.first, case .recursiveDNSServers(_, let keptServers)? = parsed.last else {
            Issue.record("did not parse back: \(parsed)")
            return
        }
        #expect(!kept.isEmpty && kept == Array(names.prefix(kept.count)))
        #expect(keptServers == Array(servers.prefix(127)))
        let other = NDPOption.other(type: 200, data: [UInt8](repeating: 1, count: 5000)).encoded
        #expect(other.count == 2040 && other[1] == 255)
    }
}
