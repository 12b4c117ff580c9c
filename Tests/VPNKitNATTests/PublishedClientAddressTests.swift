// Published ports that show the guest the real client (NATConfiguration.preservesClientAddress):
// the guest-side SYN or datagram comes from a non-loopback client's own address and port, the
// guest's answers (through its default route, the gateway) are matched back to it, and every other
// client (loopback, the other family, the guest's own subnet, the flag off) comes from the host
// alias. The host side is not a real socket here: the client's address is handed in, as the host
// listener would report it, so no test traffic leaves the machine.

import NIOConcurrencyHelpers
import NIOCore
import Testing
import VPNKitBase
@testable import VPNKitNAT
import VPNKitRuntime
import VPNKitStack

private let client = IPv4Address(10, 77, 0, 2)

extension NATWorld {
    /// On the loop: a publisher of `port` whose guest has `addresses`, not started (no host socket),
    /// and the target it picks for a host client at `remote` (`host`:`port`).
    func target(_ port: PublishedPort, addresses: GuestAddresses, client host: String, port clientPort: Int) async throws -> PublishedTarget? {
        let gateway = self.gateway
        let remote = try SocketAddress(ipAddress: host, port: clientPort)
        return try await loop.submit { () -> PublishedTarget? in
            let nat = NATWorld.nat(of: gateway)
            return PortPublisher(nat: nat, port: port, id: PublishedPortID(rawValue: 1), requested: port, guestAddresses: { addresses }).target(nat: nat, client: HostEndpoint(remote))
        }.get()
    }

    /// Waits (up to 5 s) for `condition`, evaluated on the loop, to hold.
    func waitOnLoop(_ condition: @escaping @Sendable () -> Bool) async throws -> Bool {
        for _ in 0..<500 {
            if try await loop.submit(condition).get() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}

/// Holds stack sockets until a test ends (a released socket unbinds); touched on the loop only.
private final class Keeper: @unchecked Sendable {
    var objects: [AnyObject] = []
}

extension PublishedTarget {
    /// `address:port` of the client shown, or `alias ADDRESS`.
    var shown: String { client.map { $0.address.description(port: $0.port) } ?? "alias \(alias)" }
}

@Suite("Published ports show the guest the real client (in-memory guest)")
struct PublishedClientAddressTests {
    static let tcp = PublishedPort(transport: .tcp, hostAddress: .v4(.any), hostPort: 8080, guestPort: 80)
    static let dualTCP = PublishedPort(transport: .tcp, hostAddress: .v6(.unspecified), hostPort: 8080, guestPort: 80)

    @Test("a non-loopback client's connection reaches the guest's listener from the client's address and port, and the guest's answers complete the handshake; a loopback client's comes from the host alias")
    func tcpSYNSource() async throws {
        let world = try await NATWorld()
        let (gateway, guest) = (world.gateway, world.guest)
        let accepted = NIOLockedValueBox<[String]>([])
        try await world.loop.submit {
            try guest.value.stack.listenTCP(port: 80) { socket in
                accepted.withLockedValue { $0.append(socket.remoteAddress.description(port: socket.remotePort)) }
            }
        }.get()
        let addresses = GuestAddresses(ipv4: guestIP)
        for (host, port) in [("10.77.0.2", 5555), ("127.0.0.1", 5556)] {
            let target = try #require(try await world.target(Self.tcp, addresses: addresses, client: host, port: port))
            let opened = try await world.loop.submit { () -> (String, UInt16)? in
                let nat = NATWorld.nat(of: gateway)
                let socket = nat.connectPublished(target, guestPort: 80, now: .now())
                gateway.value.flush()
                return socket.map { ($0.localAddress.description, $0.localPort) }
            }.get()
            let (source, sourcePort) = try #require(opened)
            if host == "10.77.0.2" {
                #expect(source == "10.77.0.2" && sourcePort == 5555)
            } else {
                #expect(source == hostAlias.description && sourcePort != 5556, "\(source):\(sourcePort)")
            }
            let expected = "\(source):\(sourcePort)"
            #expect(try await world.waitOnLoop { accepted.withLockedValue { $0.contains(expected) } }, "\(accepted.withLockedValue { $0 })")
        }
        // Both handshakes completed on the daemon's side: the guest's SYN-ACK to 10.77.0.2 (an
        // address the stack does not own, sent to the guest's default router) found its connection.
        let established = try await world.waitOnLoop { gateway.value.stack.debugTCP().components(separatedBy: "ESTABLISHED").count - 1 == 2 }
        let connections = try await world.loop.submit { gateway.value.stack.debugTCP() }.get()
        #expect(established, "\(connections)")
        #expect(try await world.nat { $0.counters.publishedClientAddresses } == 1)
        try await world.shutdown()
    }

    @Test("who is shown: IPv4-mapped clients of a dual-stack listener as IPv4; loopback (either spelling), the guest's own subnet, a host alias, the other family than the guest's and link-local clients as the alias")
    func whoIsShown() async throws {
        let world = try await NATWorld(ipv6: true)
        let v4Only = GuestAddresses(ipv4: guestIP)
        let both = GuestAddresses(ipv4: guestIP, ipv6: guestIP6)
        let cases: [(PublishedPort, GuestAddresses, String, String)] = [
            (Self.tcp, v4Only, "10.77.0.2", "10.77.0.2:4000"),
            (Self.dualTCP, both, "::ffff:10.77.0.2", "10.77.0.2:4000"),
            (Self.dualTCP, both, "2001:db8::7", "[2001:db8::7]:4000"),
            (Self.tcp, v4Only, "127.0.0.1", "alias 192.168.65.2"),
            (Self.tcp, v4Only, "127.3.4.5", "alias 192.168.65.2"),
            (Self.dualTCP, both, "::ffff:127.0.0.1", "alias fd00:65::2"),
            (Self.dualTCP, both, "::1", "alias fd00:65::2"),
            (Self.tcp, v4Only, "192.168.65.9", "alias 192.168.65.2"),
            (Self.tcp, v4Only, "192.168.65.2", "alias 192.168.65.2"),
            (Self.dualTCP, v4Only, "2001:db8::7", "alias 192.168.65.2"),
            (Self.dualTCP, both, "fe80::7", "alias fd00:65::2"),
            (Self.dualTCP, both, "fd00:65::9", "alias fd00:65::2"),
        ]
        for (port, addresses, host, shown) in cases {
            let target = try await world.target(port, addresses: addresses, client: host, port: 4000)
            #expect(target?.shown == shown, "\(host) on \(port)")
        }
        try await world.shutdown()
        // The flag off: every client comes from the alias.
        let off = try await NATWorld { $0.preservesClientAddress = false }
        #expect(try await off.target(Self.tcp, addresses: v4Only, client: "10.77.0.2", port: 4000)?.shown == "alias 192.168.65.2")
        try await off.shutdown()
    }

    @Test("the stack speaks for an outside peer only toward a guest on its link: not for its own, loopback, on-link or multicast addresses, and not on a four-tuple in use")
    func stackRefusals() async throws {
        let world = try await NATWorld()
        let gateway = world.gateway
        let outcomes = try await world.loop.submit { () -> [String] in
            let stack = gateway.value.stack
            func attempt(_ peer: IPv4Address, to remote: IPv4Address = guestIP, port: UInt16 = 7000) -> String {
                do {
                    let socket = try stack.connectTCP(to: .v4(remote), port: 80, onBehalfOf: .v4(peer), peerPort: port, now: .now())
                    return "ok \(socket.localAddress)"
                } catch { return "\(error)" }
            }
            return [
                attempt(client), attempt(client),
                attempt(gatewayIP), attempt(hostAlias), attempt(IPv4Address(127, 0, 0, 1)), attempt(IPv4Address(192, 168, 65, 9)),
                attempt(IPv4Address(224, 0, 0, 1)), attempt(IPv4Address(255, 255, 255, 255)), attempt(client, to: IPv4Address(10, 1, 1, 1)),
                attempt(client, port: 0),
            ]
        }.get()
        #expect(outcomes[0] == "ok 10.77.0.2")
        #expect(outcomes[1] == StackError.addressInUse(.v4(client), 7000).description)
        for (index, peer) in ["192.168.65.1", "192.168.65.2", "127.0.0.1", "192.168.65.9", "224.0.0.1", "255.255.255.255", "10.77.0.2", "10.77.0.2"].enumerated() {
            #expect(outcomes[index + 2] == StackError.addressNotOwned(IPAddress(peer)!).description, "attempt \(index + 2)")
        }
        try await world.shutdown()
    }

    @Test("UDP: a non-loopback client's datagrams reach the guest from its address and port; and the guest's answer from the published port comes back to that client's socket")
    func udpSource() async throws {
        let world = try await NATWorld()
        let (gateway, guest) = (world.gateway, world.guest)
        let seen = NIOLockedValueBox<[String]>([])
        let delivered = NIOLockedValueBox<[String]>([])
        let port = PublishedPort(transport: .udp, hostAddress: .v4(.any), hostPort: 5353, guestPort: 53)
        let keeper = Keeper()
        let target = try #require(try await world.target(port, addresses: GuestAddresses(ipv4: guestIP), client: "10.77.0.2", port: 6000))
        try await world.loop.submit {
            let stack = guest.value.stack
            // The guest's server answers every datagram from its port 53.
            let server = try stack.bindUDP(port: 53) { message in
                seen.withLockedValue { $0.append("\(message.source.description(port: message.sourcePort)) \(String(buffer: message.payload))") }
                try? stack.sendUDP(message.payload, from: .v4(guestIP), port: 53, to: message.source, port: message.sourcePort, now: .now())
            }
            keeper.objects.append(server)
            let nat = NATWorld.nat(of: gateway)
            // Kept, as the NAT keeps its publishers: the client socket's filter asks it for the guest's address.
            let publisher = PortPublisher(nat: nat, port: port, id: PublishedPortID(rawValue: 1), requested: port, guestAddresses: { GuestAddresses(ipv4: guestIP) })
            keeper.objects.append(publisher)
            let socket = try #require(publisher.bindUDPSocket(for: target, nat: nat) { message in
                delivered.withLockedValue { $0.append("\(message.source.description(port: message.sourcePort)) \(String(buffer: message.payload))") }
            })
            #expect(socket.address == .v4(client) && socket.port == 6000)
            try socket.send(ByteBuffer(string: "query"), to: .v4(guestIP), port: 53, now: .now())
            gateway.value.flush()
            keeper.objects.append(socket)
        }.get()
        #expect(try await world.waitOnLoop { seen.withLockedValue { $0 == ["10.77.0.2:6000 query"] } }, "\(seen.withLockedValue { $0 })")
        #expect(try await world.waitOnLoop { delivered.withLockedValue { $0 == ["192.168.65.3:53 query"] } }, "\(delivered.withLockedValue { $0 })")
        #expect(try await world.nat { $0.counters.publishedClientAddresses } == 1)
        try await world.shutdown()
    }
}
