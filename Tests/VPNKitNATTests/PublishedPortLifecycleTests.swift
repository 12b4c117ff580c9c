import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitNAT
import VPNKitRuntime
import VPNKitTestSupport

extension NATWorld {
    /// Publishes `port` to the guest's IPv4 address on the daemon's side; answers its id.
    func publishWithID(_ port: PublishedPort) async throws -> PublishedPortID {
        let gateway = self.gateway
        return try await loop.flatSubmit {
            Self.nat(of: gateway).publishWithID(port) { GuestAddresses(ipv4: guestIP) }
        }.get()
    }

    /// Unpublishes `id` on the daemon's side, answering the typed error if any.
    func unpublish(_ id: PublishedPortID) async throws -> PublishedPortError? {
        try await nat { nat in
            do throws(PublishedPortError) {
                try nat.unpublish(id)
                return nil
            } catch {
                return error
            }
        }
    }
}

/// Whether a TCP connect to `host`:`port` succeeds (false: refused).
func hostConnects(_ host: String, _ port: UInt16) async -> Bool {
    guard let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: host, port: Int(port)).get() else {
        return false
    }
    try? await channel.close()
    return true
}

@Suite("Published ports: ids, listing, unpublishing")
struct PublishedPortLifecycleTests {
    @Test("publish answers an id; forwards lists id, port and both loopbacks' listeners; unpublish closes both and host connects are refused; an unknown id is a typed error and changes nothing", arguments: Engine.allCases)
    func publishListUnpublish(engine: Engine) async throws {
        let world = try await NATWorld(ipv6: true, engine: engine)
        var connections = try await StackDriver.listen(port: 80, on: world.guest).makeAsyncIterator()
        let both = try freeTCPPort()
        let single = try freeTCPPort()
        let first = try await world.publishWithID(PublishedPort(transport: .tcp, hostPort: both, guestPort: 80))
        let second = try await world.publishWithID(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: single, guestPort: 80))
        #expect(first != second && first < second)

        let listed = try await world.nat { $0.forwards }
        #expect(listed.map(\.id) == [first, second])
        #expect(listed.first?.port == PublishedPort(transport: .tcp, hostPort: both, guestPort: 80))
        #expect(listed.first?.listeners.map(\.description) == ["tcp:127.0.0.1:\(both):80", "tcp:[::1]:\(both):80"])
        #expect(listed.last?.listeners.map(\.description) == ["tcp:127.0.0.1:\(single):80"])

        // Reachable before: a host client gets to the guest's server.
        #expect(await hostConnects("127.0.0.1", both))
        let connection = try #require(await connections.next())
        await connection.abort()

        // An unknown id: the typed error, and both publications stay.
        #expect(try await world.unpublish(PublishedPortID(rawValue: 999)) == .unknownID(PublishedPortID(rawValue: 999)))
        #expect(try await world.nat { $0.forwards.map(\.id) } == [first, second])

        #expect(try await world.unpublish(first) == nil)
        #expect(try await world.nat { $0.forwards.map(\.id) } == [second])
        #expect(try await world.nat { $0.publishedPorts.count } == 1)
        #expect(await hostConnects("127.0.0.1", both) == false, "127.0.0.1 listener still open")
        #expect(await hostConnects("::1", both) == false, "::1 listener still open")
        // The other publication still works; the same id cannot be unpublished twice.
        #expect(await hostConnects("127.0.0.1", single))
        #expect(try await world.unpublish(first) == .unknownID(first))
        #expect(try await world.unpublish(second) == nil)
        #expect(await hostConnects("127.0.0.1", single) == false)
        #expect(try await world.nat { $0.forwards.isEmpty })
        try await world.shutdown()
    }

    @Test("a TCP connection accepted before unpublish keeps running; the port can be published again and gets a new id", arguments: Engine.allCases)
    func openConnectionSurvives(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        var connections = try await StackDriver.listen(port: 80, on: world.guest).makeAsyncIterator()
        let port = try freeTCPPort()
        let id = try await world.publishWithID(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: port, guestPort: 80))
        let client = try BlockingClient(port: port, timeout: 10)
        client.send("before")
        let connection = try #require(await connections.next())
        #expect(try await connection.read().map { String(buffer: $0) } == "before")
        #expect(try await world.unpublish(id) == nil)
        #expect(await hostConnects("127.0.0.1", port) == false)
        try await connection.write(ByteBuffer(string: "still here"))
        #expect(try await client.receiveWaiting().get() == Array("still here".utf8))
        await connection.abort()

        let again = try await world.publishWithID(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: port, guestPort: 80))
        #expect(again != id)
        #expect(try await world.nat { $0.forwards.map(\.id) } == [again])
        try await world.shutdown()
    }

    @Test("UDP: unpublish closes the host socket (the port can be bound again without SO_REUSEADDR); datagrams reached the guest before", arguments: Engine.allCases)
    func udpUnpublish(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        try await world.startGuestUDPEcho(port: 53)
        let port = try freeUDPPortOnBothLoopbacks()
        let id = try await world.publishWithID(PublishedPort(transport: .udp, hostAddress: .v4(.loopback), hostPort: port, guestPort: 53))
        func bindsAgain() async -> Bool {
            guard let channel = try? await DatagramBootstrap(group: world.group).bind(host: "127.0.0.1", port: Int(port)).get() else { return false }
            try? await channel.close()
            return true
        }
        #expect(await bindsAgain() == false, "the published UDP port is not bound")
        #expect(try await world.exchangeUDP(host: "127.0.0.1", port: port, "one") == "echo one")
        #expect(try await world.unpublish(id) == nil)
        #expect(await bindsAgain(), "the UDP host socket stayed open after unpublish")
        try await world.shutdown()
    }

    @Test("a failed publish (port in use) leaves nothing listed", arguments: Engine.allCases)
    func failedPublishListsNothing(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let port = try freeTCPPort()
        let id = try await world.publishWithID(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: port, guestPort: 80))
        await #expect(throws: IOError.self) {
            _ = try await world.publishWithID(PublishedPort(transport: .tcp, hostAddress: .v4(.loopback), hostPort: port, guestPort: 81))
        }
        #expect(try await world.nat { $0.forwards.map(\.id) } == [id])
        try await world.shutdown()
    }

    @Test("--publish ranges: host and guest ranges of one length become one port each, with either family's host address; bad ranges are typed errors")
    func ranges() throws {
        let plain = try PublishedPort.parseRange("tcp:8000-8002:9000-9002")
        #expect(plain.map(\.description) == ["tcp:8000:9000", "tcp:8001:9001", "tcp:8002:9002"])
        #expect(try PublishedPort.parseRange("udp:127.0.0.1:5353:53").map(\.description) == ["udp:127.0.0.1:5353:53"])
        #expect(try PublishedPort.parseRange("tcp:127.0.0.1:8000-8001:80-81").map(\.description) == ["tcp:127.0.0.1:8000:80", "tcp:127.0.0.1:8001:81"])
        #expect(try PublishedPort.parseRange("tcp:[::1]:8000-8001:80-81").map(\.description) == ["tcp:[::1]:8000:80", "tcp:[::1]:8001:81"])
        #expect(try PublishedPort.parseRange("TCP:8080-8080:80-80").map(\.description) == ["tcp:8080:80"])
        // Every single-port form the old parser takes parses the same way.
        for text in ["tcp:8080:80", "udp:[::1]:5353:53", "tcp:10.0.0.1:1:65535"] {
            #expect(try PublishedPort.parseRange(text) == [PublishedPort(text)!])
        }

        #expect(throws: PublishedPortParseError.rangeLengthsDiffer(host: 11, guest: 10)) { try PublishedPort.parseRange("tcp:8000-8010:8000-8009") }
        #expect(throws: PublishedPortParseError.rangeLengthsDiffer(host: 2, guest: 1)) { try PublishedPort.parseRange("tcp:8000-8001:80") }
        #expect(throws: PublishedPortParseError.reversedRange("8010-8000")) { try PublishedPort.parseRange("tcp:8010-8000:8010-8000") }
        #expect(throws: PublishedPortParseError.badPort("0")) { try PublishedPort.parseRange("tcp:0:80") }
        #expect(throws: PublishedPortParseError.badPort("65536")) { try PublishedPort.parseRange("tcp:8000-65536:8000-65536") }
        #expect(throws: PublishedPortParseError.badPort("")) { try PublishedPort.parseRange("tcp:8000-:80") }
        #expect(throws: PublishedPortParseError.badPort("+80")) { try PublishedPort.parseRange("tcp:+80:80") }
        #expect(throws: PublishedPortParseError.unknownProtocol("sctp")) { try PublishedPort.parseRange("sctp:80:80") }
        #expect(throws: PublishedPortParseError.badHostAddress("300.0.0.1")) { try PublishedPort.parseRange("tcp:300.0.0.1:80:80") }
        #expect(throws: PublishedPortParseError.badHostAddress("::zz")) { try PublishedPort.parseRange("tcp:[::zz]:80:80") }
        #expect(throws: PublishedPortParseError.malformed("tcp:80")) { try PublishedPort.parseRange("tcp:80") }
        #expect(throws: PublishedPortParseError.malformed("8080")) { try PublishedPort.parseRange("8080") }
        #expect(throws: PublishedPortParseError.rangeTooLong(2000)) { try PublishedPort.parseRange("tcp:10001-12000:20001-22000") }
        // Each message names the problem.
        #expect(PublishedPortParseError.rangeLengthsDiffer(host: 11, guest: 10).description.contains("same length"))
        #expect(PublishedPortParseError.reversedRange("8010-8000").description.contains("reversed"))
    }
}
