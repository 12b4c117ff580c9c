// The stack's IPv6 side against a guest built by hand: router and neighbour discovery, duplicate
// address detection, echo (fragmented both ways), UDP and its errors, and the rules that keep a
// hostile guest from taking our addresses.

import NIOCore
import Testing
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv6
import VPNKitStack
import VPNKitTCP
import VPNKitUDP

@Suite("IPv6 in the stack")
struct IPv6StackTests {
    let guest = Guest6()

    /// A stack that learned the guest from its solicitation for the gateway (as a Linux guest does
    /// before its first packet to us).
    func stackKnowingGuest() -> NetworkStack {
        let stack = ipv6Stack()
        stack.receive(guest.neighborSolicitation(for: gateway6), now: t0)
        _ = stack.takeOutput()
        return stack
    }

    @Test("a router solicitation is answered with an advertisement of the prefix, MTU and DNS server")
    func routerAdvertisement() throws {
        let stack = ipv6Stack { $0.searchDomains = ["docker.internal"] }
        stack.receive(guest.routerSolicitation(), now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        try #require(sent.count == 1)
        let ra = sent[0]
        #expect(ra.linkDestination == guestMAC)
        #expect(ra.packet.source == gatewayLinkLocal && ra.packet.destination == guestLinkLocal && ra.packet.hopLimit == 255)
        #expect(ra.icmp?.isChecksumValid(source: gatewayLinkLocal, destination: guestLinkLocal) == true)
        guard case .routerAdvertisement(let advertisement)? = ra.ndp else {
            Issue.record("not an RA: \(String(describing: ra.ndp))")
            return
        }
        #expect(advertisement.routerLifetime == 1800 && advertisement.currentHopLimit == 64)
        #expect(advertisement.options.contains(.sourceLinkLayerAddress(gatewayMAC)))
        #expect(advertisement.options.contains(.mtu(1500)))
        #expect(
            advertisement.options.contains(
                .prefixInformation(
                    NDPPrefixInformation(
                        prefix: prefix6, prefixLength: 64, onLink: true, autonomous: true, validLifetime: 2_592_000,
                        preferredLifetime: 604_800))))
        #expect(advertisement.options.contains(.recursiveDNSServers(lifetime: 1800, servers: [gateway6])))
        #expect(advertisement.options.contains(.dnsSearchList(lifetime: 1800, domains: ["docker.internal"])))
        #expect(stack.statistics[.ndpRouterSolicitationsReceived] == 1)
    }

    @Test("advertisements to all nodes: at start, 4 s apart three times, then within the configured interval")
    func periodicAdvertisements() throws {
        let stack = ipv6Stack { $0.maximumAdvertisementInterval = .seconds(30) }
        stack.start(now: t0)
        var times: [TimeAmount] = []
        var now = t0
        for frame in stack.takeOutput() where ipv6Packets(in: [frame]).first?.linkDestination == IPv6Address.allNodes.multicastMAC {
            times.append(now - t0)
        }
        while times.count < 6, let next = stack.nextDeadline {
            now = next
            stack.poll(now: now)
            for sent in ipv6Packets(in: stack.takeOutput()) where sent.packet.destination == .allNodes {
                if case .routerAdvertisement? = sent.ndp { times.append(now - t0) }
            }
        }
        try #require(times.count == 6)
        #expect(Array(times.prefix(4)) == [.zero, .seconds(4), .seconds(8), .seconds(12)])
        for (earlier, later) in zip(times.dropFirst(3), times.dropFirst(4)) {
            #expect(later - earlier >= .seconds(10) && later - earlier <= .seconds(30))
        }
    }

    @Test("a solicitation for our address is answered as a router, and the guest is learned")
    func neighborSolicitation() throws {
        let stack = ipv6Stack()
        for target in [gateway6, gatewayLinkLocal] {
            stack.receive(guest.neighborSolicitation(for: target), now: t0)
            let sent = ipv6Packets(in: stack.takeOutput())
            try #require(sent.count == 1)
            #expect(sent[0].linkDestination == guestMAC && sent[0].packet.destination == guest6 && sent[0].packet.hopLimit == 255)
            #expect(
                sent[0].ndp
                    == .neighborAdvertisement(
                        NDPNeighborAdvertisement(
                            router: true, solicited: true, override: true, target: target, options: [.targetLinkLayerAddress(gatewayMAC)])))
        }
        // The guest's address was learned from the solicitation: a ping is answered at once.
        stack.receive(guest.echoRequest(size: 56), now: t0)
        let replies = ipv6Packets(in: stack.takeOutput())
        #expect(replies.count == 1 && replies.first?.icmp?.type == .echoReply)
        #expect(stack.statistics[.ndpSolicitationsAnswered] == 2)
    }

    @Test("solicitations for other addresses, or not from the link itself, are not answered")
    func solicitationsNotAnswered() {
        let stack = ipv6Stack()
        // To a group we do not listen to: dropped at the IP layer.
        stack.receive(guest.neighborSolicitation(for: IPv6Address("fd00:65::9")!), now: t0)
        // To our solicited-node group (the same low 24 bits as fd00:65::1) but for another address.
        stack.receive(guest.neighborSolicitation(for: IPv6Address("fd00:65::ab00:1")!), now: t0)
        stack.receive(guest.neighborSolicitation(for: gateway6, hopLimit: 64), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.ipv6NotForUs] == 1)
        #expect(stack.statistics[.ndpSolicitationsIgnored] == 1 && stack.statistics[.ndpInvalid] == 1)
    }

    @Test("duplicate address detection: we defend our addresses and never claim a guest's")
    func duplicateAddressDetection() throws {
        let stack = ipv6Stack()
        stack.receive(guest.duplicateAddressProbe(for: guest6), now: t0)
        stack.receive(guest.duplicateAddressProbe(for: IPv6Address("fd00:65::ab00:1")!), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.ipv6NotForUs] == 1)
        stack.receive(guest.duplicateAddressProbe(for: gateway6), now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        try #require(sent.count == 1)
        #expect(sent[0].packet.destination == .allNodes && sent[0].linkDestination == IPv6Address.allNodes.multicastMAC)
        guard case .neighborAdvertisement(let advertisement)? = sent[0].ndp else {
            Issue.record("not an NA")
            return
        }
        #expect(advertisement.target == gateway6 && !advertisement.solicited && advertisement.override)
        #expect(stack.statistics[.ndpDuplicateAddressDefended] == 1 && stack.statistics[.ndpSolicitationsIgnored] == 1)
        // A guest advertising our address is not believed.
        let claim = NDPNeighborAdvertisement(
            router: false, solicited: false, override: true, target: gateway6, options: [.targetLinkLayerAddress(guestMAC)])
        stack.receive(guest.ndp(.neighborAdvertisement(claim), to: .allNodes), now: t0)
        #expect(stack.statistics[.ndpInvalid] == 1 && stack.takeOutput().isEmpty)
    }

    @Test("a ping from an unknown guest is answered once its address resolves")
    func echoWaitsForResolution() throws {
        let stack = ipv6Stack()
        stack.receive(guest.echoRequest(size: 56), now: t0)
        let solicitation = ipv6Packets(in: stack.takeOutput())
        try #require(solicitation.count == 1)
        #expect(solicitation[0].packet.destination == guest6.solicitedNode && solicitation[0].linkDestination == guest6.solicitedNode.multicastMAC)
        #expect(solicitation[0].ndp == .neighborSolicitation(target: guest6, options: [.sourceLinkLayerAddress(gatewayMAC)]))
        stack.receive(guest.neighborAdvertisement(solicited: true), now: t0 + .milliseconds(1))
        let replies = ipv6Packets(in: stack.takeOutput())
        #expect(replies.count == 1 && replies.first?.icmp?.type == .echoReply && replies.first?.linkDestination == guestMAC)
    }

    @Test("echo of any size: fragments reassemble, and a reply above the MTU leaves in fragments", arguments: [56, 1452, 1453, 4000, 30000])
    func fragmentedEcho(size: Int) throws {
        let stack = stackKnowingGuest()
        let request = guest.echoRequest(size: size, identifier: 0x4242, sequence: 9)
        for frame in guest.fragments(of: request, mtu: 1500) where request.readableBytes > 1514 { stack.receive(frame, now: t0) }
        if request.readableBytes <= 1514 { stack.receive(request, now: t0) }
        let output = stack.takeOutput()
        for frame in output { #expect(frame.readableBytes <= 1514) }
        let sent = ipv6Packets(in: output)
        #expect(sent.count == (40 + size + 8 <= 1500 ? 1 : (size + 8 + 1447) / 1448))
        var reassembler = IPv6Reassembler()
        var reply: IPv6Packet?
        for piece in sent {
            guard piece.chain.fragment != nil else {
                reply = piece.packet
                continue
            }
            if case .complete(let whole) = reassembler.add(piece.packet, chain: piece.chain, now: t0) { reply = try IPv6Packet(whole) }
        }
        let whole = try #require(reply)
        let echo = try ICMPv6Packet(whole.payload)
        #expect(echo.type == .echoReply && echo.identifier == 0x4242 && echo.sequenceNumber == 9)
        #expect(echo.isChecksumValid(source: gateway6, destination: guest6))
        #expect(echo.body.array == (0..<size).map { UInt8(truncatingIfNeeded: $0) })
    }

    @Test("UDP to a closed port: port unreachable quoting the datagram; a zero checksum is dropped")
    func udpPortUnreachable() throws {
        let stack = stackKnowingGuest()
        let datagram = guest.udp(Array("hello".utf8), to: 9)
        stack.receive(datagram, now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        try #require(sent.count == 1)
        let error = try #require(sent[0].icmp)
        #expect(error.type == .destinationUnreachable && error.code == 4)
        #expect(error.isChecksumValid(source: gateway6, destination: guest6))
        #expect(error.body.array == Array(datagram.readableBytesView.dropFirst(14)))
        stack.receive(guest.udp(Array("hello".utf8), to: 9, checksum: false), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.udpBadChecksum] == 1 && stack.statistics[.udpPortUnreachable] == 1)
    }

    @Test("a socket bound to :: receives over IPv6 and answers from the address it was sent to")
    func udpSocket() throws {
        let stack = stackKnowingGuest()
        var received: [UDPMessage] = []
        let socket = try stack.bindUDP(port: 7, address: .v6(.unspecified)) { received.append($0) }
        stack.receive(guest.udp([1, 2, 3], to: 7), now: t0)
        try #require(received.count == 1)
        #expect(received[0].source == .v6(guest6) && received[0].destination == .v6(gateway6) && received[0].payload.readableBytes == 3)
        try socket.send(received[0].payload, to: received[0].source, port: received[0].sourcePort, now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        try #require(sent.count == 1)
        let udp = try UDPDatagram(sent[0].upper)
        #expect(sent[0].packet.source == gateway6 && udp.destinationPort == 40000 && udp.sourcePort == 7)
        #expect(udp.checksum != 0 && udp.isChecksumValid(IPPseudoHeader(source: .v6(gateway6), destination: .v6(guest6), protocol: .udp, length: 11)))
        // Without IPv6 the same bind is refused, typed and counted.
        let plain = NetworkStack()
        #expect(throws: StackError.addressFamilyNotSupported(.v6(.unspecified))) { try plain.bindUDP(port: 7, address: .v6(.unspecified)) { _ in } }
    }

    @Test("an unknown upper layer is answered with a parameter problem pointing at its next-header field")
    func unknownNextHeader() throws {
        let stack = stackKnowingGuest()
        stack.receive(guest.frame(ByteBuffer(bytes: [0, 0, 0, 0]), nextHeader: IPProtocol(rawValue: 253), to: gateway6), now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        try #require(sent.count == 1)
        let problem = try #require(sent[0].icmp)
        #expect(problem.type == .parameterProblem && problem.code == 1 && problem.restOfHeader == 6)
        #expect(stack.statistics[.ipv6UnknownNextHeader] == 1)
    }

    @Test("hostile input: our own source, a multicast source, another host's address, IPv6 without IPv6 on")
    func hostile() {
        let stack = stackKnowingGuest()
        stack.receive(Guest6(address: gateway6).echoRequest(size: 8), now: t0)
        stack.receive(Guest6(address: IPv6Address("ff02::1")!).echoRequest(size: 8), now: t0)
        stack.receive(guest.echoRequest(size: 8, to: IPv6Address("fd00:65::77")!), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.ipv6BadSource] == 2 && stack.statistics[.ipv6NotForUs] == 1)
        // Beyond the link: no route, said at once.
        stack.receive(guest.echoRequest(size: 8, to: IPv6Address("2001:db8::1")!), now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        #expect(sent.count == 1 && sent.first?.icmp?.type == .destinationUnreachable && sent.first?.icmp?.code == 0)
        #expect(stack.statistics[.ipv6NoRoute] == 1)
        let plain = NetworkStack()
        plain.receive(guest.echoRequest(size: 8), now: t0)
        #expect(plain.takeOutput().isEmpty && plain.statistics[.ethernetUnsupportedType] == 1)
    }

    @Test("an unanswered resolution gives up after three solicitations and drops what it held")
    func resolutionFails() {
        let stack = ipv6Stack()
        stack.receive(guest.echoRequest(size: 8), now: t0)
        var solicitations = ipv6Packets(in: stack.takeOutput()).count
        var now = t0
        while let next = stack.nextDeadline, next < t0 + .seconds(10) {
            now = next
            stack.poll(now: now)
            solicitations += ipv6Packets(in: stack.takeOutput()).filter { $0.ndp.map { if case .neighborSolicitation = $0 { true } else { false } } ?? false }.count
        }
        #expect(solicitations == 3)
        #expect(stack.statistics[.ndpResolutionFailed] == 1 && stack.statistics[.ndpHeldPacketsDropped] == 1)
    }

    @Test("TCP over IPv6: a SYN to a listener is answered with MSS 1440 (MTU − 60), window scaling, SACK and timestamps")
    func tcpHandshake() throws {
        let stack = stackKnowingGuest()
        var accepted: [TCPSocket] = []
        try stack.listenTCP(port: 7) { accepted.append($0) }
        var syn = ByteBuffer()
        TCPHeader(
            sourcePort: 40000, destinationPort: 7, sequenceNumber: SequenceNumber(1000), flags: .syn, window: 64800,
            options: TCPHeader.standardOptions(maximumSegmentSize: 1440, sackPermitted: true, timestamps: (1, 0), windowScale: 10)
        ).prepend(to: &syn, source: .v6(guest6), destination: .v6(gateway6))
        stack.receive(guest.frame(syn, nextHeader: .tcp, to: gateway6), now: t0)
        let sent = ipv6Packets(in: stack.takeOutput())
        try #require(sent.count == 1)
        #expect(sent[0].chain.upperLayer == .tcp)
        let segment = try TCPSegment(sent[0].upper)
        #expect(segment.isChecksumValid(source: .v6(gateway6), destination: .v6(guest6)))
        let header = try TCPHeader(parsing: segment)
        #expect(header.flags == [.syn, .ack] && header.acknowledgmentNumber == SequenceNumber(1001))
        #expect(header.maximumSegmentSize == 1440)
        #expect(header.options.contains(.sackPermitted))
        #expect(header.options.contains { if case .timestamps = $0 { true } else { false } })
        #expect(header.options.contains { if case .windowScale = $0 { true } else { false } })
        // A SYN to a closed port is reset.
        var closed = ByteBuffer()
        TCPHeader(sourcePort: 40001, destinationPort: 9999, sequenceNumber: SequenceNumber(5), flags: .syn, window: 1000)
            .prepend(to: &closed, source: .v6(guest6), destination: .v6(gateway6))
        stack.receive(guest.frame(closed, nextHeader: .tcp, to: gateway6), now: t0)
        let reset = try TCPHeader(parsing: TCPSegment(try #require(ipv6Packets(in: stack.takeOutput()).first).upper))
        #expect(reset.flags == [.rst, .ack] && reset.acknowledgmentNumber == SequenceNumber(6))
    }

    @Test("packet too big about our packet: replies to that guest are cut to the path MTU (never below 1280)")
    func packetTooBig() throws {
        let stack = stackKnowingGuest()
        func packetTooBig(mtu: UInt32, quotingSource source: IPv6Address) -> ByteBuffer {
            // The quoted packet: a header of one of ours (or not) to the guest, and a little of its payload.
            var quoted = ByteBuffer(bytes: [UInt8](repeating: 0, count: 64))
            IPv6Header(source: source, destination: guest6, nextHeader: .icmpv6).prepend(to: &quoted)
            ICMPv6Header(type: .packetTooBig, restOfHeader: mtu).prepend(to: &quoted, source: guest6, destination: gateway6)
            return guest.frame(quoted, nextHeader: .icmpv6, to: gateway6)
        }
        // Not about a packet of ours: ignored.
        stack.receive(packetTooBig(mtu: 1280, quotingSource: IPv6Address("fd00:65::99")!), now: t0)
        stack.receive(guest.echoRequest(size: 1400), now: t0)
        #expect(ipv6Packets(in: stack.takeOutput()).count == 1)
        // About ours, naming 1000 bytes: 1280 it is.
        stack.receive(packetTooBig(mtu: 1000, quotingSource: gateway6), now: t0)
        #expect(stack.statistics[.ipv6PathMTUReduced] == 1)
        stack.receive(guest.echoRequest(size: 1400), now: t0)
        let output = stack.takeOutput()
        #expect(output.count == 2)
        for frame in output { #expect(frame.readableBytes <= 14 + 1280) }
        // Ten minutes later the entry has expired: the link MTU again.
        stack.poll(now: t0 + .minutes(10))
        _ = stack.takeOutput()
        stack.receive(guest.echoRequest(size: 1400), now: t0 + .minutes(10))
        #expect(ipv6Packets(in: stack.takeOutput()).count == 1)
    }
}
