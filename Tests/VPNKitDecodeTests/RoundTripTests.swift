import Foundation
import NIOCore
import Testing
import VPNKitARP
import VPNKitBase
import VPNKitDHCP
import VPNKitEthernet
import VPNKitIPv4
import VPNKitIPv6
import VPNKitPcap
import VPNKitTCP
import VPNKitTestSupport
import VPNKitUDP

/// Re-emits a frame from the value forms of its headers, payloads kept as they were, writing each
/// header in place in front of the one above it. Returns nil for frames that are not well-formed
/// (a parse error or a bad checksum), which are not expected to round-trip.
func reemit(_ frame: ByteBuffer) throws -> ByteBuffer? {
    let ethernet = try EthernetFrame(frame)
    let payload = ethernet.payload
    var out = ByteBuffer.withHeadroom(capacity: frame.readableBytes)
    switch ethernet.etherType {
    case .arp:
        let arp = try ARPPacket(payload)
        out.writeImmutableBuffer(payload.view(from: ARPPacket.length).buffer)
        ARPHeader(parsing: arp).prepend(to: &out)
    case .ipv4:
        let ip = try IPv4Packet(payload)
        guard ip.isHeaderChecksumValid else { return nil }
        let body = ip.payload
        if ip.isFragment {
            out.writeImmutableBuffer(body.buffer)
        } else {
            switch ip.protocol {
            case .tcp:
                let tcp = try TCPSegment(body)
                guard tcp.isChecksumValid(source: .v4(ip.source), destination: .v4(ip.destination)) else { return nil }
                out.writeImmutableBuffer(tcp.payload.buffer)
                try TCPHeader(parsing: tcp).prepend(to: &out, source: .v4(ip.source), destination: .v4(ip.destination))
            case .udp:
                let udp = try UDPDatagram(body)
                guard udp.isChecksumValid(ip.pseudoHeader) else { return nil }
                if [udp.sourcePort, udp.destinationPort].contains(67) {
                    try DHCPMessage(parsing: DHCPPacket(udp.payload)).write(to: &out)
                } else {
                    out.writeImmutableBuffer(udp.payload.buffer)
                }
                UDPHeader(parsing: udp).prepend(to: &out, source: .v4(ip.source), destination: .v4(ip.destination))
                out.writeImmutableBuffer(body.view(from: udp.length).buffer)
            case .icmp:
                let icmp = try ICMPv4Packet(body)
                guard icmp.isChecksumValid else { return nil }
                out.writeImmutableBuffer(icmp.payload.buffer)
                ICMPv4Header(parsing: icmp).prepend(to: &out)
            default:
                out.writeImmutableBuffer(body.buffer)
            }
        }
        IPv4Header(parsing: ip).prepend(to: &out)
        // Link padding after the IP datagram.
        out.writeImmutableBuffer(payload.view(from: ip.totalLength).buffer)
    case .ipv6:
        guard try reemitIPv6(payload, into: &out) else { return nil }
    default:
        out.writeImmutableBuffer(payload.buffer)
    }
    EthernetHeader(parsing: ethernet).prepend(to: &out)
    return out
}

@Suite("Parse → emit")
struct RoundTripTests {
    @Test("every well-formed fixture frame re-emits byte for byte, headers written in place", arguments: fixtureCaptures())
    func roundTrip(capture: String) throws {
        let reader = try PcapReader(path: fixtures.appendingPathComponent(capture).path)
        var checked = 0
        for (index, record) in reader.enumerated() {
            guard let emitted = try reemit(record.data) else { continue }
            #expect(emitted.readableByteArray == record.data.readableByteArray, "\(capture) frame \(index + 1)")
            checked += 1
        }
        #expect(checked > 0)
        print("\(capture): \(checked) frames re-emitted identically")
    }
}

@Suite("Parse → emit on the tcpdump corpus")
struct CorpusRoundTripTests {
    @Test(
        "well-formed Ethernet frames from tcpdump's captures re-emit byte for byte",
        .enabled(if: runsHere(hasTcpdumpCorpus), corpusSkipReason), .requires(hasTcpdumpCorpus, corpusSkipReason))
    func corpus() throws {
        let corpus = try #require(tcpdumpCorpusDirectory)
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus.path)
            .filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted()
        var checked = 0
        var mismatched: [String] = []
        for name in names {
            guard let reader = try? PcapReader(path: corpus.appendingPathComponent(name).path),
                reader.linkType == .ethernet
            else { continue }
            for (index, record) in reader.enumerated() where record.data.readableBytes == record.originalLength {
                guard let emitted = try? reemit(record.data) else { continue }
                checked += 1
                if emitted.readableByteArray != record.data.readableByteArray { mismatched.append("\(name)#\(index + 1)") }
            }
        }
        print("tcpdump corpus: \(checked) well-formed frames re-emitted, \(mismatched.count) differ: \(mismatched.prefix(10))")
        #expect(checked > 100)
        #expect(mismatched.isEmpty)
    }
}

/// Writes `bytes` in front of `buffer`'s readable bytes.
func prependBytes(_ bytes: ByteView, to buffer: inout ByteBuffer) {
    let array = bytes.array
    guard !array.isEmpty else { return }
    buffer.withHeaderWriter(length: array.count) { $0.storeBytes(array, at: 0) }
}

/// The IPv6 half of `reemit`: the upper layer from its value form (neighbour discovery messages from
/// theirs), extension headers copied, a fragment header from its value form, the fixed header from
/// its value form, then the link padding. False for packets that are not well-formed.
func reemitIPv6(_ payload: ByteView, into out: inout ByteBuffer) throws -> Bool {
    let ip = try IPv6Packet(payload)
    let chain = try ip.headerChain()
    let end = IPv6Packet.headerLength + ip.payloadLength
    let upper = ip.bytes.view(from: chain.upperLayerOffset, length: end - chain.upperLayerOffset)
    let (source, destination) = (ip.source, ip.destination)
    if let fragment = chain.fragment, !fragment.isAtomic, let at = chain.fragmentHeaderOffset {
        out.writeImmutableBuffer(upper.buffer)
        fragment.prepend(to: &out)
        prependBytes(ip.bytes.view(from: IPv6Packet.headerLength, length: at - IPv6Packet.headerLength), to: &out)
    } else {
        switch chain.upperLayer {
        case .icmpv6:
            let icmp = try ICMPv6Packet(upper)
            guard icmp.isChecksumValid(source: source, destination: destination) else { return false }
            if (133...136).contains(icmp.type.rawValue) {
                try NDPMessage(parsing: icmp).prepend(to: &out, source: source, destination: destination)
            } else {
                out.writeImmutableBuffer(icmp.body.buffer)
                ICMPv6Header(parsing: icmp).prepend(to: &out, source: source, destination: destination)
            }
        case .udp:
            let udp = try UDPDatagram(upper)
            guard udp.checksum != 0, udp.isChecksumValid(IPPseudoHeader(source: .v6(source), destination: .v6(destination), protocol: .udp, length: udp.length))
            else { return false }
            out.writeImmutableBuffer(udp.payload.buffer)
            UDPHeader(parsing: udp).prepend(to: &out, source: .v6(source), destination: .v6(destination))
        case .tcp:
            let tcp = try TCPSegment(upper)
            guard tcp.isChecksumValid(source: .v6(source), destination: .v6(destination)) else { return false }
            out.writeImmutableBuffer(tcp.payload.buffer)
            try TCPHeader(parsing: tcp).prepend(to: &out, source: .v6(source), destination: .v6(destination))
        default:
            out.writeImmutableBuffer(upper.buffer)
        }
        prependBytes(ip.bytes.view(from: IPv6Packet.headerLength, length: chain.upperLayerOffset - IPv6Packet.headerLength), to: &out)
    }
    IPv6Header(parsing: ip).prepend(to: &out)
    out.writeImmutableBuffer(payload.view(from: end).buffer)
    return true
}
