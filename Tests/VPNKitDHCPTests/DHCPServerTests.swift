import NIOCore
import Testing
import VPNKitBase
import VPNKitDHCP
import VPNKitIPv4

let subnet = IPv4Subnet("192.168.65.0/24")!
let gateway = IPv4Address(192, 168, 65, 1)
let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

func mac(_ n: Int) -> MACAddress { MACAddress(rawValue: 0x0250_0000_0000 + UInt64(n)) }
func ip(_ last: UInt8) -> IPv4Address { IPv4Address(192, 168, 65, last) }

func serverConfiguration(_ change: (inout DHCPServerConfiguration) -> Void = { _ in }) -> DHCPServerConfiguration {
    var c = DHCPServerConfiguration(serverAddress: gateway, subnet: subnet, excluded: [ip(2)])
    c.domainName = "guest.test"
    c.searchDomains = ["b.test"]
    c.mtu = 9000
    change(&c)
    return c
}

/// A client message as udhcpc builds it.
func clientMessage(
    _ type: DHCPMessageType, mac m: MACAddress, xid: UInt32 = 1, requested: IPv4Address? = nil, server: IPv4Address? = nil,
    ciaddr: IPv4Address = .any, broadcast: Bool = false, parameters: [DHCPOptionCode]? = [.subnetMask, .router, .domainNameServer, .hostName, .domainName, .broadcastAddress, .domainSearch, .interfaceMTU],
    clientID: [UInt8]? = nil, hostName: String? = nil, maximumSize: UInt16? = nil
) -> DHCPMessage {
    var message = DHCPMessage(op: DHCPMessage.bootRequest, transactionID: xid, clientHardwareAddress: m)
    message.clientAddress = ciaddr
    message.broadcastFlag = broadcast
    message.options.messageType = type
    if let requested { message.options.requestedIPAddress = requested }
    if let server { message.options.serverIdentifier = server }
    if let parameters { message.options.parameterRequestList = parameters }
    if let clientID { message.options.clientIdentifier = clientID }
    if let hostName { message.options.hostName = hostName }
    if let maximumSize { message.options.maximumMessageSize = maximumSize }
    message.padToMinimumSize()
    // Through the wire format, as a real message would arrive.
    var bytes = ByteBuffer()
    message.write(to: &bytes)
    return try! DHCPMessage(parsing: DHCPPacket(bytes))
}

/// The server behind a reference, so test expectations can call it.
final class TestServer {
    var server: DHCPServer
    init(_ configuration: DHCPServerConfiguration) { server = DHCPServer(configuration: configuration) }
    func handle(_ message: DHCPMessage, now: NIODeadline) -> DHCPServerReply? { server.handle(message, now: now) }
    func leases(now: NIODeadline) -> [DHCPLease] { server.leases(now: now) }
    var counters: DHCPServerCounters { server.counters }

    /// DISCOVER then REQUEST; returns the ACKed address.
    func bind(_ m: MACAddress, now: NIODeadline = t0, clientID: [UInt8]? = nil) -> IPv4Address? {
        guard let offer = handle(clientMessage(.discover, mac: m, clientID: clientID), now: now) else { return nil }
        let address = offer.message.yourAddress
        guard let ack = handle(clientMessage(.request, mac: m, requested: address, server: gateway, clientID: clientID), now: now),
            ack.message.options.messageType == .ack
        else { return nil }
        return ack.message.yourAddress
    }
}

@Suite("DHCP server")
struct DHCPServerTests {
    @Test("DISCOVER → OFFER of .3 with every configured option, unicast to the new address at the client's MAC")
    func offer() throws {
        let server = TestServer(serverConfiguration())
        let reply = try #require(server.handle(clientMessage(.discover, mac: mac(1), hostName: "vm1"), now: t0))
        let o = reply.message.options
        #expect(reply.message.op == DHCPMessage.bootReply)
        #expect(reply.message.yourAddress == ip(3))
        #expect(reply.message.transactionID == 1)
        #expect(o.messageType == .offer)
        #expect(o.serverIdentifier == gateway)
        #expect(o.subnetMask == IPv4Address(255, 255, 255, 0))
        #expect(o.routers == [gateway])
        #expect(o.domainNameServers == [gateway])
        #expect(o.domainName == "guest.test")
        #expect(try o.domainSearch() == ["guest.test", "b.test"])
        #expect(o.interfaceMTU == 9000)
        #expect(o.broadcastAddress == IPv4Address(192, 168, 65, 255))
        #expect(o.leaseTime == 7200 && o.renewalTime == 3600 && o.rebindingTime == 6300)
        #expect(o.hostName == "vm1")
        #expect(reply.destination == ip(3) && reply.destinationPort == 68 && reply.linkDestination == mac(1))
        #expect(reply.message.encodedLength >= 300)
    }

    @Test("the broadcast flag makes replies IP broadcast, sent on the link to the client's MAC only; a REQUEST in SELECTING is ACKed and the lease listed")
    func selecting() throws {
        let server = TestServer(serverConfiguration())
        let offer = try #require(server.handle(clientMessage(.discover, mac: mac(1), broadcast: true), now: t0))
        // Link-layer unicast: other guests on a shared switch never see this client's offer.
        #expect(offer.destination == .broadcast && offer.linkDestination == mac(1))
        let ack = try #require(server.handle(clientMessage(.request, mac: mac(1), requested: ip(3), server: gateway, broadcast: true), now: t0))
        #expect(ack.message.options.messageType == .ack)
        #expect(ack.message.yourAddress == ip(3))
        let leases = server.leases(now: t0)
        #expect(leases.count == 1)
        #expect(leases[0].address == ip(3) && leases[0].state == .bound && leases[0].hardwareAddress == mac(1))
        #expect(leases[0].expires == t0 + .seconds(7200))
    }

    @Test("a client keeps its address: again after DISCOVER, after INIT-REBOOT, on renewal and rebinding")
    func keepsAddress() throws {
        let server = TestServer(serverConfiguration())
        #expect(server.bind(mac(1)) == ip(3))
        #expect(server.bind(mac(2)) == ip(4))
        // A restarted client (INIT-REBOOT: requested address, no server id, no ciaddr).
        let reboot = try #require(server.handle(clientMessage(.request, mac: mac(1), requested: ip(3)), now: t0 + .seconds(10)))
        #expect(reboot.message.options.messageType == .ack && reboot.message.yourAddress == ip(3))
        // Renewing: unicast, ciaddr set; the reply goes to ciaddr.
        let renew = try #require(server.handle(clientMessage(.request, mac: mac(1), ciaddr: ip(3)), now: t0 + .seconds(3600)))
        #expect(renew.message.options.messageType == .ack)
        #expect(renew.destination == ip(3) && renew.linkDestination == nil)
        #expect(server.leases(now: t0).first { $0.address == ip(3) }?.expires == t0 + .seconds(3600 + 7200))
        // A DISCOVER from the same client gets the same address.
        #expect(server.handle(clientMessage(.discover, mac: mac(1)), now: t0 + .seconds(4000))?.message.yourAddress == ip(3))
        // After the lease expired and the client comes back, still the same address.
        #expect(server.bind(mac(1), now: t0 + .seconds(100_000)) == ip(3))
    }

    @Test("leases are keyed by client identifier when one is sent")
    func clientIdentifier() {
        let server = TestServer(serverConfiguration())
        #expect(server.bind(mac(1), clientID: [0xFF, 1, 2, 3]) == ip(3))
        // Same identifier, different MAC (a VM whose NIC changed): same address.
        #expect(server.bind(mac(9), clientID: [0xFF, 1, 2, 3]) == ip(3))
        #expect(server.bind(mac(1), clientID: [0xFF, 4]) == ip(4))
    }

    @Test("NAK for an address that is not the client's; silence for a REQUEST to another server")
    func nakAndOtherServer() throws {
        let server = TestServer(serverConfiguration())
        #expect(server.bind(mac(1)) == ip(3))
        let stolen = try #require(server.handle(clientMessage(.request, mac: mac(2), requested: ip(3)), now: t0))
        #expect(stolen.message.options.messageType == .nak)
        #expect(stolen.destination == .broadcast && stolen.linkDestination == mac(2))
        #expect(stolen.message.yourAddress == .any)
        let foreign = try #require(server.handle(clientMessage(.request, mac: mac(3), requested: IPv4Address(10, 0, 0, 5)), now: t0))
        #expect(foreign.message.options.messageType == .nak)
        // Chose another server: our offer is withdrawn.
        let offer = try #require(server.handle(clientMessage(.discover, mac: mac(4)), now: t0))
        #expect(server.handle(clientMessage(.request, mac: mac(4), requested: offer.message.yourAddress, server: IPv4Address(192, 168, 65, 250)), now: t0) == nil)
        #expect(server.counters.ignored == 1)
        #expect(server.leases(now: t0).first { $0.address == offer.message.yourAddress }?.state == .free)
        #expect(server.counters.naks == 2)
    }

    @Test("DECLINE withholds the address for the hold time; the client is offered another")
    func decline() throws {
        let server = TestServer(serverConfiguration { $0.declineHoldTime = .seconds(100) })
        #expect(server.bind(mac(1)) == ip(3))
        _ = server.handle(clientMessage(.decline, mac: mac(1), requested: ip(3), server: gateway, parameters: nil), now: t0 + .seconds(1))
        #expect(server.counters.declines == 1)
        #expect(server.bind(mac(1), now: t0 + .seconds(2)) == ip(4))
        #expect(server.bind(mac(2), now: t0 + .seconds(3)) == ip(5))
        // After the hold time the address is usable again.
        #expect(server.bind(mac(3), now: t0 + .seconds(200)) == ip(3))
    }

    @Test("RELEASE frees the address: the same client gets it back first, others once it is needed")
    func release() throws {
        let server = TestServer(serverConfiguration())
        #expect(server.bind(mac(1)) == ip(3))
        _ = server.handle(clientMessage(.release, mac: mac(1), server: gateway, ciaddr: ip(3), parameters: nil), now: t0 + .seconds(1))
        #expect(server.leases(now: t0 + .seconds(1)).first?.state == .free)
        #expect(server.bind(mac(2), now: t0 + .seconds(2)) == ip(4))  // never-used addresses first
        #expect(server.bind(mac(1), now: t0 + .seconds(3)) == ip(3))
    }

    @Test("INFORM: configuration without an address or lease, to ciaddr")
    func inform() throws {
        let server = TestServer(serverConfiguration())
        let reply = try #require(server.handle(clientMessage(.inform, mac: mac(7), ciaddr: ip(77)), now: t0))
        #expect(reply.message.options.messageType == .ack)
        #expect(reply.message.yourAddress == .any)
        #expect(reply.message.options.leaseTime == nil)
        #expect(reply.message.options.domainNameServers == [gateway])
        #expect(reply.destination == ip(77))
    }

    @Test("the pool is the bound: a full pool offers nothing; a DISCOVER flood cannot push out bound leases")
    func exhaustion() {
        let server = TestServer(serverConfiguration {
            $0.poolStart = ip(3)
            $0.poolEnd = ip(5)
        })
        #expect(server.bind(mac(1)) == ip(3))
        #expect(server.bind(mac(2)) == ip(4))
        var offered = 0
        for n in 100..<1100 where server.handle(clientMessage(.discover, mac: mac(n)), now: t0) != nil { offered += 1 }
        #expect(offered == 1)  // only .5 was free
        #expect(server.counters.poolExhausted == 999)
        let bound = server.leases(now: t0).filter { $0.state == .bound }
        #expect(bound.map(\.address) == [ip(3), ip(4)])
        #expect(server.leases(now: t0).count == 3)
        // The flood's offer expires and the address serves a real client later.
        #expect(server.bind(mac(3), now: t0 + .seconds(61)) == ip(5))
    }

    @Test("reservations: a reserved MAC gets its address, nobody else ever does")
    func reservations() {
        let server = TestServer(serverConfiguration { $0.reservations = [mac(9): ip(50)] })
        #expect(server.bind(mac(9)) == ip(50))
        #expect(server.handle(clientMessage(.request, mac: mac(1), requested: ip(50)), now: t0)?.message.options.messageType == .nak)
        #expect(server.handle(clientMessage(.discover, mac: mac(1), requested: ip(50)), now: t0)?.message.yourAddress == ip(3))
    }

    @Test("options follow the parameter request list; a bare DISCOVER (vmnet's Go client) gets everything")
    func parameterList() throws {
        let server = TestServer(serverConfiguration())
        let lean = try #require(server.handle(clientMessage(.discover, mac: mac(1), parameters: [.subnetMask, .router]), now: t0))
        #expect(lean.message.options.domainNameServers == nil)
        #expect(lean.message.options.interfaceMTU == nil)
        #expect(lean.message.options.routers == [gateway])
        let bare = try #require(server.handle(clientMessage(.discover, mac: mac(2), parameters: nil), now: t0))
        #expect(bare.message.options.interfaceMTU == 9000)
        #expect(bare.message.options.domainNameServers == [gateway])
        // Requested order is kept.
        let ordered = try #require(server.handle(clientMessage(.discover, mac: mac(3), parameters: [.interfaceMTU, .domainNameServer]), now: t0))
        let codes = ordered.message.options.codes
        #expect(codes.firstIndex(of: .interfaceMTU)! < codes.firstIndex(of: .domainNameServer)!)
    }

    @Test("long options split (RFC 3396) and the client's maximum message size is respected")
    func sizes() throws {
        let domains = (0..<30).map { "zone\($0).example.test" }
        let server = TestServer(serverConfiguration { $0.searchDomains = domains })
        let full = try #require(server.handle(clientMessage(.discover, mac: mac(1), maximumSize: 1500), now: t0))
        #expect(full.message.options.instances.filter { $0.code == .domainSearch }.count >= 2)
        #expect(try full.message.options.domainSearch() == ["guest.test"] + domains)
        var bytes = ByteBuffer()
        full.message.write(to: &bytes)
        #expect(try DHCPMessage(parsing: DHCPPacket(bytes)) == full.message)
        let small = try #require(server.handle(clientMessage(.discover, mac: mac(2)), now: t0))
        #expect(small.message.encodedLength <= 576 - 28)
        #expect(server.counters.optionsTrimmed > 0)
        #expect(small.message.options.subnetMask != nil && small.message.options.leaseTime != nil)
    }

    @Test("malformed messages are counted and unanswered")
    func malformed() {
        let server = TestServer(serverConfiguration())
        var reply = clientMessage(.discover, mac: mac(1))
        reply.op = DHCPMessage.bootReply
        #expect(server.handle(reply, now: t0) == nil)
        var untyped = clientMessage(.discover, mac: mac(1))
        untyped.options.messageType = nil
        #expect(server.handle(untyped, now: t0) == nil)
        var offer = clientMessage(.discover, mac: mac(1))
        offer.options.messageType = .offer
        #expect(server.handle(offer, now: t0) == nil)
        #expect(server.counters.malformed == 3)
    }
}
