// IPv6 to addresses beyond the link goes to the forwarder as IPv4's does: TCP SYNs held for it and
// answered by its accept (SYN-ACK), RST or ICMPv6 unreachable (codes mapped from ICMPv4's), UDP
// both ways (fragmented when large), echo requests and its replies; the host alias; and what never
// reaches it (on-link, link-local, multicast destinations, spoofed sources, a "no" from it).

import NIOCore
import Testing
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv6
import VPNKitStack
import VPNKitTCP
import VPNKitUDP

/// A forwarder that takes 2001:db8::/32 and the host alias (or everything), and records what it gets.
final class RecordingForwarder6: PacketForwarder {
    var takesEverything = false
    var asked: [IPAddress] = []
    var requests: [TCPConnectionRequest] = []
    var datagrams: [UDPMessage] = []
    var echoes: [ICMPEchoRequest] = []

    func forwards(_ destination: IPAddress) -> Bool {
        asked.append(destination)
        guard case .v6(let v6) = destination else { return false }
        return takesEverything || v6.high >> 32 == 0x2001_0DB8 || v6 == hostAlias6
    }
    func tcpConnectionRequested(_ request: TCPConnectionRequest, now: NIODeadline) { requests.append(request) }
    func udpDatagramReceived(_ message: UDPMessage, now: NIODeadline) { datagrams.append(message) }
    func icmpEchoRequested(_ request: ICMPEchoRequest, now: NIODeadline) { echoes.append(request) }
}

let hostAlias6 = IPv6Address("fd00:65::2")!
let outside6 = IPv6Address("2001:db8::5")!

@Suite("IPv6 forwarding")
struct IPv6ForwardingTests {
    let guest = Guest6()

    /// A stack owning the host alias, with `forwarder`, that knows the guest's link address.
    func stack(_ forwarder: RecordingForwarder6) -> NetworkStack {
        let stack = ipv6Stack { $0.additionalAddresses = [hostAlias6] }
        stack.forwarder = forwarder
        stack.receive(guest.neighborSolicitation(for: gateway6), now: t0)
        _ = stack.takeOutput()
        return stack
    }

    func syn(port: UInt16, to destination: IPv6Address, sequence: UInt32 = 1000, from source: IPv6Address = guest6) -> ByteBuffer {
        var syn = ByteBuffer()
        TCPHeader(
            sourcePort: port, destinationPort: 80, sequenceNumber: SequenceNumber(sequence), flags: .syn, window: 64800,
            options: TCPHeader.standardOptions(maximumSegmentSize: 1440, sackPermitted: true, timestamps: nil, windowScale: 7)
        ).prepend(to: &syn, source: .v6(source), destination: .v6(destination))
        return guest.frame(syn, nextHeader: .tcp, from: source, to: destination)
    }

    @Test("a SYN beyond the link is held for the forwarder: accepted → SYN-ACK from the destination, refused → RST or ICMPv6 unreachable")
    func tcp() throws {
        let forwarder = RecordingForwarder6()
        let stack = stack(forwarder)
        stack.receive(syn(port: 40000, to: outside6), now: t0)
        stack.receive(syn(port: 40000, to: outside6), now: t0)  // a retransmission meets the held request
        #expect(stack.takeOutput().isEmpty)
        try #require(forwarder.requests.count == 1)
        let request = forwarder.requests[0]
        #expect(request.guestAddress == .v6(guest6) && request.destination == .v6(outside6) && request.destinationPort == 80)
        #expect(stack.statistics[.forwardedTCPDuplicateSYNs] == 1)
        let socket = stack.acceptTCPConnectionRequest(request, now: t0)
        #expect(socket != nil)
        let synACK = try #require(ipv6Packets(in: stack.takeOutput()).first)
        #expect(synACK.packet.source == outside6 && synACK.packet.destination == guest6)
        let segment = try TCPSegment(synACK.upper)
        #expect(segment.isChecksumValid(source: .v6(outside6), destination: .v6(guest6)))
        let header = try TCPHeader(parsing: segment)
        #expect(header.flags == [.syn, .ack] && header.acknowledgmentNumber == SequenceNumber(1001))

        // Refused with a RST.
        stack.receive(syn(port: 40001, to: outside6, sequence: 77), now: t0)
        stack.refuseTCPConnectionRequest(try #require(forwarder.requests.last), with: .reset, now: t0)
        let reset = try #require(ipv6Packets(in: stack.takeOutput()).first)
        #expect(reset.packet.source == outside6)
        let resetSegment = try TCPSegment(reset.upper)
        #expect(resetSegment.isChecksumValid(source: .v6(outside6), destination: .v6(guest6)))
        let resetHeader = try TCPHeader(parsing: resetSegment)
        #expect(resetHeader.flags == [.rst, .ack] && resetHeader.acknowledgmentNumber == SequenceNumber(78))

        // Refused with ICMP unreachable codes, mapped: net 0 → 0, host 1 → 3, port 3 → 4, prohibited 13 → 1.
        for (index, (v4, v6)) in [(UInt8(0), UInt8(0)), (1, 3), (3, 4), (13, 1)].enumerated() {
            stack.receive(syn(port: 41000 + UInt16(index), to: outside6, sequence: 5), now: t0 + .seconds(Int64(index)))
            stack.refuseTCPConnectionRequest(try #require(forwarder.requests.last), with: .unreachable(code: v4), now: t0 + .seconds(Int64(index)))
            let error = try #require(ipv6Packets(in: stack.takeOutput()).first)
            let icmp = try #require(error.icmp)
            #expect(icmp.type == .destinationUnreachable && icmp.code == v6)
            #expect(error.packet.source == outside6 && error.packet.destination == guest6)
            #expect(icmp.isChecksumValid(source: outside6, destination: guest6))
            // The quote: an IPv6 header guest → destination carrying TCP, then the ports.
            let quoted = icmp.body
            #expect(quoted.loadU8(at: 0) >> 4 == 6 && quoted.loadU8(at: 6) == IPProtocol.tcp.rawValue)
            #expect(quoted.loadIPv6Address(at: 8) == guest6 && quoted.loadIPv6Address(at: 24) == outside6)
            #expect(quoted.loadU16(at: 40) == 41000 + UInt16(index) && quoted.loadU16(at: 42) == 80)
        }
        #expect(stack.pendingTCPConnectionRequestCount == 0)
        #expect(stack.statistics[.forwardedTCPRequests] == 6 && stack.statistics[.forwardedTCPRefused] == 5)
    }

    @Test("UDP beyond the link goes to the forwarder; its replies (fragmented when large) and unreachables reach the guest")
    func udp() throws {
        let forwarder = RecordingForwarder6()
        let stack = stack(forwarder)
        stack.receive(guest.udp([1, 2, 3], from: 40000, to: 53, destination: outside6), now: t0)
        let message = try #require(forwarder.datagrams.first)
        #expect(message.source == .v6(guest6) && message.destination == .v6(outside6) && message.destinationPort == 53)
        #expect(Array(message.payload.readableBytesView) == [1, 2, 3])
        #expect(stack.statistics[.forwardedUDPDatagrams] == 1)

        try stack.sendForwardedUDP(ByteBuffer(bytes: [9, 8]), from: .v6(outside6), port: 53, to: .v6(guest6), port: 40000, now: t0)
        let reply = try #require(ipv6Packets(in: stack.takeOutput()).first)
        #expect(reply.packet.source == outside6 && reply.chain.upperLayer == .udp)
        let datagram = try UDPDatagram(reply.upper)
        #expect(datagram.sourcePort == 53 && datagram.destinationPort == 40000 && datagram.payload.array == [9, 8])
        #expect(datagram.isChecksumValid(IPPseudoHeader(source: .v6(outside6), destination: .v6(guest6), protocol: .udp, length: reply.upper.count)))

        // 4,000 bytes leave in fragments.
        try stack.sendForwardedUDP(ByteBuffer(repeating: 7, count: 4000), from: .v6(outside6), port: 53, to: .v6(guest6), port: 40000, now: t0)
        let pieces = ipv6Packets(in: stack.takeOutput())
        #expect(pieces.count == 3 && pieces.allSatisfy { $0.chain.fragment != nil && $0.packet.bytes.count <= 1500 })
        #expect(throws: StackError.datagramTooLarge(65528)) {
            try stack.sendForwardedUDP(ByteBuffer(repeating: 0, count: 65528), from: .v6(outside6), port: 53, to: .v6(guest6), port: 1, now: t0)
        }
        // Mixed families are refused, typed and counted.
        #expect(throws: StackError.self) {
            try stack.sendForwardedUDP(ByteBuffer(), from: .v4(IPv4Address(8, 8, 8, 8)), port: 53, to: .v6(guest6), port: 1, now: t0)
        }
        #expect(stack.statistics[.addressFamilyNotSupported] == 1)

        stack.sendForwardedUDPUnreachable(code: 3, guest: .v6(guest6), guestPort: 40000, remote: .v6(outside6), remotePort: 53, now: t0)
        let unreachable = try #require(ipv6Packets(in: stack.takeOutput()).first)
        let icmp = try #require(unreachable.icmp)
        #expect(icmp.type == .destinationUnreachable && icmp.code == 4 && unreachable.packet.source == outside6)
        #expect(icmp.body.loadU8(at: 6) == IPProtocol.udp.rawValue && icmp.body.loadU16(at: 40) == 40000 && icmp.body.loadU16(at: 42) == 53)
        stack.sendForwardedUDPUnreachable(code: 3, guest: .v6(guest6), guestPort: 1, remote: .v4(IPv4Address(8, 8, 8, 8)), remotePort: 53, now: t0)
        #expect(stack.takeOutput().isEmpty && stack.statistics[.addressFamilyNotSupported] == 2)
    }

    @Test("an echo request beyond the link goes to the forwarder with its hop limit; its reply reaches the guest")
    func echo() throws {
        let forwarder = RecordingForwarder6()
        let stack = stack(forwarder)
        stack.receive(guest.echoRequest(size: 56, identifier: 0x1234, sequence: 9, to: outside6), now: t0)
        #expect(stack.takeOutput().isEmpty)
        let request = try #require(forwarder.echoes.first)
        #expect(request.guestAddress == .v6(guest6) && request.destination == .v6(outside6))
        #expect(request.identifier == 0x1234 && request.sequenceNumber == 9 && request.timeToLive == 64 && request.payload.readableBytes == 56)
        stack.sendForwardedEchoReply(
            from: .v6(outside6), to: .v6(guest6), identifier: 0x1234, sequenceNumber: 9, payload: request.payload, now: t0)
        let reply = try #require(ipv6Packets(in: stack.takeOutput()).first)
        let icmp = try #require(reply.icmp)
        #expect(icmp.type == .echoReply && icmp.identifier == 0x1234 && icmp.sequenceNumber == 9 && icmp.body.count == 56)
        #expect(reply.packet.source == outside6 && icmp.isChecksumValid(source: outside6, destination: guest6))
        #expect(stack.statistics[.forwardedICMPEchoRequests] == 1)
    }

    @Test("the host alias: its TCP and UDP go to the forwarder, its pings are answered by the stack")
    func hostAlias() throws {
        let forwarder = RecordingForwarder6()
        let stack = stack(forwarder)
        stack.receive(syn(port: 40000, to: hostAlias6), now: t0)
        #expect(forwarder.requests.first?.destination == .v6(hostAlias6))
        stack.receive(guest.udp([1], to: 9, destination: hostAlias6), now: t0)
        #expect(forwarder.datagrams.first?.destination == .v6(hostAlias6))
        _ = stack.takeOutput()
        stack.receive(guest.echoRequest(size: 8, to: hostAlias6), now: t0)
        #expect(forwarder.echoes.isEmpty)
        let reply = try #require(ipv6Packets(in: stack.takeOutput()).first)
        #expect(reply.icmp?.type == .echoReply && reply.packet.source == hostAlias6)
        // Refused with an unreachable, it comes from the gateway (as IPv4's does).
        stack.refuseTCPConnectionRequest(try #require(forwarder.requests.first), with: .unreachable(code: 13), now: t0)
        let error = try #require(ipv6Packets(in: stack.takeOutput()).first)
        #expect(error.packet.source == gateway6 && error.icmp?.code == 1)
        // A link-local source may reach it too.
        stack.receive(syn(port: 40001, to: hostAlias6, from: guestLinkLocal), now: t0)
        #expect(forwarder.requests.count == 2)
    }

    @Test("never forwarded: on-link, link-local, multicast, loopback destinations, spoofed sources, what the forwarder declines")
    func notForwarded() throws {
        let forwarder = RecordingForwarder6()
        forwarder.takesEverything = true
        let stack = stack(forwarder)
        for destination in ["fd00:65::99", "fe80::9", "ff02::1", "ff05::2", "::1"] {
            stack.receive(syn(port: 40000, to: IPv6Address(destination)!), now: t0)
            stack.receive(guest.udp([1], to: 9, destination: IPv6Address(destination)!), now: t0)
        }
        #expect(forwarder.requests.isEmpty && forwarder.datagrams.isEmpty)
        #expect(!forwarder.asked.contains { if case .v6(let a) = $0 { a.isLinkLocal || a.isMulticast || a.isLoopback || a.high == prefix6.high && a != hostAlias6 } else { false } })
        // A source outside the prefix (and not link-local) is dropped and counted.
        stack.receive(syn(port: 40000, to: outside6, from: IPv6Address("2001:db8::99")!), now: t0)
        stack.receive(Guest6(address: IPv6Address("2001:db9::1")!).udp([1], to: 9, destination: outside6), now: t0)
        #expect(forwarder.requests.isEmpty && forwarder.datagrams.isEmpty)
        #expect(stack.statistics[.forwardedBadSource] == 2)
        // Declined by the forwarder: today's answer, no route.
        forwarder.takesEverything = false
        _ = stack.takeOutput()
        let noRoute = stack.statistics[.ipv6NoRoute]
        stack.receive(syn(port: 40002, to: IPv6Address("2a00::1")!), now: t0)
        let error = try #require(ipv6Packets(in: stack.takeOutput()).first)
        #expect(error.icmp?.type == .destinationUnreachable && error.icmp?.code == 0)
        #expect(stack.statistics[.ipv6NoRoute] == noRoute + 1)
    }

    @Test("ICMPv4 unreachable codes map to ICMPv6's")
    func codes() {
        #expect([0, 1, 2, 3, 6, 7, 9, 10, 13].map { NetworkStack.icmpv6UnreachableCode($0) } == [0, 3, 0, 4, 0, 3, 1, 1, 1])
    }
}
