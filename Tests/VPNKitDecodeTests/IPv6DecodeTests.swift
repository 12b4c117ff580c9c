// IPv6, ICMPv6, neighbour discovery and DNS in the decoder: the documented forms on the recorded
// captures, and the edges the captures do not reach (atomic fragments, refused extension headers,
// a zero UDP checksum, malformed DNS data, raw IPv6 link types).

import Foundation
import NIOCore
import Testing
import VPNKitBase
import VPNKitDecode
import VPNKitIPv6
import VPNKitUDP

/// The frame numbered `number` (from 1) of a fixture capture, decoded.
func fixtureFrame(_ capture: String, _ number: Int) throws -> DecodedFrame {
    var decoder = try CaptureDecoder(path: fixtures.appendingPathComponent(capture).path)
    while let frame = decoder.next(), frame.number <= number {
        if frame.number == number { return frame }
    }
    throw CocoaError(.fileReadCorruptFile)
}

/// The JSON text of one member of a decoded frame's object.
func member(_ frame: DecodedFrame, _ key: String) -> String? {
    guard case .object(let members) = frame.json else { return nil }
    return members.first { $0.0 == key }?.1.serialized
}

private let guest = IPv6Address("fd00:65::3")!
private let gateway = IPv6Address("fd00:65::1")!

/// An IPv6 packet from the guest to the gateway: `extensions` (already chained, the first one's
/// type is `first`) then `upper`, whose protocol the last extension header names.
private func packet(first: IPProtocol, extensions: [UInt8] = [], upper: ByteBuffer) -> ByteBuffer {
    var out = ByteBuffer.withHeadroom(capacity: upper.readableBytes)
    out.writeImmutableBuffer(upper)
    if !extensions.isEmpty { out.withHeaderWriter(length: extensions.count) { $0.storeBytes(extensions, at: 0) } }
    IPv6Header(source: guest, destination: gateway, nextHeader: first).prepend(to: &out)
    return out
}

/// A UDP datagram from port 5353 to `port`, its checksum over the IPv6 pseudo-header.
private func udp(to port: UInt16, _ payload: [UInt8], checksum: Bool = true) -> ByteBuffer {
    var out = ByteBuffer.withHeadroom(capacity: payload.count)
    out.writeBytes(payload)
    UDPHeader(sourcePort: 5353, destinationPort: port, checksumEnabled: checksum).prepend(to: &out, source: .v6(guest), destination: .v6(gateway))
    return out
}

/// Decodes a raw IPv6 packet (LINKTYPE_IPV6).
private func decode(_ packet: ByteBuffer) -> DecodedFrame { FrameDecoder(linkType: 229).decode(packet, number: 1) }

/// A DNS response to a query for `name`, with `answers` given as wire bytes after the question.
private func dnsResponse(answers: [UInt8], count: UInt16) -> [UInt8] {
    var bytes: [UInt8] = [0x12, 0x34, 0x84, 0x00, 0, 1, 0, UInt8(count), 0, 0, 0, 0]
    bytes += [4] + Array("host".utf8) + [8] + Array("internal".utf8) + [0, 0, 1, 0, 1]  // host.internal A IN, at 12
    return bytes + answers
}

@Suite("Decoding IPv6, ICMPv6, neighbour discovery and DNS")
struct IPv6DecodeTests {
    @Test("the documented forms: ipv6, ipv6_frag, icmpv6 and dns, keys in order")
    func documentedForms() throws {
        let fragment = try fixtureFrame("ping6.pcap", 10)
        #expect(member(fragment, "ipv6") == #"{"src":"fd00:200:7::1","dst":"fd00:200:7::2","next_header":44,"hop_limit":64,"payload_len":1456,"flow_label":993516,"traffic_class":0}"#)
        #expect(member(fragment, "ipv6_frag") == #"{"next_header":58,"offset":1448,"more":true,"id":265595046}"#)
        #expect(fragment.icmpv6 == nil, "a fragment carries nothing above ipv6_frag")
        #expect(member(try fixtureFrame("ping6.pcap", 3), "icmpv6") == #"{"type":128,"code":0,"checksum_ok":true,"id":28762,"seq":1}"#)
        #expect(member(try fixtureFrame("ndp6.pcap", 3), "icmpv6") == #"{"type":135,"code":0,"checksum_ok":true,"target":"fe80::ff:fe00:a"}"#)
        #expect(member(try fixtureFrame("dns.pcap", 4), "dns") == #"{"id":4660,"qr":true,"rcode":0,"questions":[{"name":"host.internal","type":28}],"answers":[{"name":"host.internal","type":28,"ttl":60,"data":"fd00:65::2"}]}"#)
    }

    @Test("the readable line for router advertisements, neighbour advertisements, fragments and DNS")
    func lines() throws {
        let ra = try fixtureFrame("ndp6.pcap", 4).line
        #expect(ra.contains("router advertisement lifetime 600 prefix fd00:200:6::/64 mtu 1500 rdnss fd00:200:6::2 lladdr 02:00:00:00:00:0b"), "\(ra)")
        #expect(ra.contains("ICMPv6 hlim 255 plen 88 flow 0xee85a tc 0xc0"), "\(ra)")
        let mld = try fixtureFrame("ndp6.pcap", 1).line
        #expect(mld.contains("exthdrs 1 router-alert") && mld.contains("multicast listener report"), "\(mld)")
        let na = try fixtureFrame("ndp6.pcap", 19).line
        #expect(na.contains("neighbor advertisement fd00:200:6::2 [RSO] lladdr 02:00:00:00:00:0b"), "\(na)")
        let fragment = try fixtureFrame("ping6.pcap", 10).line
        #expect(fragment.contains("frag 1448+ id 265595046"), "\(fragment)")
        let dns = try fixtureFrame("dns.pcap", 8).line
        #expect(dns.hasSuffix("DNS response 4662 NOERROR A? www.internal -> www.internal CNAME host.internal, host.internal A 192.168.65.2"), "\(dns)")
        let unreachable = try fixtureFrame("udp6.pcap", 4).line
        #expect(unreachable.contains("destination unreachable code 4"), "\(unreachable)")
    }

    @Test("an atomic fragment is a whole packet: its UDP is decoded under ipv6_frag")
    func atomicFragment() {
        var upper = udp(to: 7, [1, 2, 3])
        IPv6FragmentHeader(nextHeader: .udp, offset: 0, moreFragments: false, identification: 7).prepend(to: &upper)
        let frame = decode(packet(first: .ipv6Fragment, upper: upper))
        #expect(frame.error == nil)
        #expect(member(frame, "ipv6_frag") == #"{"next_header":17,"offset":0,"more":false,"id":7}"#)
        #expect(frame.udp?.checksumValid == true && frame.udp?.header.destinationPort == 7)
    }

    @Test("a zero UDP checksum is invalid over IPv6; a bad one is reported, not fatal")
    func udpChecksums() {
        #expect(decode(packet(first: .udp, upper: udp(to: 7, [1], checksum: false))).udp?.checksumValid == false)
        var corrupted = udp(to: 7, [1, 2])
        corrupted.setInteger(UInt8(9), at: corrupted.readerIndex + 8)
        let frame = decode(packet(first: .udp, upper: corrupted))
        #expect(frame.udp?.checksumValid == false && frame.error == nil)
        #expect(frame.line.hasSuffix("5353 > 7 len 10 [bad udp checksum]"), "\(frame.line)")
    }

    @Test("extension headers the stack refuses: an error on the ipv6 layer, nothing above")
    func refusedChains() {
        // A routing header with one segment left: we route nothing.
        let routing = decode(packet(first: .ipv6Routing, extensions: [17, 0, 0, 1, 0, 0, 0, 0], upper: udp(to: 7, [])))
        #expect(routing.error == "ipv6: extension headers: parameter problem code 0 at byte 42")
        #expect(routing.ipv6 != nil && routing.ipv6?.chain == nil && routing.udp == nil)
        // Nine destination options headers: past the bound.
        var chain: [UInt8] = []
        for index in 0..<9 { chain += [index == 8 ? 17 : 60, 0, 1, 4, 0, 0, 0, 0] }
        let long = decode(packet(first: .ipv6DestinationOptions, extensions: chain, upper: udp(to: 7, [])))
        #expect(long.error == "ipv6: extension headers: more than 8 headers")
        // A payload length past the bytes.
        var short = packet(first: .udp, upper: udp(to: 7, [1, 2, 3]))
        short.moveWriterIndex(to: short.writerIndex - 2)
        #expect(decode(short).error == "ipv6: payload length 11 exceeds frame (9)")
    }

    @Test("packet too big reports the MTU; a neighbour solicitation for a multicast target is an ndp error")
    func icmpv6Fields() {
        var tooBig = ByteBuffer.withHeadroom(capacity: 48)
        tooBig.writeBytes([UInt8](repeating: 0, count: 48))
        ICMPv6Header(type: .packetTooBig, restOfHeader: 1280).prepend(to: &tooBig, source: guest, destination: gateway)
        let frame = decode(packet(first: .icmpv6, upper: tooBig))
        #expect(member(frame, "icmpv6") == #"{"type":2,"code":0,"checksum_ok":true,"mtu":1280}"#)
        #expect(frame.line.contains("packet too big code 0 mtu 1280"), "\(frame.line)")

        var solicitation = ByteBuffer.withHeadroom(capacity: 16)
        solicitation.writeBytes(IPv6Address("ff02::1")!.octets)
        ICMPv6Header(type: .neighborSolicitation).prepend(to: &solicitation, source: guest, destination: gateway)
        let ns = decode(packet(first: .icmpv6, upper: solicitation))
        #expect(ns.error?.hasPrefix("ndp: ") == true, "\(ns.error ?? "")")
        #expect(ns.icmpv6 != nil && ns.ndp == nil && member(ns, "icmpv6")?.contains("target") == false)
    }

    @Test("DNS answer data: a compressed name resolved, bad lengths reported with the dns layer kept")
    func dnsAnswers() {
        // CNAME host.internal -> "www" + pointer to "internal" (offset 17); A record with 5 bytes.
        let cname: [UInt8] = [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3] + Array("www".utf8) + [0xC0, 17]
        let a: [UInt8] = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 5, 10, 0, 0, 1, 9]
        let frame = decode(packet(first: .udp, upper: udp(to: 53, dnsResponse(answers: cname + a, count: 2))))
        #expect(frame.dns?.answerData == ["www.internal", nil])
        #expect(frame.error == "dns: answer 2 (A) data: 5 bytes, not 4")
        #expect(member(frame, "dns")?.contains(#"{"name":"host.internal","type":1,"ttl":60}"#) == true)
        // A CNAME whose name runs past its data length.
        let runs: [UInt8] = [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 3] + Array("www".utf8) + [0]
        let past = decode(packet(first: .udp, upper: udp(to: 53, dnsResponse(answers: runs, count: 1))))
        #expect(past.error == "dns: answer 1 (CNAME) data: the name runs 3 bytes past the record data")
        // Not DNS at all.
        let junk = decode(packet(first: .udp, upper: udp(to: 53, [1, 2, 3])))
        #expect(junk.dns == nil && junk.udp != nil && junk.error?.hasPrefix("dns: truncated") == true, "\(junk.error ?? "")")
    }

    @Test("raw IPv6 captures: LINKTYPE_IPV6, LINKTYPE_RAW by its version nibble; LINKTYPE_IPV4 refuses version 6")
    func rawLinkTypes() {
        let bytes = packet(first: .udp, upper: udp(to: 7, [1]))
        let v6 = FrameDecoder(linkType: 229).decode(bytes, number: 1)
        #expect(v6.ethernet == nil && v6.ipv6 != nil && v6.udp != nil && v6.error == nil)
        #expect(FrameDecoder(linkType: 101).decode(bytes, number: 1).json == v6.json)
        #expect(FrameDecoder(linkType: 228).decode(bytes, number: 1).error == "ipv4: unsupported version 6")
    }
}
