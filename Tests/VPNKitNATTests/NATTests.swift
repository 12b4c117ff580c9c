import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing
import VPNKitTestSupport
import VPNKitBase
import VPNKitIPv4
import VPNKitNAT
import VPNKitStack
import VPNKitTCP
import VPNKitTransport
import VPNKitDNS
import VPNKitEthernet
import VPNKitUDP
import VPNKitServices
import VPNKitRuntime
#if os(Linux)
import VPNKitReactor
#endif

let gatewayIP = IPv4Address(192, 168, 65, 1)
let hostAlias = IPv4Address(192, 168, 65, 2)
let guestIP = IPv4Address(192, 168, 65, 3)
let subnet = IPv4Subnet("192.168.65.0/24")!
let hostAlias6 = IPv6Address("fd00:65::2")!
let guestIP6 = IPv6Address("fd00:65::3")!

/// The daemon's side (stack + NAT) and a guest stack on one event loop, joined by an in-memory
/// link that a repeating task pumps. The host side is real sockets on 127.0.0.1.
/// Which loop the daemon's side runs on: SwiftNIO's, or the daemon's reactor (host sockets of its own).
enum Engine: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case nio, reactor
    var testDescription: String { rawValue }
}

struct NATWorld {
    /// SwiftNIO's loop: the host-side servers the tests start (and, with `.nio`, both stacks).
    let group: MultiThreadedEventLoopGroup
    /// The loop both stacks and the NAT run on.
    let loop: any EventLoop
    #if os(Linux)
    let reactor: Reactor?
    #endif
    let gateway: NIOLoopBound<StackDriver>
    let guest: NIOLoopBound<StackDriver>

    /// With `ipv6`, both sides are dual-stack on fd00:65::/64: the daemon's side is its ::1 (and the
    /// NAT's host alias ::2), the guest is ::3 (fe80::3), reaching the alias on the link.
    init(
        logger: Logger = Logger(label: "vpnkit.nat"), ipv6: Bool = false, engine: Engine = .nio,
        _ configure: @Sendable (inout NATConfiguration) -> Void = { _ in }
    ) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        #if os(Linux)
        let reactor = engine == .reactor ? try Reactor.start(name: "test-reactor") : nil
        self.reactor = reactor
        let loop: any EventLoop = reactor ?? group.next()
        #else
        let loop = group.next()
        #endif
        self.loop = loop
        var nat = NATConfiguration()
        configure(&nat)
        let natConfiguration = nat
        (gateway, guest) = try await loop.submit { () -> (NIOLoopBound<StackDriver>, NIOLoopBound<StackDriver>) in
            let link = InMemoryLink(start: .now())
            var g = StackConfiguration(subnet: subnet, gateway: gatewayIP, additionalAddresses: [hostAlias])
            g.gratuitousARPOnStart = false
            var c = StackConfiguration(macAddress: MACAddress(rawValue: 0x0250_0000_0003), subnet: subnet, gateway: guestIP)
            c.gratuitousARPOnStart = false
            c.defaultRouter = gatewayIP
            if ipv6 {
                g.ipv6 = IPv6LinkConfiguration()
                var link = IPv6LinkConfiguration()
                link.gateway = guestIP6
                link.linkLocal = IPv6Address("fe80::3")!
                link.routerLifetime = 0
                c.ipv6 = link
            }
            let a = StackDriver(stack: NetworkStack(configuration: g), transport: link.a, eventLoop: loop)
            let b = StackDriver(stack: NetworkStack(configuration: c), transport: link.b, eventLoop: loop)
            _ = NAT(driver: a, configuration: natConfiguration, logger: logger)
            a.start()
            b.start()
            link.pump(on: loop) {
                a.flush()
                b.flush()
            }
            return (NIOLoopBound(a, eventLoop: loop), NIOLoopBound(b, eventLoop: loop))
        }.get()
    }

    func nat<T: Sendable>(_ body: @escaping @Sendable (NAT) -> T) async throws -> T {
        let gateway = self.gateway
        return try await loop.submit { body(Self.nat(of: gateway)) }.get()
    }

    /// The NAT attached to the daemon's side; call on the loop.
    static func nat(of gateway: NIOLoopBound<StackDriver>) -> NAT {
        gateway.value.attachments.compactMap { $0 as? NAT }.first!
    }

    func shutdown() async throws {
        let (a, b) = (gateway, guest)
        try await loop.submit {
            a.value.stop()
            b.value.stop()
        }.get()
        #if os(Linux)
        await reactor?.shutdown()
        #endif
        try await group.shutdownGracefully()
    }
}

/// A TCP echo server on 127.0.0.1 (the host side).
func startEchoServer(on group: MultiThreadedEventLoopGroup) async throws -> (any Channel, UInt16) {
    let channel = try await ServerBootstrap(group: group)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    return (channel, UInt16(channel.localAddress!.port!))
}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(mode: .output, promise: nil) }
    }
}

func pattern(_ count: Int) -> ByteBuffer {
    var rng = SplitMix64(seed: 9)
    var buffer = ByteBuffer()
    buffer.reserveCapacity(count)
    for _ in 0..<count { buffer.writeInteger(UInt8(truncatingIfNeeded: rng.next())) }
    return buffer
}

@Suite("NAT with an in-memory guest and real host sockets on 127.0.0.1")
struct NATTests {
    @Test("TCP through the host alias to a host echo server: 2 MiB each way, byte-exact, half-close passed on", arguments: Engine.allCases)
    func tcpEcho(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let (server, port) = try await startEchoServer(on: world.group)
        let connection = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        let data = pattern(2 << 20)
        async let sent: Void = {
            var rest = data
            while rest.readableBytes > 0 {
                try await connection.write(rest.readSlice(length: min(100_000, rest.readableBytes))!)
            }
            await connection.shutdown()
        }()
        var received = ByteBuffer()
        while var chunk = try await connection.read() { received.writeBuffer(&chunk) }
        try await sent
        #expect(received == data)
        let counters = try await world.nat { $0.counters }
        #expect(counters.tcpConnectsSucceeded == 1)
        #expect(counters.tcpBytesToHost == UInt64(data.readableBytes))
        #expect(counters.tcpBytesToGuest == UInt64(data.readableBytes))
        try await server.close()
        try await world.shutdown()
    }

    @Test("a closed host port: the guest's SYN gets RST (connection refused), counted", arguments: Engine.allCases)
    func refused(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        let (server, port) = try await startEchoServer(on: world.group)
        try await server.close()
        await #expect(throws: AsyncTCPError.connectionClosed(.refused)) {
            _ = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        }
        #expect(try await world.nat { $0.counters.tcpConnectsRefused } == 1)
        try await world.shutdown()
    }

    @Test("at --max-connections the next SYN is refused with RST and counted; a closed one frees its slot", arguments: Engine.allCases)
    func connectionLimit(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine) { $0.maximumConnections = 2 }
        let (server, port) = try await startEchoServer(on: world.group)
        let first = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        let second = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        await #expect(throws: AsyncTCPError.connectionClosed(.refused)) {
            _ = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        }
        #expect(try await world.nat { $0.counters.tcpRefusedAtLimit } == 1)
        await first.shutdown()
        #expect(try await first.read() == nil)
        // The host echo closes its side in turn; the flow ends and its slot is free again.
        var open = 2
        for _ in 0..<200 where open > 1 {
            open = try await world.nat { $0.openTCPFlows }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(open == 1)
        let third = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        try await third.write(ByteBuffer(string: "ok"))
        #expect(try await third.read() == ByteBuffer(string: "ok"))
        _ = second
        try await server.close()
        try await world.shutdown()
    }

    @Test("--no-host-loopback: the host alias refuses TCP with RST")
    func noHostLoopback() async throws {
        let world = try await NATWorld { $0.hostLoopback = false }
        let (server, port) = try await startEchoServer(on: world.group)
        await #expect(throws: AsyncTCPError.connectionClosed(.refused)) {
            _ = try await StackDriver.connect(to: .v4(hostAlias), port: port, on: world.guest)
        }
        #expect(try await world.nat { $0.counters.tcpRefusedHostLoopback } == 1)
        try await server.close()
        try await world.shutdown()
    }

    @Test("UDP flows: capped with least-recently-used eviction, replies come back", arguments: [false, true], Engine.allCases)
    func udpFlows(expire: Bool, engine: Engine) async throws {
        // Eviction with a long idle timeout; expiry with a short one (only checked then: under a
        // loaded machine the short one could expire flows before the eviction is seen).
        let world = try await NATWorld(engine: engine) {
            $0.maximumUDPFlows = expire ? 8 : 2
            $0.udpIdleTimeout = .seconds(expire ? 1 : 600)
        }
        let echo = try await DatagramBootstrap(group: world.group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEchoHandler()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = UInt16(echo.localAddress!.port!)
        let guest = world.guest
        let box = try await world.loop.submit { NIOLoopBound(Box(), eventLoop: world.loop) }.get()
        // One guest port after another, each waiting for its reply: the third flow evicts the first.
        for local in [40001, 40002, 40003] as [UInt16] {
            try await world.loop.submit {
                let socket = try guest.value.stack.bindUDP(port: local) { message in box.value.replies.append(message.destinationPort) }
                box.value.sockets.append(socket)
                try socket.send(ByteBuffer(string: "hi"), to: .v4(hostAlias), port: port, now: .now())
                guest.value.flush()
            }.get()
            var got: [UInt16] = []
            for _ in 0..<300 where !got.contains(local) {
                try await Task.sleep(for: .milliseconds(10))
                got = try await world.loop.submit { box.value.replies }.get()
            }
            #expect(got.contains(local), "no reply to \(local)")
        }
        if !expire {
            let (open, evicted) = try await world.nat { ($0.openUDPFlows, $0.counters.udpFlowsEvicted) }
            #expect(open == 2)
            #expect(evicted == 1)
        } else {
            var remaining = 3
            for _ in 0..<100 where remaining > 0 {
                try await Task.sleep(for: .milliseconds(100))
                remaining = try await world.nat { $0.openUDPFlows }
            }
            #expect(remaining == 0)
            #expect(try await world.nat { $0.counters.udpFlowsExpired } == 3)
        }
        try await echo.close()
        try await world.shutdown()
    }

    @Test("one UDP flow, several destinations in turn: each datagram reaches its own, each reply comes back from it", arguments: Engine.allCases)
    func udpFlowDestinations(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine) { _ in }
        var echoes: [any Channel] = []
        for _ in 0..<2 {
            echoes.append(try await DatagramBootstrap(group: world.group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEchoHandler()) }
                }
                .bind(host: "127.0.0.1", port: 0).get())
        }
        let ports = echoes.map { UInt16($0.localAddress!.port!) }
        let guest = world.guest
        let box = try await world.loop.submit { NIOLoopBound(Box(), eventLoop: world.loop) }.get()
        // One guest socket (one NAT flow); the flow remembers the last destination's address, so
        // sending to A, B, A, A, B must not send any of them to the wrong one.
        let order = [0, 1, 0, 0, 1]
        try await world.loop.submit {
            let socket = try guest.value.stack.bindUDP(port: 40010) { message in box.value.replies.append(message.sourcePort) }
            box.value.sockets.append(socket)
        }.get()
        for (i, which) in order.enumerated() {
            try await world.loop.submit {
                try box.value.sockets[0].send(ByteBuffer(string: "d\(i)"), to: .v4(hostAlias), port: ports[which], now: .now())
                guest.value.flush()
            }.get()
            var got: [UInt16] = []
            for _ in 0..<300 where got.count <= i {
                try await Task.sleep(for: .milliseconds(10))
                got = try await world.loop.submit { box.value.replies }.get()
            }
            #expect(got.count == i + 1 && got.last == ports[which], "datagram \(i): replies from \(got), expected \(ports[which])")
        }
        #expect(try await world.nat { $0.openUDPFlows } == 1)
        for echo in echoes { try await echo.close() }
        try await world.shutdown()
    }

    @Test("every stack counter has a name")
    func counterNames() {
        let names = StackCounter.allCases.map(\.description)
        #expect(Set(names).count == names.count)
        #expect(!names.contains { $0.hasPrefix("counter_") })
    }
}

final class Box {
    var replies: [UInt16] = []
    var sockets: [UDPSocket] = []
}

final class UDPEchoHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

/// A fake DNS upstream on 127.0.0.1 that answers every A query with `address`.
final class FakeUpstream: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    let address: [UInt8]
    init(address: [UInt8]) { self.address = address }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        var query = envelope.data
        guard let bytes = query.readBytes(length: query.readableBytes), bytes.count > 12 else { return }
        var end = 12
        while end < bytes.count, bytes[end] != 0 { end += Int(bytes[end]) + 1 }
        guard end + 5 <= bytes.count else { return }
        var answer = ByteBuffer(bytes: bytes[0..<2])
        answer.writeBytes([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0])
        answer.writeBytes(bytes[12..<(end + 5)])
        answer.writeBytes([0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4] + address)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: answer)), promise: nil)
    }
}

@Suite("DNS on the gateway")
struct DNSServiceTests {
    @Test("queries are forwarded to resolv.conf's nameserver, and to the new one after resolv.conf changes", arguments: Engine.allCases)
    func resolvConfChanges(engine: Engine) async throws {
        let world = try await NATWorld(engine: engine)
        func upstream(_ host: String, port: Int, answering address: [UInt8]) async throws -> (any Channel) {
            try await DatagramBootstrap(group: world.group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FakeUpstream(address: address)) }
                }
                .bind(host: host, port: port).get()
        }
        // Two fake upstreams on two loopback addresses and one port (resolv.conf has no port syntax).
        let first = try await upstream("127.0.0.2", port: 0, answering: [198, 51, 100, 1])
        let port = first.localAddress!.port!
        let second = try await upstream("127.0.0.3", port: port, answering: [198, 51, 100, 2])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vk-resolv-\(getpid())-\(engine).conf").path
        try "nameserver 127.0.0.2\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let gateway = world.gateway
        try await world.loop.submit {
            var c = DNSServiceConfiguration()
            c.resolvConfPath = path
            c.hostsPath = nil
            c.resolvConfCheckInterval = .milliseconds(100)
            c.resolver.perTryTimeout = .seconds(1)
            c.resolvConfPort = UInt16(port)
            let service = try DNSService(driver: gateway.value, configuration: c)
            gateway.value.attachments.append(service)
        }.get()
        func ask(_ name: String) async throws -> [UInt8]? {
            let guest = world.guest
            let box = try await world.loop.submit { NIOLoopBound(Box(), eventLoop: world.loop) }.get()
            let answers = try await world.loop.submit { NIOLoopBound(AnswerBox(), eventLoop: world.loop) }.get()
            try await world.loop.submit {
                let socket = try guest.value.stack.bindUDP(port: 45353) { message in
                    var payload = message.payload
                    answers.value.answer = payload.readBytes(length: payload.readableBytes)
                }
                box.value.sockets.append(socket)
                var query = ByteBuffer(bytes: [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                for label in name.split(separator: ".") {
                    query.writeInteger(UInt8(label.utf8.count))
                    query.writeString(String(label))
                }
                query.writeBytes([0, 0, 1, 0, 1])
                try socket.send(query, to: .v4(gatewayIP), port: 53, now: .now())
                guest.value.flush()
            }.get()
            var answer: [UInt8]?
            for _ in 0..<300 where answer == nil {
                try await Task.sleep(for: .milliseconds(10))
                answer = try await world.loop.submit { answers.value.answer }.get()
            }
            try await world.loop.submit { box.value.sockets.forEach { $0.close() } }.get()
            return answer.map { Array($0.suffix(4)) }
        }
        #expect(try await ask("one.example") == [198, 51, 100, 1])
        try "nameserver 127.0.0.3\n".write(toFile: path, atomically: true, encoding: .utf8)
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await ask("two.example") == [198, 51, 100, 2])
        try await first.close()
        try await second.close()
        try await world.shutdown()
    }
}

final class AnswerBox {
    var answer: [UInt8]?
}

@Suite("NAT input checks")
struct NATInputTests {
    @Test("a datagram to a forwarded address from a source outside the guest subnet is dropped and counted, no flow opened")
    func spoofedSource() async throws {
        let world = try await NATWorld()
        let gateway = world.gateway
        let (dropped, flows) = try await world.loop.submit { () -> (UInt64, Int) in
            let stack = gateway.value.stack
            var frame = ByteBuffer.withHeadroom(capacity: 4)
            frame.writeString("spam")
            let spoofed = IPv4Address(203, 0, 113, 9)
            UDPHeader(sourcePort: 4000, destinationPort: 53).prepend(to: &frame, source: .v4(spoofed), destination: .v4(hostAlias))
            IPv4Header(source: spoofed, destination: hostAlias, protocol: .udp).prepend(to: &frame)
            EthernetHeader(destination: stack.macAddress, source: MACAddress(rawValue: 0x0250_0000_0003), etherType: .ipv4).prepend(to: &frame)
            stack.receive(frame, now: .now())
            return (stack.statistics[.forwardedBadSource], NATWorld.nat(of: gateway).openUDPFlows)
        }.get()
        #expect(dropped == 1)
        #expect(flows == 0)
        try await world.shutdown()
    }
}
