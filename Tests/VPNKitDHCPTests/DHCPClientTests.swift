import NIOCore
import Testing
import VPNKitARP
import VPNKitBase
import VPNKitDHCP
import VPNKitEthernet
import VPNKitIPv4
import VPNKitStack
import VPNKitTransport
import VPNKitUDP
import VPNKitServices

/// Servers (one or two stacks with a DHCP service, behind one end of the link, like a hub) and
/// client stacks on the other end, under a virtual clock.
final class DHCPWorld {
    let link: InMemoryLink
    var servers: [NetworkStack] = []
    var services: [DHCPService] = []
    var clients: [NetworkStack] = []
    var clientServices: [DHCPClientService] = []
    /// Other hosts on the clients' side of the link (not DHCP clients).
    var bystanders: [NetworkStack] = []
    var events: [[DHCPClientEvent]] = []
    private(set) var now = t0
    /// Frames the clients' side sent, for inspection.
    var fromClients: [ByteBuffer] = []

    init(serverFaults: FaultConfiguration = FaultConfiguration(), clientFaults: FaultConfiguration = FaultConfiguration(),
         servers configurations: [DHCPServerConfiguration] = [serverConfiguration()]) throws {
        link = InMemoryLink(aToB: serverFaults, bToA: clientFaults, start: t0)
        for (i, c) in configurations.enumerated() {
            var sc = StackConfiguration(macAddress: MACAddress(rawValue: 0x5A94_EFE4_0C00 + UInt64(i)), subnet: c.subnet, gateway: c.serverAddress)
            sc.gratuitousARPOnStart = false
            let stack = NetworkStack(configuration: sc)
            servers.append(stack)
            services.append(try DHCPService(stack: stack, configuration: c))
        }
        link.a.onFrame = { [unowned self] frame in for s in self.servers { s.receive(frame, now: self.now) } }
        link.b.onFrame = { [unowned self] frame in for c in self.clients + self.bystanders { c.receive(frame, now: self.now) } }
    }

    @discardableResult
    func addClient(_ configure: (inout DHCPClientConfiguration) -> Void = { _ in }) throws -> Int {
        let index = clients.count
        var c = DHCPClientConfiguration(hardwareAddress: mac(100 + index))
        configure(&c)
        let stack = NetworkStack(configuration: .unconfigured(macAddress: c.hardwareAddress))
        let service = try DHCPClientService(stack: stack, configuration: c)
        events.append([])
        service.onEvent = { [unowned self] e in self.events[index].append(e) }
        clients.append(stack)
        clientServices.append(service)
        return index
    }

    func flush() {
        for s in servers { for f in s.takeOutput() { link.a.send(f) } }
        // The clients' side is a hub: what one host sends, the others there see too.
        let side = clients + bystanders
        for c in side {
            for f in c.takeOutput() {
                fromClients.append(f)
                link.b.send(f)
                for other in side where other !== c { other.receive(f, now: now) }
            }
        }
    }

    func run(for duration: TimeAmount) {
        let deadline = now + duration
        while true {
            flush()
            link.deliver(until: now)
            let stacks = servers + clients + bystanders
            for stack in stacks where (stack.nextDeadline.map { $0 <= now } ?? false) { stack.poll(now: now) }
            flush()
            if stacks.contains(where: \.hasOutput) { continue }
            if let next = link.nextDelivery, next <= now { continue }
            let candidates = ([link.nextDelivery] + stacks.map(\.nextDeadline)).compactMap { $0 }.filter { $0 > now }
            guard let next = candidates.min(), next <= deadline else {
                now = deadline
                link.deliver(until: now)
                return
            }
            now = next
        }
    }

    func start(_ index: Int) { clientServices[index].start(now: now) }

    /// DHCP messages the clients sent, by type.
    func sent(_ type: DHCPMessageType) -> [(time: Int, message: DHCPMessage)] {
        fromClients.compactMap { frame in
            guard let e = try? EthernetFrame(frame), e.etherType == .ipv4, let ip = try? IPv4Packet(e.payload), ip.protocol == .udp,
                let udp = try? UDPDatagram(ip.payload), udp.destinationPort == 67,
                let m = try? DHCPMessage(parsing: DHCPPacket(udp.payload)), m.options.messageType == type
            else { return nil }
            return (0, m)
        }
    }
}


@Suite("DHCP client against our server")
struct DHCPClientTests {
    @Test("INIT → SELECTING → REQUESTING → probe → BOUND: the stack is configured and reachable")
    func obtains() async throws {
        let world = try DHCPWorld()
        let c = try world.addClient { $0.hostName = "sim" }
        world.start(c)
        world.run(for: .seconds(10))
        let lease = try #require(world.clientServices[c].lease)
        #expect(world.clientServices[c].state == .bound)
        #expect(lease.address == ip(3))
        #expect(lease.routers == [gateway] && lease.dnsServers == [gateway])
        #expect(lease.domainName == "guest.test" && lease.searchDomains == ["guest.test", "b.test"])
        #expect(lease.mtu == 9000)
        #expect(lease.leaseTime == .seconds(7200) && lease.renewalTime == .seconds(3600))
        #expect(world.clients[c].owns(ip(3)))
        #expect(world.clients[c].configuration.subnet == subnet)
        guard case .bound(let bound)? = world.events[c].first else { Issue.record("no bound event"); return }
        #expect(bound.address == ip(3))
        // The same change reaches Swift concurrency through `events`.
        var events = world.clientServices[c].events.makeAsyncIterator()
        guard case .bound(let streamed)? = await events.next() else { Issue.record("no bound event on the stream"); return }
        #expect(streamed == bound)
        // Three probes went out before the address was used (RFC 5227).
        #expect(world.clients[c].statistics[.arpRequestsSent] >= 3)
        #expect(world.services[0].leases(now: world.now).first?.hostName == "sim")
        // The configured client answers ping from the server side.
        var received: [UDPMessage] = []
        let echo = try world.clients[c].bindUDP(port: 7) { received.append($0) }
        try world.servers[0].sendUDP(ByteBuffer(string: "hi"), from: .v4(gateway), port: 1, to: .v4(ip(3)), port: 7, now: world.now)
        world.run(for: .seconds(1))
        #expect(received.count == 1)
        echo.close()
    }

    @Test("loss: retransmissions with backoff get the lease anyway", arguments: [UInt64(1), 2, 3])
    func loss(seed: UInt64) throws {
        let world = try DHCPWorld(serverFaults: FaultConfiguration(drop: 0.4, seed: seed), clientFaults: FaultConfiguration(drop: 0.4, seed: seed + 10))
        let c = try world.addClient()
        world.start(c)
        world.run(for: .seconds(300))
        #expect(world.clientServices[c].state == .bound, "seed \(seed)")
        #expect(world.clientServices[c].client.transmissions >= 2)
    }

    @Test("retransmission timeouts double from 4 s to 64 s, ±1 s, while no server answers")
    func backoff() throws {
        let world = try DHCPWorld(serverFaults: FaultConfiguration(drop: 1))
        let c = try world.addClient()
        var times: [NIODeadline] = []
        world.start(c)
        times.append(world.now)
        var sent = world.clientServices[c].client.transmissions
        while times.count < 8 {
            world.run(for: .milliseconds(100))
            if world.clientServices[c].client.transmissions > sent {
                sent = world.clientServices[c].client.transmissions
                times.append(world.now)
            }
        }
        let gaps = zip(times, times.dropFirst()).map { Double(($1 - $0).nanoseconds) / 1e9 }
        for (gap, expected) in zip(gaps, [4.0, 8, 16, 32, 64, 64, 64]) {
            #expect(abs(gap - expected) <= 1.1, "gaps \(gaps)")
        }
        #expect(world.clientServices[c].state == .selecting)
    }

    @Test("two servers: the client takes one offer, the other server frees its own")
    func twoServers() throws {
        var second = serverConfiguration()
        second.serverAddress = ip(2)
        second.excluded = [ip(2), gateway]
        second.poolStart = ip(100)
        let world = try DHCPWorld(servers: [serverConfiguration(), second])
        let c = try world.addClient()
        world.start(c)
        world.run(for: .seconds(10))
        let lease = try #require(world.clientServices[c].lease)
        let chosen = lease.serverIdentifier == gateway ? 0 : 1
        let other = 1 - chosen
        #expect(world.services[chosen].leases(now: world.now).first?.state == .bound)
        #expect(world.services[other].leases(now: world.now).allSatisfy { $0.state == .free })
        #expect(world.services[other].counters.ignored == 1)
    }

    @Test("renewal at T1 by unicast; rebinding at T2 by broadcast when the server is gone; loss at expiry")
    func renewRebind() throws {
        let world = try DHCPWorld(servers: [serverConfiguration { $0.leaseTime = .seconds(100) }])
        let c = try world.addClient()
        world.start(c)
        world.run(for: .seconds(10))
        let first = try #require(world.clientServices[c].lease)
        // Renewal at T1 = 50 s after the ACK.
        world.run(for: first.renewAt - world.now + .seconds(1))
        guard case .renewed(let renewed)? = world.events[c].last else { Issue.record("not renewed: \(world.events[c])"); return }
        #expect(renewed.acquired >= first.renewAt)
        let renewRequests = world.sent(.request).map(\.message).filter { $0.clientAddress == ip(3) }
        #expect(renewRequests.count == 1)
        // The server disappears: requests go unanswered; at T2 the client broadcasts; at expiry it
        // gives up the address and starts over.
        world.services[0].close()
        world.run(for: renewed.rebindAt - world.now + .seconds(1))
        #expect(world.clientServices[c].state == .rebinding)
        world.run(for: renewed.expiresAt - world.now + .seconds(1))
        guard case .lost(let lost, _)? = world.events[c].last else { Issue.record("no loss: \(world.events[c])"); return }
        #expect(lost == ip(3))
        #expect(!world.clients[c].owns(ip(3)))
        #expect(world.clientServices[c].state == .selecting)
    }

    @Test("INIT-REBOOT with a wrong address is NAKed; the client starts over and gets a good one")
    func nak() throws {
        let world = try DHCPWorld()
        let c = try world.addClient { $0.previousAddress = IPv4Address(10, 9, 9, 9) }
        world.start(c)
        world.run(for: .seconds(15))
        #expect(world.clientServices[c].client.naks == 1)
        #expect(world.clientServices[c].lease?.address == ip(3))
        // And a right previous address is confirmed without DISCOVER.
        let again = try world.addClient { $0.previousAddress = ip(50) }
        world.start(again)
        world.run(for: .seconds(5))
        #expect(world.clientServices[again].lease?.address == ip(50))
    }

    @Test("an address in use by another host is detected by the ARP probe and DECLINEd; the next offer is taken")
    func decline() throws {
        let world = try DHCPWorld()
        // A squatter on .3, unknown to the server, answering ARP.
        var squatterConfiguration = StackConfiguration(macAddress: MACAddress(rawValue: 0x0250_0000_0EEE), subnet: subnet, gateway: ip(3))
        squatterConfiguration.gratuitousARPOnStart = false
        let squatter = NetworkStack(configuration: squatterConfiguration)
        world.bystanders.append(squatter)
        let c = try world.addClient()
        world.start(c)
        world.run(for: .seconds(30))
        #expect(world.clientServices[c].client.declines == 1)
        #expect(world.services[0].counters.declines == 1)
        #expect(world.clientServices[c].lease?.address == ip(4))
    }

    @Test("pool exhaustion: the second client gets nothing and keeps asking, with backoff")
    func exhaustion() throws {
        let world = try DHCPWorld(servers: [serverConfiguration { $0.poolStart = ip(3); $0.poolEnd = ip(3) }])
        let a = try world.addClient()
        let b = try world.addClient()
        world.start(a)
        world.run(for: .seconds(10))
        world.start(b)
        world.run(for: .seconds(120))
        #expect(world.clientServices[a].lease?.address == ip(3))
        #expect(world.clientServices[b].lease == nil)
        #expect(world.clientServices[b].state == .selecting)
        #expect(world.services[0].counters.poolExhausted >= 4)
        #expect(world.clientServices[b].client.transmissions <= 6)
    }

    @Test("release gives the address back to the server")
    func release() throws {
        let world = try DHCPWorld()
        let c = try world.addClient()
        world.start(c)
        world.run(for: .seconds(10))
        world.clientServices[c].release(now: world.now)
        world.run(for: .seconds(1))
        #expect(world.services[0].leases(now: world.now).first?.state == .free)
        #expect(!world.clients[c].owns(ip(3)))
        #expect(world.clientServices[c].state == .stopped)
    }
}

@Suite("DHCP hardening")
struct DHCPHardeningTests {
    @Test("many instances of one option concatenate in linear time and the client id is capped")
    func manyInstances() {
        var options = DHCPOptions()
        options.instances = Array(repeating: DHCPOption(code: .clientIdentifier, data: [7]), count: 20_000)
        #expect(options.clientIdentifier?.count == 20_000)
        var message = clientMessage(.discover, mac: mac(1), parameters: nil)
        message.options.instances += Array(repeating: DHCPOption(code: .clientIdentifier, data: [7]), count: 300)
        let server = TestServer(serverConfiguration())
        _ = server.handle(message, now: t0)
        #expect(server.leases(now: t0).first?.clientIdentifier.count == 255)
    }

    @Test("a bound client ignores a NAK; an ACK for another address than the offer is ignored")
    func clientDiscipline() {
        var client = DHCPClient(configuration: DHCPClientConfiguration(hardwareAddress: mac(1)))
        var actions = client.start(now: t0)
        guard case .send(let discover, _, _)? = actions.first else { Issue.record("no discover"); return }
        var offer = DHCPMessage(op: DHCPMessage.bootReply, transactionID: discover.transactionID, clientHardwareAddress: mac(1))
        offer.yourAddress = ip(3)
        offer.options.messageType = .offer
        offer.options.serverIdentifier = gateway
        actions = client.receive(offer, now: t0)
        #expect(client.state == .requesting)
        var wrong = offer
        wrong.yourAddress = ip(9)
        wrong.options.messageType = .ack
        #expect(client.receive(wrong, now: t0).isEmpty)
        var ack = offer
        ack.options.messageType = .ack
        _ = client.receive(ack, now: t0)
        #expect(client.state == .probing)
        // Probing completes after the probes and the wait.
        var now = t0
        while client.state == .probing, let next = client.nextDeadline { now = next; _ = client.poll(now: now) }
        #expect(client.state == .bound)
        var nak = offer
        nak.options.messageType = .nak
        #expect(client.receive(nak, now: now).isEmpty)
        #expect(client.state == .bound)
        // Implausible addresses are never taken.
        var client2 = DHCPClient(configuration: DHCPClientConfiguration(hardwareAddress: mac(2)))
        guard case .send(let d2, _, _)? = client2.start(now: t0).first else { return }
        for bad in [IPv4Address.broadcast, IPv4Address(127, 0, 0, 1), IPv4Address(224, 0, 0, 1), IPv4Address(0, 1, 2, 3)] {
            var o = DHCPMessage(op: DHCPMessage.bootReply, transactionID: d2.transactionID, clientHardwareAddress: mac(2))
            o.yourAddress = bad
            o.options.messageType = .offer
            o.options.serverIdentifier = gateway
            #expect(client2.receive(o, now: t0).isEmpty, "\(bad)")
        }
        #expect(client2.state == .selecting)
    }
}
