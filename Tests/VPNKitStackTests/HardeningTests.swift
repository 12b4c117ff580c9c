import NIOCore
import Testing
import VPNKitARP
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack

@Suite("Hostile input the review found")
struct HardeningTests {
    @Test("ARP from senders off the subnet (or its network/broadcast address) creates no entries")
    func arpOffSubnet() {
        let stack = NetworkStack()
        for sender in [IPv4Address(10, 0, 0, 1), IPv4Address(192, 168, 65, 0), IPv4Address(192, 168, 65, 255), IPv4Address(8, 8, 8, 8)] {
            var peer = Peer()
            peer.ip = sender
            stack.receive(peer.arpRequest(for: gatewayIP), now: t0)
        }
        #expect(stack.arpCache.count == 0)
        stack.receive(Peer().arpRequest(for: gatewayIP), now: t0)
        #expect(stack.arpCache.count == 1)
    }

    @Test("a unicast datagram in a link-layer broadcast, loopback sources and tagged frames are dropped")
    func linkRules() {
        let stack = stackKnowingGuest()
        var frame = Peer().echoRequest(size: 8)
        frame.setBytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], at: frame.readerIndex)
        stack.receive(frame, now: t0)
        var loopback = Peer()
        loopback.ip = IPv4Address(127, 0, 0, 1)
        stack.receive(loopback.echoRequest(size: 8), now: t0)
        var tagged = ByteBuffer.withHeadroom(capacity: 0)
        tagged.writeImmutableBuffer(try! EthernetFrame(Peer().echoRequest(size: 8)).payload.buffer)
        EthernetHeader(destination: gatewayMAC, source: guestMAC, etherType: .ipv4, vlan: VLANTag(id: 5)).prepend(to: &tagged)
        stack.receive(tagged, now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.ipv4NotForUs] == 1)
        #expect(stack.statistics[.ipv4BadSource] == 1)
        #expect(stack.statistics[.ethernetUnsupportedType] == 1)
    }

    @Test("tiny fragments held for reassembly are charged what they really keep alive")
    func compactFragments() throws {
        var reassembler = IPv4Reassembler()
        // A 16-byte fragment in a 64 KiB buffer.
        var big = ByteBufferAllocator().buffer(capacity: 65536)
        var header = IPv4Header(source: guestIP, destination: gatewayIP, protocol: .icmp, identification: 1)
        header.moreFragments = true
        var payload = ByteBuffer.withHeadroom(capacity: 16)
        payload.writeRepeatingByte(1, count: 16)
        header.prepend(to: &payload)
        big.writeImmutableBuffer(payload)
        let packet = try IPv4Packet(big)
        _ = reassembler.add(packet, now: t0)
        #expect(reassembler.bytesHeld == 16)
        #expect(packet.payload.storageCapacity >= 65536)
    }
}
