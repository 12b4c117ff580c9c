// Published ports on both families with an in-memory dual-stack guest: which guest address (and so
// which family and host alias) a host connection or datagram reaches, and a port without a host
// address listening on both loopbacks.

import Foundation
import NIOCore
import NIOConcurrencyHelpers
import NIOPosix
import Testing
import VPNKitBase
import VPNKitNAT
import VPNKitRuntime
import VPNKitStack
import VPNKitTestSupport

/// Keeps the first bytes a host client reads.
private final class FirstRead: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<String>
    private var done = false
    init(promise: EventLoopPromise<String>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        done = true
        promise.succeed(String(buffer: unwrapInboundIn(data)))
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { promise.fail(error) }
        done = true
        context.close(promise: nil)
    }
}

/// The first datagram's payload a host UDP client reads.
private final class FirstDatagram: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let promise: EventLoopPromise<String>
    private var done = false
    init(promise: EventLoopPromise<String>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        done = true
        promise.succeed(String(buffer: unwrapInboundIn(data).data))
    }
}

extension NATWorld {
    /// A UDP echo in the guest on `port` (one socket per address in `addresses`, nil for every
    /// address): each datagram comes back from the address it was sent to, prefixed "echo ". Returns
    /// the sources seen. The sockets stay bound for the test's lifetime.
    @discardableResult
    func startGuestUDPEcho(port: UInt16, on addresses: [IPAddress?] = [nil]) async throws -> NIOLockedValueBox<[IPAddress]> {
        let guest = self.guest
        let sources = NIOLockedValueBox<[IPAddress]>([])
        try await loop.submit {
            for address in addresses {
                let socket = try guest.value.stack.bindUDP(port: port, address: address) { message in
                    sources.withLockedValue { $0.append(message.source) }
                    try? guest.value.stack.sendUDP(
                        ByteBuffer(string: "echo " + String(buffer: message.payload)), from: message.destination, port: port,
                        to: message.source, port: message.sourcePort, now: .now())
                }
                _ = Unmanaged.passRetained(socket)  // bound for the test's lifetime
            }
        }.get()
        return sources
    }

    /// Makes the guest send one IPv6 datagram to the gateway, and waits until the daemon's side has
    /// learned the guest's IPv6 address from it.
    func announceGuestIPv6() async throws {
        let (gateway, guest) = (self.gateway, self.guest)
        for _ in 0..<200 {
            let learned = try await loop.submit { () -> IPv6Address? in
                try? guest.value.stack.sendUDP(
                    ByteBuffer(string: "hi"), from: .v6(guestIP6), port: 40000, to: .v6(IPv6Address("fd00:65::1")!), port: 9, now: .now())
                guest.value.flush()
                return gateway.value.stack.guestIPv6Address
            }.get()
            if learned != nil { return }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Publishes `port` on the daemon's side with `addresses` as the guest's (the IPv6 one as the
    /// daemon's stack learned it when `learnedIPv6`).
    func publish(_ port: PublishedPort, ipv4: IPv4Address?, learnedIPv6: Bool) async throws {
        let gateway = self.gateway
        try await loop.flatSubmit {
            NATWorld.nat(of: gateway).publish(port) {
                GuestAddresses(ipv4: ipv4, ipv6: learnedIPv6 ? gateway.value.stack.guestIPv6Address : nil)
            }
        }.get()
    }

    /// Connects to `host`:`port` on the host, sends `text` and returns what comes back first.
    func exchangeTCP(host: String, port: UInt16, _ text: String) async throws -> String {
        let promise = loop.makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FirstRead(promise: promise)) }
            }
            .connect(host: host, port: Int(port)).get()
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
        defer { channel.close(promise: nil) }
        return try await promise.futureResult.get()
    }

    /// Sends `text` to `host`:`port` from a UDP socket of that family and returns the first answer.
    func exchangeUDP(host: String, port: UInt16, _ text: String) async throws -> String {
        let promise = loop.makePromise(of: String.self)
        let channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FirstDatagram(promise: promise)) }
            }
            .bind(host: host, port: 0).get()
        defer { channel.close(promise: nil) }
        let target = try SocketAddress(ipAddress: host, port: Int(port))
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: ByteBuffer(string: text))).get()
        let timeout = loop.scheduleTask(in: .seconds(10)) { promise.fail(ChannelError.connectTimeout(.seconds(10))) }
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }
}

/// Binds a free UDP port on 127.0.0.1 and ::1 and returns it (the ports are released again).
func freeUDPPortOnBothLoopbacks() throws -> UInt16 {
    for _ in 0..<50 {
        let candidate = UInt16.random(in: 20000...60000)
        let v4 = try? DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: Int(candidate)).wait()
        let v6 = try? DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "::1", port: Int(candidate)).wait()
        try? v4?.close().wait()
        try? v6?.close().wait()
        if v4 != nil, v6 != nil { return candidate }
    }
    throw ChannelError.inputClosed
}

@Suite("Published ports on both families (in-memory dual-stack guest)")
struct PublishedPortFamilyTests {
    @Test("the family rule: the host connection's family when the guest has an address of it, else the other; none without addresses")
    func familyRule() {
        let v4 = IPv4Address(192, 168, 65, 3)
        let v6 = IPv6Address("fd00:65::3")!
        let both = GuestAddresses(ipv4: v4, ipv6: v6)
        #expect(both.address(forHostFamily: .v4) == .v4(v4) && both.address(forHostFamily: .v6) == .v6(v6))
        let onlyV4 = GuestAddresses(ipv4: v4)
        #expect(onlyV4.address(forHostFamily: .v4) == .v4(v4) && onlyV4.address(forHostFamily: .v6) == .v4(v4))
        let onlyV6 = GuestAddresses(ipv6: v6)
        #expect(onlyV6.address(forHostFamily: .v4) == .v6(v6) && onlyV6.address(forHostFamily: .v6) == .v6(v6))
        #expect(GuestAddresses().address(forHostFamily: .v4) == nil && GuestAddresses().address(forHostFamily: .v6) == nil)
        #expect(GuestAddresses(.v6(v6)) == onlyV6 && GuestAddresses(.v4(v4)) == onlyV4)
    }

    @Test("the text form: without HOSTIP both loopbacks; an explicit address is the only one")
    func hostAddresses() {
        #expect(PublishedPort("tcp:8080:80")?.hostAddresses == [.v4(.loopback), .v6(.loopback)])
        #expect(PublishedPort("tcp:8080:80")?.description == "tcp:8080:80")
        #expect(PublishedPort("udp:[::1]:5353:53")?.hostAddresses == [.v6(.loopback)])
        #expect(PublishedPort("tcp:127.0.0.1:8080:80")?.hostAddresses == [.v4(.loopback)])
    }

    @Test("TCP: a port without HOSTIP listens on 127.0.0.1 and ::1; [::1] reaches a dual-stack guest over IPv6 from fd00:65::2, 127.0.0.1 over IPv4 from the IPv4 alias; each family falls back to the other", arguments: Engine.allCases)
    func tcpFamilies(engine: Engine) async throws {
        let world = try await NATWorld(ipv6: true, engine: engine)
        try await world.announceGuestIPv6()
        let gateway = world.gateway
        let learned = try await world.loop.submit { () -> IPv6Address? in gateway.value.stack.guestIPv6Address }.get()
        #expect(learned == guestIP6)
        var connections = try await StackDriver.listen(port: 80, on: world.guest).makeAsyncIterator()
        let both = try freeTCPPort()
        try await world.publish(PublishedPort(transport: .tcp, hostPort: both, guestPort: 80), ipv4: guestIP, learnedIPv6: true)
        let listening = try await world.nat { nat in nat.publishedPorts.map(\.description) }
        #expect(listening == ["tcp:127.0.0.1:\(both):80", "tcp:[::1]:\(both):80"])
        // (host address, guest IPv4 known, guest IPv6 known) → the alias the guest sees.
        let cases: [(String, Bool, Bool, IPAddress)] = [
            ("::1", true, true, .v6(hostAlias6)), ("127.0.0.1", true, true, .v4(hostAlias)),
            ("::1", true, false, .v4(hostAlias)), ("127.0.0.1", false, true, .v6(hostAlias6)),
        ]
        for (index, (host, hasV4, hasV6, alias)) in cases.enumerated() {
            var port = both
            if index >= 2 {
                port = try freeTCPPort()
                try await world.publish(
                    PublishedPort(transport: .tcp, hostAddress: IPAddress(host)!, hostPort: port, guestPort: 80),
                    ipv4: hasV4 ? guestIP : nil, learnedIPv6: hasV6)
            }
            async let answer = world.exchangeTCP(host: host, port: port, "hello \(index)")
            let connection = try #require(await connections.next())
            #expect(connection.remoteAddress == alias, "\(host) case \(index): from \(connection.remoteAddress)")
            let request = try await connection.read()
            #expect(request.map { String(buffer: $0) } == "hello \(index)")
            try await connection.write(ByteBuffer(string: "world \(index)"))
            #expect(try await answer == "world \(index)")
            await connection.abort()
        }
        let flows = try await world.nat { nat in nat.flows().map(\.remote) }
        #expect(flows.contains { $0.hasPrefix("[fd00:65::2]:") } || flows.isEmpty, "\(flows)")
        try await world.shutdown()
    }

    @Test("UDP: a port without HOSTIP, datagrams through [::1] reach the guest over IPv6 and through 127.0.0.1 over IPv4, answers come back", arguments: Engine.allCases)
    func udpFamilies(engine: Engine) async throws {
        let world = try await NATWorld(ipv6: true, engine: engine)
        try await world.announceGuestIPv6()
        let sources = try await world.startGuestUDPEcho(port: 53, on: [nil, .v6(.unspecified)])
        let port = try freeUDPPortOnBothLoopbacks()
        try await world.publish(PublishedPort(transport: .udp, hostPort: port, guestPort: 53), ipv4: guestIP, learnedIPv6: true)
        #expect(try await world.exchangeUDP(host: "::1", port: port, "six") == "echo six")
        #expect(try await world.exchangeUDP(host: "127.0.0.1", port: port, "four") == "echo four")
        let expected: [IPAddress] = [.v6(hostAlias6), .v4(hostAlias)]
        #expect(sources.withLockedValue { $0 } == expected)
        #expect(try await world.nat { $0.counters.publishedDatagrams } == 2)
        try await world.shutdown()
    }

    @Test("the daemon's side learns the guest's IPv4 address from its traffic, and its IPv6 address from traffic in the prefix", arguments: Engine.allCases)
    func learnedAddresses(engine: Engine) async throws {
        let world = try await NATWorld(ipv6: true, engine: engine)
        let (gateway, guest) = (world.gateway, world.guest)
        for _ in 0..<200 {
            let learned = try await world.loop.submit { () -> IPv4Address? in
                try? guest.value.stack.sendUDP(ByteBuffer(string: "hi"), from: .v4(guestIP), port: 40000, to: .v4(gatewayIP), port: 9, now: .now())
                guest.value.flush()
                return gateway.value.stack.guestIPv4Address
            }.get()
            if learned != nil { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        try await world.announceGuestIPv6()
        let learned = try await world.loop.submit { () -> [String] in
            [gateway.value.stack.guestIPv4Address.map { "\($0)" } ?? "-", gateway.value.stack.guestIPv6Address.map { "\($0)" } ?? "-"]
        }.get()
        #expect(learned == ["\(guestIP)", "\(guestIP6)"])
        try await world.shutdown()
    }

    @Test("an explicit host address that cannot be bound is an error, and nothing stays published", arguments: Engine.allCases)
    func explicitBindFails(engine: Engine) async throws {
        let world = try await NATWorld(ipv6: true, engine: engine)
        let port = try freeTCPPort()
        let gateway = world.gateway
        await #expect(throws: (any Error).self) {
            try await world.loop.flatSubmit {
                NATWorld.nat(of: gateway).publish(PublishedPort(transport: .tcp, hostAddress: IPAddress("192.0.2.1")!, hostPort: port, guestPort: 80)) { .v4(guestIP) }
            }.get()
        }
        #expect(try await world.nat { $0.publishedPorts.isEmpty })
        try await world.shutdown()
    }
}
