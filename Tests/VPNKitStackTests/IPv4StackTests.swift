import NIOCore
import Testing
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport
import VPNKitUDP

/// A stack that already knows the guest (so replies go out without ARP).
func stackKnowingGuest(_ configure: (inout StackConfiguration) -> Void = { _ in }) -> NetworkStack {
    var configuration = StackConfiguration()
    configure(&configuration)
    let stack = NetworkStack(configuration: configuration)
    stack.receive(Peer().arpRequest(for: gatewayIP), now: t0)
    _ = stack.takeOutput()
    return stack
}

func icmp(_ packet: IPv4Packet) -> ICMPv4Packet? { try? ICMPv4Packet(packet.payload) }

@Suite("IPv4 and ICMP in the stack")
struct IPv4StackTests {
    @Test("echo: the reply carries the same id, sequence and data, from the pinged address", arguments: [0, 56, 1472, 1473, 4000, 30000, 65507])
    func echo(size: Int) throws {
        let stack = stackKnowingGuest()
        let peer = Peer()
        let request = peer.echoRequest(size: size, id: 0x4242, seq: 9)
        for frame in peer.fragments(of: request, mtu: 1500) { stack.receive(frame, now: t0) }
        let output = stack.takeOutput()
        // Replies larger than the MTU leave as fragments of at most 1500 bytes.
        for frame in output { #expect(frame.readableBytes <= 1514) }
        #expect(output.count == max(1, (size + 8 + 1479) / 1480))
        let replies = datagrams(in: output)
        try #require(replies.count == 1)
        let reply = replies[0]
        #expect(reply.source == gatewayIP && reply.destination == guestIP)
        #expect(reply.isHeaderChecksumValid)
        let echo = try #require(icmp(reply))
        #expect(echo.type == .echoReply && echo.code == 0)
        #expect(echo.identifier == 0x4242 && echo.sequenceNumber == 9)
        #expect(echo.isChecksumValid)
        let sent = try ICMPv4Packet(try IPv4Packet(try EthernetFrame(request).payload).payload)
        #expect(echo.payload.array == sent.payload.array)
        #expect(stack.statistics[.icmpEchoRepliesSent] == 1)
    }

    @Test("fragments reassemble in any order, duplicates ignored")
    func reassemblyOrders() throws {
        let peer = Peer()
        let pieces = peer.fragments(of: peer.echoRequest(size: 6000), mtu: 1500)
        #expect(pieces.count == 5)
        var rng = SplitMix64(seed: 42)
        for trial in 0..<20 {
            let stack = stackKnowingGuest()
            var order = Array(pieces)
            order.shuffle(using: &rng)
            if trial % 2 == 1 { order.insert(order[0], at: 1) }  // a duplicate before completion
            for frame in order { stack.receive(frame, now: t0) }
            #expect(datagrams(in: stack.takeOutput()).count == 1, "trial \(trial)")
            #expect(stack.statistics[.ipv4ReassemblyDuplicate] == (trial % 2 == 1 ? 1 : 0))
            #expect(stack.reassembler.count == 0 && stack.reassembler.bytesHeld == 0)
        }
    }

    @Test("an overlapping fragment drops the whole datagram")
    func overlap() throws {
        let stack = stackKnowingGuest()
        let peer = Peer()
        let pieces = peer.fragments(of: peer.echoRequest(size: 3000), mtu: 1500)
        stack.receive(pieces[0], now: t0)
        // A fragment at offset 8 overlapping the first one.
        var payload = ByteBuffer.withHeadroom(capacity: 16)
        payload.writeRepeatingByte(0xEE, count: 16)
        var header = IPv4Header(source: guestIP, destination: gatewayIP, protocol: .icmp, identification: peer.identification)
        header.fragmentOffset = 8
        header.moreFragments = true
        header.prepend(to: &payload)
        EthernetHeader(destination: gatewayMAC, source: guestMAC, etherType: .ipv4).prepend(to: &payload)
        stack.receive(payload, now: t0)
        for frame in pieces.dropFirst() { stack.receive(frame, now: t0) }
        #expect(datagrams(in: stack.takeOutput()).isEmpty)
        #expect(stack.statistics[.ipv4ReassemblyOverlap] == 1)
    }

    @Test("an incomplete datagram times out and frees its memory")
    func timeout() {
        let stack = stackKnowingGuest()
        let peer = Peer()
        let pieces = peer.fragments(of: peer.echoRequest(size: 3000), mtu: 1500)
        stack.receive(pieces[0], now: t0)
        #expect(stack.reassembler.count == 1 && stack.reassembler.bytesHeld == 1480)
        #expect(stack.nextDeadline == t0 + .seconds(30))
        stack.poll(now: t0 + .seconds(29))
        #expect(stack.reassembler.count == 1)
        stack.poll(now: t0 + .seconds(30))
        #expect(stack.reassembler.count == 0 && stack.reassembler.bytesHeld == 0)
        #expect(stack.statistics[.ipv4ReassemblyTimeout] == 1)
        // The late fragments now start a new datagram that never completes.
        for frame in pieces.dropFirst() { stack.receive(frame, now: t0 + .seconds(31)) }
        #expect(datagrams(in: stack.takeOutput()).isEmpty)
    }

    @Test("limits: datagrams in progress, fragments per datagram, bytes, and the 64 KiB ceiling")
    func limits() throws {
        let stack = stackKnowingGuest {
            $0.reassembly.maximumDatagrams = 3
            $0.reassembly.maximumFragmentsPerDatagram = 4
            $0.reassembly.maximumTotalBytes = 10_000
        }
        var peer = Peer()
        for id in 0..<5 {
            peer.identification = UInt16(100 + id)
            stack.receive(peer.fragments(of: peer.echoRequest(size: 3000), mtu: 1500)[0], now: t0)
        }
        #expect(stack.reassembler.count == 3)
        #expect(stack.statistics[.ipv4ReassemblyLimit] == 2)

        // Too many fragments: 600-byte pieces of a 4000-byte echo are 7 fragments, the limit is 4.
        let small = stackKnowingGuest { $0.reassembly.maximumFragmentsPerDatagram = 4 }
        for frame in peer.fragments(of: peer.echoRequest(size: 4000), mtu: 600) { small.receive(frame, now: t0) }
        #expect(datagrams(in: small.takeOutput()).isEmpty)
        #expect(small.statistics[.ipv4ReassemblyLimit] >= 1)
        #expect(small.reassembler.bytesHeld < 4000)

        // A fragment reaching past 65535 bytes.
        let big = stackKnowingGuest()
        var payload = ByteBuffer.withHeadroom(capacity: 1000)
        payload.writeRepeatingByte(1, count: 1000)
        var header = IPv4Header(source: guestIP, destination: gatewayIP, protocol: .icmp, identification: 9)
        header.fragmentOffset = 65000
        header.prepend(to: &payload)
        EthernetHeader(destination: gatewayMAC, source: guestMAC, etherType: .ipv4).prepend(to: &payload)
        big.receive(payload, now: t0)
        #expect(big.statistics[.ipv4ReassemblyOversized] == 1)
        #expect(big.reassembler.count == 0)
    }

    @Test("UDP to a closed port: ICMP port unreachable quoting the datagram")
    func portUnreachable() throws {
        let stack = stackKnowingGuest()
        stack.receive(Peer().udp(Array("probe".utf8), from: 40001, to: 9), now: t0)
        let out = datagrams(in: stack.takeOutput())
        try #require(out.count == 1)
        let error = try #require(icmp(out[0]))
        #expect(error.type == .destinationUnreachable && error.code == 3)
        #expect(error.isChecksumValid)
        let quoted = try IPv4Packet(error.payload)
        #expect(quoted.source == guestIP && quoted.destination == gatewayIP && quoted.protocol == .udp)
        #expect(try UDPDatagram(quoted.payload).destinationPort == 9)
        #expect(out[0].totalLength == 20 + 8 + 20 + 8 + 5)
        #expect(stack.statistics[.udpPortUnreachable] == 1)
    }

    @Test("ICMP errors are rate-limited and never sent about errors or broadcasts")
    func errorDiscipline() throws {
        let stack = stackKnowingGuest {
            $0.icmpErrorsPerSecond = 10
            $0.icmpErrorBurst = 5
        }
        var peer = Peer()
        for i in 0..<50 {
            peer.identification = UInt16(i)
            stack.receive(peer.udp([1], to: 9), now: t0 + .milliseconds(Int64(i)))
        }
        // 5 from the burst, then 10/s for 49 ms: no more than one more.
        let sent = stack.statistics[.icmpErrorsSent]
        #expect(sent >= 5 && sent <= 6)
        #expect(stack.statistics[.icmpErrorsRateLimited] == 50 - sent)
        _ = stack.takeOutput()

        // An ICMP error sent to us is never answered with one.
        let quiet = stackKnowingGuest()
        var body = ByteBuffer.withHeadroom(capacity: 28)
        body.writeRepeatingByte(0, count: 28)
        ICMPv4Header(type: .destinationUnreachable, code: 1).prepend(to: &body)
        quiet.receive(Peer().ipv4(body, protocol: .icmp, id: 3), now: t0)
        #expect(quiet.takeOutput().isEmpty)
        #expect(quiet.statistics[.icmpOtherReceived] == 1)

        // UDP to a closed port at the broadcast address: no error.
        quiet.receive(Peer().udp([1], to: 9, destination: .broadcast), now: t0)
        #expect(quiet.takeOutput().isEmpty)
    }

    @Test("bad checksums, bad sources and foreign destinations are dropped and counted")
    func drops() {
        let stack = stackKnowingGuest()
        let peer = Peer()
        var badIP = peer.echoRequest(size: 8)
        badIP.setInteger(UInt8(1), at: badIP.readerIndex + 14 + 8)  // TTL changed, checksum stale
        stack.receive(badIP, now: t0)
        var badICMP = peer.echoRequest(size: 8)
        badICMP.setInteger(UInt8(0xFF), at: badICMP.readerIndex + 14 + 20 + 8)
        stack.receive(badICMP, now: t0)
        var badUDP = peer.udp([1, 2, 3], to: 9)
        badUDP.setInteger(UInt8(0xFF), at: badUDP.readerIndex + 14 + 20 + 8)
        stack.receive(badUDP, now: t0)
        var spoofed = peer
        spoofed.ip = gatewayIP
        stack.receive(spoofed.echoRequest(size: 8), now: t0)
        stack.receive(peer.echoRequest(size: 8, to: IPv4Address(8, 8, 8, 8)), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.ipv4BadChecksum] == 1)
        #expect(stack.statistics[.icmpBadChecksum] == 1)
        #expect(stack.statistics[.udpBadChecksum] == 1)
        #expect(stack.statistics[.ipv4BadSource] == 1)
        #expect(stack.statistics[.ipv4NotForUs] == 1)
    }

    @Test("sending: fragmentation when DF is clear, fragmentation needed when it is set")
    func sendFragmentation() throws {
        let stack = stackKnowingGuest()
        var big = ByteBuffer.withHeadroom(capacity: 4000)
        big.writeRepeatingByte(7, count: 4000)
        var header = IPv4Header(source: IPv4Address(10, 1, 1, 1), destination: guestIP, protocol: .udp, identification: 5)
        header.prepend(to: &big)
        stack.sendIPv4(big, now: t0)
        let out = stack.takeOutput()
        #expect(out.count == 3)
        #expect(datagrams(in: out).first?.payload.count == 4000)
        #expect(stack.statistics[.ipv4FragmentsSent] == 3)

        var df = ByteBuffer.withHeadroom(capacity: 4000)
        df.writeRepeatingByte(7, count: 4000)
        header.dontFragment = true
        header.destination = guestIP
        header.source = guestIP
        var forwarded = IPv4Header(source: IPv4Address(192, 168, 65, 9), destination: guestIP, protocol: .udp, identification: 6, dontFragment: true)
        forwarded.timeToLive = 64
        forwarded.prepend(to: &df)
        // Learn .9 so the error can be delivered.
        var other = Peer()
        other.ip = IPv4Address(192, 168, 65, 9)
        other.mac = MACAddress(rawValue: 0x0250_0000_0009)
        stack.receive(other.arpRequest(for: gatewayIP), now: t0)
        _ = stack.takeOutput()
        stack.sendIPv4(df, now: t0)
        let errors = datagrams(in: stack.takeOutput())
        try #require(errors.count == 1)
        let error = try #require(icmp(errors[0]))
        #expect(error.type == .destinationUnreachable && error.code == 4)
        #expect(error.restOfHeader & 0xFFFF == 1500)
        #expect(errors[0].destination == IPv4Address(192, 168, 65, 9))
        #expect(stack.statistics[.ipv4FragmentationNeeded] == 1)
    }
}

