import NIOCore
import Testing
import VPNKitARP
import VPNKitBase
import VPNKitDHCP
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitUDP

/// A client message in a whole frame from `linkSource` to the gateway's stack (broadcast), as
/// another guest on the link could send it: UDP 68 → 67 from `ip`.
private func frame(_ message: DHCPMessage, from linkSource: MACAddress, ip source: IPv4Address) -> ByteBuffer {
    var buffer = ByteBuffer.withHeadroom(capacity: message.encodedLength)
    message.write(to: &buffer)
    UDPHeader(sourcePort: 68, destinationPort: 67).prepend(to: &buffer, source: .v4(source), destination: .v4(.broadcast))
    IPv4Header(source: source, destination: .broadcast, protocol: .udp).prepend(to: &buffer)
    EthernetHeader(destination: .broadcast, source: linkSource, etherType: .ipv4).prepend(to: &buffer)
    return buffer
}

/// An ARP request for the gateway that names `address` at `mac`, in a frame from `linkSource`.
private func arpRequest(claiming address: IPv4Address, at mac: MACAddress, from linkSource: MACAddress) -> ByteBuffer {
    var buffer = ByteBuffer.withHeadroom(capacity: 0)
    ARPHeader(operation: .request, senderHardwareAddress: mac, senderProtocolAddress: address, targetHardwareAddress: .zero,
              targetProtocolAddress: gateway).prepend(to: &buffer)
    EthernetHeader(destination: .broadcast, source: linkSource, etherType: .arp).prepend(to: &buffer)
    return buffer
}

@Suite("DHCP: a lease is given up, and its address claimed, only by its holder")
struct DHCPTrustTests {
    @Test("RELEASE and DECLINE from another MAC (Ethernet source or chaddr) are ignored and counted; the holder's work")
    func releaseAndDeclineOnlyFromTheHolder() throws {
        let server = TestServer(serverConfiguration { $0.declineHoldTime = .seconds(100) })
        #expect(server.bind(mac(1)) == ip(3))
        let t1 = t0 + .seconds(1)
        // Another guest's frame carrying the holder's chaddr.
        _ = server.server.handle(clientMessage(.release, mac: mac(1), server: gateway, ciaddr: ip(3), parameters: nil), linkSource: mac(2), now: t1)
        _ = server.server.handle(clientMessage(.decline, mac: mac(1), requested: ip(3), server: gateway, parameters: nil), linkSource: mac(2), now: t1)
        #expect(server.counters.refusedNotFromHolder == 2)
        #expect(server.counters.releases == 1 && server.counters.declines == 1)
        #expect(server.leases(now: t1).first { $0.address == ip(3) }?.state == .bound)
        #expect(server.server.holder(of: ip(3), now: t1) == mac(1))

        // Under the holder's client identifier but another chaddr: refused too, even with no link.
        let holderByID = TestServer(serverConfiguration())
        #expect(holderByID.bind(mac(1), clientID: [0xAA, 1]) == ip(3))
        _ = holderByID.handle(clientMessage(.release, mac: mac(2), server: gateway, ciaddr: ip(3), parameters: nil, clientID: [0xAA, 1]), now: t1)
        #expect(holderByID.counters.refusedNotFromHolder == 1)
        #expect(holderByID.leases(now: t1).first?.state == .bound)

        // The holder's own DECLINE withholds the address; its RELEASE (after a new lease) frees it.
        _ = server.server.handle(clientMessage(.decline, mac: mac(1), requested: ip(3), server: gateway, parameters: nil), linkSource: mac(1), now: t1)
        #expect(server.counters.refusedNotFromHolder == 2)
        #expect(server.bind(mac(1), now: t0 + .seconds(2)) == ip(4))
        #expect(server.bind(mac(3), now: t0 + .seconds(3)) == ip(5), ".3 is withheld after the holder declined it")
        _ = server.server.handle(clientMessage(.release, mac: mac(1), server: gateway, ciaddr: ip(4), parameters: nil), linkSource: mac(1), now: t0 + .seconds(4))
        #expect(server.leases(now: t0 + .seconds(4)).first { $0.address == ip(4) }?.state == .free)
        #expect(server.server.holder(of: ip(4), now: t0 + .seconds(4)) == nil)
        #expect(server.counters.refusedNotFromHolder == 2)
    }

    @Test("holder(of:): the MAC of a reservation, else of a bound, unexpired lease; nothing for an offer, an expired lease, or an address reserved twice")
    func holder() throws {
        let server = TestServer(serverConfiguration {
            $0.leaseTime = .seconds(100)
            $0.reservations = [mac(7): ip(70), mac(8): ip(80), mac(9): ip(80)]
        })
        let offer = try #require(server.handle(clientMessage(.discover, mac: mac(1)), now: t0))
        #expect(server.server.holder(of: offer.message.yourAddress, now: t0) == nil)
        #expect(server.bind(mac(1)) == ip(3))
        #expect(server.server.holder(of: ip(3), now: t0 + .seconds(99)) == mac(1))
        #expect(server.server.holder(of: ip(3), now: t0 + .seconds(100)) == nil)
        #expect(server.server.holder(of: ip(4), now: t0) == nil)
        // Reserved: whether or not the client ever asked (vmnet's Go client takes the OFFER only).
        #expect(server.server.holder(of: ip(70), now: t0) == mac(7))
        #expect(server.server.holder(of: ip(80), now: t0) == nil)
        server.server.reserve(ip(5), for: mac(5))
        #expect(server.server.holder(of: ip(5), now: t0) == mac(5))
        server.server.reserve(ip(6), for: mac(5))
        #expect(server.server.holder(of: ip(5), now: t0) == nil && server.server.holder(of: ip(6), now: t0) == mac(5))

        // The reservation wins over a lease another MAC got under the holder's client identifier.
        #expect(server.bind(mac(7), clientID: [0xBB]) == ip(70))
        _ = server.handle(clientMessage(.request, mac: mac(8), requested: ip(70), server: gateway, clientID: [0xBB]), now: t0 + .seconds(1))
        #expect(server.server.holder(of: ip(70), now: t0 + .seconds(1)) == mac(7))
    }

    @Test("through the stack: the service checks the frame's source, and teaches the stack's ARP who holds each address")
    func throughTheStack() throws {
        let world = try DHCPWorld()
        let c = try world.addClient()
        world.start(c)
        world.run(for: .seconds(10))
        let holder = mac(100)
        #expect(world.clientServices[c].lease?.address == ip(3))
        let stack = world.servers[0]
        let service = world.services[0]
        let rogue = MACAddress(rawValue: 0x0250_0000_0BAD)

        // A RELEASE of the holder's lease, chaddr the holder's, from another guest's MAC.
        let release = clientMessage(.release, mac: holder, server: gateway, ciaddr: ip(3), parameters: nil)
        stack.receive(frame(release, from: rogue, ip: ip(3)), now: world.now)
        #expect(service.counters.releases == 1 && service.counters.refusedNotFromHolder == 1)
        #expect(service.leases(now: world.now).first?.state == .bound)

        // ARP naming the leased address at another MAC creates nothing …
        stack.receive(arpRequest(claiming: ip(3), at: rogue, from: rogue), now: world.now)
        #expect(stack.arpCache.lookup(ip(3), now: world.now) != rogue)
        // … the holder's does …
        stack.receive(arpRequest(claiming: ip(3), at: holder, from: holder), now: world.now)
        #expect(stack.arpCache.lookup(ip(3), now: world.now) == holder)
        // … and another MAC's does not change it, as the ARP sender or as the frame's source.
        stack.receive(arpRequest(claiming: ip(3), at: rogue, from: rogue), now: world.now)
        stack.receive(arpRequest(claiming: ip(3), at: holder, from: rogue), now: world.now)
        #expect(stack.arpCache.lookup(ip(3), now: world.now) == holder)
        #expect(stack.statistics[.arpNotFromLeaseHolder] == 3)
        _ = stack.takeOutput()

        // The holder's own RELEASE still frees the lease; then the address is anyone's to claim.
        world.clientServices[c].release(now: world.now)
        world.run(for: .seconds(1))
        #expect(service.leases(now: world.now).first?.state == .free)
        #expect(service.counters.refusedNotFromHolder == 1)
        stack.receive(arpRequest(claiming: ip(3), at: rogue, from: rogue), now: world.now)
        #expect(stack.arpCache.lookup(ip(3), now: world.now) == rogue)
        #expect(stack.statistics[.arpNotFromLeaseHolder] == 3)

        // A closed service stops vouching.
        #expect(stack.leaseHolder != nil)
        service.close()
        #expect(stack.leaseHolder == nil)
    }
}
