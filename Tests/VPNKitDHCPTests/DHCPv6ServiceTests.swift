import NIOCore
import Testing
import VPNKitBase
import VPNKitDHCP
import VPNKitEthernet
import VPNKitIPv6
import VPNKitServices
import VPNKitStack
import VPNKitUDP

/// The DHCPv6 service on a stack: ff02::1:2 accepted, replies to the client's link-local port 546,
/// the O flag in router advertisements.
@Suite("DHCPv6 service on the stack")
struct DHCPv6ServiceTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    let guestMAC = MACAddress(rawValue: 0x0250_0000_0003)
    let guestLinkLocal = IPv6Address("fe80::50:ff:fe00:3")!
    let linkLocal = IPv6Address("fe80::1")!

    func makeStack() -> NetworkStack {
        var configuration = StackConfiguration()
        var link = IPv6LinkConfiguration()
        link.advertisementSeed = 7
        configuration.ipv6 = link
        configuration.gratuitousARPOnStart = false
        return NetworkStack(configuration: configuration)
    }

    /// A UDP datagram from the guest's link-local address, in a frame.
    func datagram(_ payload: [UInt8], from port: UInt16 = 546, to destination: IPv6Address = DHCPv6.allRelayAgentsAndServers) -> ByteBuffer {
        var body = ByteBuffer(bytes: payload)
        UDPHeader(sourcePort: port, destinationPort: 547).prepend(to: &body, source: .v6(guestLinkLocal), destination: .v6(destination))
        IPv6Header(source: guestLinkLocal, destination: destination, nextHeader: .udp, hopLimit: 1).prepend(to: &body)
        let mac = destination.isMulticast ? destination.multicastMAC : MACAddress(rawValue: 0x5A94_EFE4_0CEE)
        EthernetHeader(destination: mac, source: guestMAC, etherType: .ipv6).prepend(to: &body)
        return body
    }

    /// The IPv6 packets among the stack's output: (packet, upper-layer view).
    func packets(_ stack: NetworkStack) -> [(IPv6Packet, ByteView, MACAddress)] {
        var frames: [ByteBuffer] = []
        stack.drainOutput { frames.append($0.joined) }
        return frames.compactMap { frame in
            guard let ethernet = try? EthernetFrame(frame), ethernet.etherType == .ipv6, let packet = try? IPv6Packet(ethernet.payload),
                let chain = try? packet.headerChain()
            else { return nil }
            return (packet, packet.bytes.view(from: chain.upperLayerOffset, length: 40 + packet.payloadLength - chain.upperLayerOffset), ethernet.destination)
        }
    }

    func routerAdvertisementFlags(_ stack: NetworkStack) -> NDPRouterAdvertisement? {
        var body = ByteBuffer()
        NDPMessage.routerSolicitation(options: [.sourceLinkLayerAddress(guestMAC)]).prepend(to: &body, source: guestLinkLocal, destination: .allRouters)
        IPv6Header(source: guestLinkLocal, destination: .allRouters, nextHeader: .icmpv6, hopLimit: 255).prepend(to: &body)
        EthernetHeader(destination: IPv6Address.allRouters.multicastMAC, source: guestMAC, etherType: .ipv6).prepend(to: &body)
        stack.receive(body, now: t0 + .seconds(10))
        for (_, upper, _) in packets(stack) {
            if let icmp = try? ICMPv6Packet(upper), case .routerAdvertisement(let ra)? = try? NDPMessage(parsing: icmp) { return ra }
        }
        return nil
    }

    @Test("INFORMATION-REQUEST to ff02::1:2 is answered from fe80::1:547 to the client's 546; the RA says O")
    func answered() throws {
        let stack = makeStack()
        #expect(routerAdvertisementFlags(stack)?.otherConfiguration == false)
        let configuration = DHCPv6ServerConfiguration(macAddress: stack.configuration.macAddress, dnsServers: [stack.configuration.ipv6!.gateway])
        let service = try DHCPv6Service(stack: stack, configuration: configuration)
        #expect(stack.advertisesOtherConfiguration)
        let ra = try #require(routerAdvertisementFlags(stack))
        #expect(ra.otherConfiguration && !ra.managed)
        let request = DHCPv6Message(
            type: .informationRequest, transactionID: 0x123456, options: [DHCPv6Option(code: .clientIdentifier, data: [0, 3, 0, 1] + guestMAC.bytes)])
        stack.receive(datagram(request.encoded), now: t0 + .seconds(11))
        // The reply waits for the client's link-local address to resolve, or goes at once when known.
        var sent = packets(stack)
        if let solicitation = sent.first(where: { $0.0.nextHeader == .icmpv6 }), sent.allSatisfy({ $0.0.nextHeader == .icmpv6 }) {
            #expect(solicitation.0.source == linkLocal)
            var body = ByteBuffer()
            NDPMessage.neighborAdvertisement(
                NDPNeighborAdvertisement(router: false, solicited: true, override: true, target: guestLinkLocal, options: [.targetLinkLayerAddress(guestMAC)])
            ).prepend(to: &body, source: guestLinkLocal, destination: linkLocal)
            IPv6Header(source: guestLinkLocal, destination: linkLocal, nextHeader: .icmpv6, hopLimit: 255).prepend(to: &body)
            EthernetHeader(destination: stack.configuration.macAddress, source: guestMAC, etherType: .ipv6).prepend(to: &body)
            stack.receive(body, now: t0 + .seconds(11))
            sent = packets(stack)
        }
        let reply = try #require(sent.first { $0.0.nextHeader == .udp })
        #expect(reply.0.source == linkLocal && reply.0.destination == guestLinkLocal && reply.2 == guestMAC)
        let udp = try UDPDatagram(reply.1)
        #expect(udp.sourcePort == 547 && udp.destinationPort == 546)
        let message = try DHCPv6Message(parsing: udp.payload.array)
        #expect(message.type == .reply && message.transactionID == 0x123456)
        #expect(message.option(.dnsServers) == IPv6Address("fd00:65::1")!.octets)
        #expect(message.option(.clientIdentifier) == [0, 3, 0, 1] + guestMAC.bytes)
        #expect(service.counters.replies == 1)

        // From another port: counted, not answered. SOLICIT: not answered.
        stack.receive(datagram(request.encoded, from: 5460), now: t0 + .seconds(12))
        stack.receive(datagram(DHCPv6Message(type: .solicit, transactionID: 1, options: []).encoded), now: t0 + .seconds(12))
        stack.receive(datagram([1, 2]), now: t0 + .seconds(12))
        #expect(packets(stack).allSatisfy { $0.0.nextHeader != .udp })
        #expect(service.counters.malformed == 2 && service.counters.statefulIgnored == 1)

        // Closed: the O flag goes, and the port is free again.
        service.close()
        #expect(!stack.advertisesOtherConfiguration)
        #expect((try? stack.bindUDP(port: 547, address: .v6(.unspecified)) { _ in }) != nil)
    }

    @Test("on a stack without IPv6 the service is refused, typed")
    func withoutIPv6() {
        let stack = NetworkStack()
        #expect(throws: StackError.addressFamilyNotSupported(.v6(.unspecified))) {
            _ = try DHCPv6Service(stack: stack, configuration: DHCPv6ServerConfiguration(macAddress: stack.configuration.macAddress, dnsServers: []))
        }
        #expect(!stack.advertisesOtherConfiguration)
        #expect(!stack.joinIPv6MulticastGroup(DHCPv6.allRelayAgentsAndServers))
    }
}
