import NIOCore
import Testing
import VPNKitARP
import VPNKitBase
import VPNKitEthernet
import VPNKitStack
import VPNKitTransport

func arpPackets(_ frames: [ByteBuffer]) -> [(EthernetFrame, ARPHeader)] {
    frames.compactMap { frame in
        guard let e = try? EthernetFrame(frame), e.etherType == .arp, let a = try? ARPPacket(e.payload) else { return nil }
        return (e, ARPHeader(parsing: a))
    }
}

@Suite("ARP in the stack")
struct StackARPTests {
    @Test("answers a request for an owned address, to the asker, and learns the asker")
    func answers() throws {
        let stack = NetworkStack()
        stack.receive(Peer().arpRequest(for: gatewayIP), now: t0)
        let replies = arpPackets(stack.takeOutput())
        try #require(replies.count == 1)
        let (frame, reply) = replies[0]
        #expect(frame.destination == guestMAC && frame.source == gatewayMAC)
        #expect(reply.operation == .reply)
        #expect(reply.senderHardwareAddress == gatewayMAC && reply.senderProtocolAddress == gatewayIP)
        #expect(reply.targetHardwareAddress == guestMAC && reply.targetProtocolAddress == guestIP)
        #expect(stack.arpCache.lookup(guestIP, now: t0) == guestMAC)
        #expect(stack.statistics[.arpRequestsAnswered] == 1)
    }

    @Test("ignores requests for other addresses, and does not create entries from them")
    func ignoresOthers() {
        let stack = NetworkStack()
        stack.receive(Peer().arpRequest(for: IPv4Address(192, 168, 65, 77)), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.arpCache.lookup(guestIP, now: t0) == nil)
        #expect(stack.statistics[.arpRequestsIgnored] == 1)
    }

    @Test("answers for every owned address")
    func everyOwnedAddress() {
        var configuration = StackConfiguration()
        configuration.addresses.append(IPv4Address(192, 168, 65, 2))
        let stack = NetworkStack(configuration: configuration)
        stack.receive(Peer().arpRequest(for: IPv4Address(192, 168, 65, 2)), now: t0)
        #expect(arpPackets(stack.takeOutput()).first?.1.senderProtocolAddress == IPv4Address(192, 168, 65, 2))
    }

    @Test("a gratuitous ARP for each owned address on start")
    func gratuitous() {
        var configuration = StackConfiguration(additionalAddresses: [IPv4Address(192, 168, 65, 2)])
        configuration.gratuitousARPOnStart = true
        let stack = NetworkStack(configuration: configuration)
        stack.start(now: t0)
        let announced = arpPackets(stack.takeOutput())
        #expect(announced.count == 2)
        for (frame, arp) in announced {
            #expect(frame.destination == .broadcast)
            #expect(arp.senderProtocolAddress == arp.targetProtocolAddress)
        }
        stack.start(now: t0)
        #expect(stack.takeOutput().isEmpty)
    }

    @Test("resolution between two stacks: request, reply, then the held datagram")
    func resolution() throws {
        let sim = Simulation()
        var received: [UDPMessage] = []
        let socket = try sim.guest.bindUDP(port: 7) { received.append($0) }
        try sim.gateway.sendUDP(ByteBuffer(string: "hello"), from: .v4(gatewayIP), port: 5000, to: .v4(guestIP), port: 7, now: sim.now)
        sim.run(for: seconds(0.1))
        #expect(received.count == 1)
        #expect(received.first?.payload == ByteBuffer(string: "hello"))
        #expect(sim.gateway.statistics[.arpRequestsSent] == 1)
        #expect(sim.guest.statistics[.arpRequestsAnswered] == 1)
        #expect(sim.gateway.arpCache.lookup(guestIP, now: sim.now) == guestMAC)
        socket.close()
    }

    @Test("retries at most once per second, gives up after three requests and drops what it held")
    func retryAndFailure() throws {
        let stack = NetworkStack()
        try stack.sendUDP(ByteBuffer(string: "x"), from: .v4(gatewayIP), port: 1, to: .v4(guestIP), port: 2, now: t0)
        #expect(arpPackets(stack.takeOutput()).count == 1)
        var requestTimes = [t0]
        var now = t0
        while let next = stack.nextDeadline, next - t0 < .seconds(10) {
            #expect(next - now >= .seconds(1) || next == now)
            now = next
            stack.poll(now: now)
            if !arpPackets(stack.takeOutput()).isEmpty { requestTimes.append(now) }
        }
        #expect(requestTimes.count == 3)
        for (a, b) in zip(requestTimes, requestTimes.dropFirst()) { #expect(b - a >= .seconds(1)) }
        #expect(stack.statistics[.arpResolutionFailed] == 1)
        #expect(stack.arpCache.count == 0)
    }

    @Test("the pending queue is bounded per address and counted")
    func pendingBound() throws {
        let stack = NetworkStack()
        for i in 0..<20 {
            try stack.sendUDP(ByteBuffer(string: "\(i)"), from: .v4(gatewayIP), port: 1, to: .v4(guestIP), port: 2, now: t0)
        }
        _ = stack.takeOutput()
        #expect(stack.statistics[.arpQueueFull] == 4)  // 16 held
        stack.receive(Peer().arpRequest(for: gatewayIP), now: t0 + .milliseconds(5))
        let released = stack.takeOutput().filter { (try? EthernetFrame($0))?.etherType == .ipv4 }
        #expect(released.count == 16)
    }

    @Test("entries expire: after the lifetime a new request goes out")
    func expiry() throws {
        var configuration = StackConfiguration()
        configuration.arp.entryLifetime = .seconds(5)
        let stack = NetworkStack(configuration: configuration)
        stack.receive(Peer().arpRequest(for: gatewayIP), now: t0)
        _ = stack.takeOutput()
        #expect(stack.arpCache.lookup(guestIP, now: t0 + .seconds(4)) == guestMAC)
        #expect(stack.arpCache.lookup(guestIP, now: t0 + .seconds(5)) == nil)
        stack.poll(now: t0 + .seconds(5))
        #expect(stack.arpCache.count == 0)
        try stack.sendUDP(ByteBuffer(string: "x"), from: .v4(gatewayIP), port: 1, to: .v4(guestIP), port: 2, now: t0 + .seconds(6))
        #expect(arpPackets(stack.takeOutput()).first?.1.operation == .request)
    }

    @Test("the table is bounded: the oldest resolved entry is evicted")
    func tableBound() {
        var configuration = StackConfiguration()
        configuration.arp.maximumEntries = 4
        let stack = NetworkStack(configuration: configuration)
        for i in 0..<6 {
            var peer = Peer()
            peer.ip = IPv4Address(192, 168, 65, UInt8(10 + i))
            peer.mac = MACAddress(rawValue: 0x0250_0000_0100 + UInt64(i))
            stack.receive(peer.arpRequest(for: gatewayIP), now: t0 + .milliseconds(Int64(i)))
        }
        #expect(stack.arpCache.count == 4)
        #expect(stack.arpCache.lookup(IPv4Address(192, 168, 65, 10), now: t0 + .seconds(1)) == nil)
        #expect(stack.arpCache.lookup(IPv4Address(192, 168, 65, 15), now: t0 + .seconds(1)) != nil)
        #expect(stack.arpCache.evictions == 2)
    }

    @Test("malformed ARP and frames for other MACs are counted, not answered")
    func malformed() {
        let stack = NetworkStack()
        var bad = Peer().arpRequest(for: gatewayIP)
        bad.setInteger(UInt8(9), at: bad.readerIndex + 14 + 4)  // hardware length 9
        stack.receive(bad, now: t0)
        var other = Peer().arpRequest(for: gatewayIP, broadcast: false)
        other.setInteger(UInt8(0x77), at: other.readerIndex)  // destination MAC not ours
        stack.receive(other, now: t0)
        stack.receive(ByteBuffer(bytes: [1, 2, 3]), now: t0)
        #expect(stack.takeOutput().isEmpty)
        #expect(stack.statistics[.arpMalformed] == 1)
        #expect(stack.statistics[.ethernetNotForUs] == 1)
        #expect(stack.statistics[.ethernetMalformed] == 1)
    }

    @Test("ARP for a leased address is learned only from the lease's MAC (ARP sender and frame source); others' is refused and counted; unleased and expired addresses as before")
    func leasedAddressOnlyFromItsHolder() throws {
        let stack = NetworkStack()
        let rogueMAC = MACAddress(rawValue: 0x0250_0000_0BAD)
        let unleased = IPv4Address(192, 168, 65, 9)
        // The lease: guestIP at guestMAC until t0 + 100 s.
        stack.leaseHolder = { address, now in address == guestIP && now < t0 + .seconds(100) ? guestMAC : nil }
        let holder = Peer()
        var rogue = Peer()
        rogue.mac = rogueMAC
        /// ARP naming `address` at `mac` in a frame from `source`.
        func claim(_ address: IPv4Address, at mac: MACAddress, from source: MACAddress, operation: ARPOperation = .request) -> ByteBuffer {
            var buffer = ByteBuffer.withHeadroom(capacity: 0)
            ARPHeader(operation: operation, senderHardwareAddress: mac, senderProtocolAddress: address, targetHardwareAddress: .zero,
                      targetProtocolAddress: gatewayIP).prepend(to: &buffer)
            EthernetHeader(destination: .broadcast, source: source, etherType: .arp).prepend(to: &buffer)
            return buffer
        }

        // Another MAC cannot create the entry …
        stack.receive(rogue.arpRequest(for: gatewayIP, from: guestIP), now: t0)
        #expect(stack.arpCache.lookup(guestIP, now: t0) == nil)
        #expect(stack.statistics[.arpNotFromLeaseHolder] == 1)
        // … though its request is answered, to its own MAC.
        #expect(arpPackets(stack.takeOutput()).map(\.0.destination) == [rogueMAC])
        // The holder creates it.
        stack.receive(holder.arpRequest(for: gatewayIP), now: t0)
        #expect(stack.arpCache.lookup(guestIP, now: t0) == guestMAC)
        // Others cannot update it: a reply, a request, the holder's MAC as sender in another's frame,
        // another's MAC as sender in the holder's frame.
        stack.receive(claim(guestIP, at: rogueMAC, from: rogueMAC, operation: .reply), now: t0 + .seconds(1))
        stack.receive(rogue.arpRequest(for: gatewayIP, from: guestIP), now: t0 + .seconds(1))
        stack.receive(claim(guestIP, at: guestMAC, from: rogueMAC), now: t0 + .seconds(1))
        stack.receive(claim(guestIP, at: rogueMAC, from: guestMAC), now: t0 + .seconds(1))
        #expect(stack.arpCache.lookup(guestIP, now: t0 + .seconds(1)) == guestMAC)
        #expect(stack.statistics[.arpNotFromLeaseHolder] == 5)
        // The holder's own updates go through.
        stack.receive(claim(guestIP, at: guestMAC, from: guestMAC, operation: .reply), now: t0 + .seconds(2))
        #expect(stack.statistics[.arpNotFromLeaseHolder] == 5)

        // An address no lease holds is learned from anyone, as before.
        stack.receive(rogue.arpRequest(for: gatewayIP, from: unleased), now: t0 + .seconds(3))
        #expect(stack.arpCache.lookup(unleased, now: t0 + .seconds(3)) == rogueMAC)
        // Once the lease has expired, so is the formerly leased one.
        stack.receive(rogue.arpRequest(for: gatewayIP, from: guestIP), now: t0 + .seconds(100))
        #expect(stack.arpCache.lookup(guestIP, now: t0 + .seconds(100)) == rogueMAC)
        #expect(stack.statistics[.arpNotFromLeaseHolder] == 5)
        #expect(StackCounter.arpNotFromLeaseHolder.description == "arp_not_from_lease_holder")
    }
}
