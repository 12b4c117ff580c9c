// The NAT over IPv6 with an in-memory dual-stack guest and real host sockets on ::1 only: TCP and
// UDP through the IPv6 host alias, refusals, and the destinations never forwarded whatever their
// spelling.

import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitNAT
import VPNKitRuntime
import VPNKitServices
import VPNKitStack

/// A TCP echo server on [::1].
func startEchoServer6(on group: MultiThreadedEventLoopGroup) async throws -> (any Channel, UInt16) {
    let channel = try await ServerBootstrap(group: group)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
        }
        .bind(host: "::1", port: 0).get()
    return (channel, UInt16(channel.localAddress!.port!))
}

@Suite("NAT over IPv6 (host sockets on ::1)")
struct NATIPv6Tests {
    @Test("never forwarded, whatever the spelling: loopback, unspecified, multicast, link-local, our prefix, IPv4 in IPv6 toward loopback")
    func neverForwarded() {
        let prefix = IPv6Address("fd00:65::")!
        let refused = [
            "::1", "::", "ff02::1", "ff0e::1", "ff05::1:3", "fe80::1", "febf::1", "fec0::1", "fd00:65::2", "fd00:65::1",
            "fd00:65::dead:beef", "::127.0.0.1", "::7f00:1", "::8.8.8.8", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:0.0.0.0",
            "::ffff:8.8.8.8", "::ffff:0:127.0.0.1", "64:ff9b::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::7f12:3456", "64:ff9b::0.0.0.0",
            "64:ff9b:1::127.0.0.1", "2002:7f00:1::1", "2002:0:0::1",
        ]
        for text in refused {
            let address = IPv6Address(text)!
            #expect(!NAT.isForwardableIPv6(address, prefix: prefix), "\(text) must not be forwarded")
        }
        let forwarded = ["2001:db8::1", "2606:4700::1111", "64:ff9b::8.8.8.8", "2002:808:808::1", "fd00:66::1", "fc00::1"]
        for text in forwarded {
            #expect(NAT.isForwardableIPv6(IPv6Address(text)!, prefix: prefix), "\(text) must be forwarded")
        }
    }

    @Test("the NAT's forwarder answer: the IPv6 host alias yes and owned by the stack, the gateway and the rules above no")
    func forwards() async throws {
        let world = try await NATWorld(ipv6: true)
        let answers = try await world.nat { nat in
            [hostAlias6, IPv6Address("fd00:65::1")!, IPv6Address("::1")!, IPv6Address("::ffff:127.0.0.1")!, IPv6Address("2001:db8::1")!]
                .map { nat.forwards(.v6($0)) }
        }
        #expect(answers == [true, false, false, false, true])
        let gateway = world.gateway
        #expect(try await world.loop.submit { gateway.value.stack.owns(.v6(hostAlias6)) }.get())
        try await world.shutdown()
    }

    @Test("startICMP opens an ICMPv6 socket beside the ICMP one when the stack has IPv6 (as root: raw sockets)")
    func icmpSockets() async throws {
        let world = try await NATWorld(ipv6: true)
        let gateway = world.gateway
        let mode = try await world.loop.flatSubmit { NATWorld.nat(of: gateway).startICMP() }.get()
        if getuid() == 0 {
            #expect(mode == "raw ICMP socket, raw ICMPv6 socket", "\(String(describing: mode))")
        }
        try await world.shutdown()
    }

    @Test("TCP through [fd00:65::2] to a host echo server on [::1]: 1 MiB each way, byte-exact")
    func tcpEcho() async throws {
        let world = try await NATWorld(ipv6: true)
        let (server, port) = try await startEchoServer6(on: world.group)
        let connection = try await StackDriver.connect(to: .v6(hostAlias6), port: port, on: world.guest)
        let data = pattern(1 << 20)
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
        #expect(counters.tcpBytesToHost == UInt64(data.readableBytes) && counters.tcpBytesToGuest == UInt64(data.readableBytes))
        try await server.close()
        try await world.shutdown()
    }

    @Test("a closed port on ::1, and --no-host-loopback: the guest's SYN to [fd00:65::2] gets RST")
    func refused() async throws {
        for loopback in [true, false] {
            let world = try await NATWorld(ipv6: true) { $0.hostLoopback = loopback }
            let (server, port) = try await startEchoServer6(on: world.group)
            if loopback { try await server.close() }
            await #expect(throws: AsyncTCPError.connectionClosed(.refused)) {
                _ = try await StackDriver.connect(to: .v6(hostAlias6), port: port, on: world.guest)
            }
            let counters = try await world.nat { $0.counters }
            #expect(loopback ? counters.tcpConnectsRefused == 1 : counters.tcpRefusedHostLoopback == 1)
            if !loopback { try await server.close() }
            try await world.shutdown()
        }
    }

    @Test("UDP through [fd00:65::2] to a host echo on [::1]: replies come back from the alias")
    func udpEcho() async throws {
        let world = try await NATWorld(ipv6: true)
        let echo = try await DatagramBootstrap(group: world.group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEchoHandler()) }
            }
            .bind(host: "::1", port: 0).get()
        let port = UInt16(echo.localAddress!.port!)
        let guest = world.guest
        let box = try await world.loop.submit { NIOLoopBound(Box(), eventLoop: world.loop) }.get()
        let sources = try await world.loop.submit { NIOLoopBound(SourceBox(), eventLoop: world.loop) }.get()
        try await world.loop.submit {
            let socket = try guest.value.stack.bindUDP(port: 40020, address: .v6(.unspecified)) { message in
                box.value.replies.append(message.sourcePort)
                sources.value.sources.append(message.source)
            }
            box.value.sockets.append(socket)
            for _ in 0..<10 { try socket.send(ByteBuffer(string: "hi"), to: .v6(hostAlias6), port: port, now: .now()) }
            guest.value.flush()
        }.get()
        var got = 0
        for _ in 0..<300 where got < 10 {
            try await Task.sleep(for: .milliseconds(10))
            got = try await world.loop.submit { box.value.replies.count }.get()
        }
        #expect(got == 10)
        #expect(try await world.loop.submit { sources.value.sources.allSatisfy { $0 == .v6(hostAlias6) } }.get())
        let counters = try await world.nat { $0.counters }
        #expect(counters.udpFlowsOpened == 1 && counters.udpDatagramsToGuest == 10 && counters.udpDropsAddressFamily == 0)
        try await echo.close()
        try await world.shutdown()
    }

    @Test("DNS over IPv6: [fd00:65::1]:53 answers AAAA itself and forwards the rest to resolv.conf's nameserver ::1")
    func dnsOverIPv6() async throws {
        let world = try await NATWorld(ipv6: true)
        let upstream = try await DatagramBootstrap(group: world.group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FakeUpstream(address: [198, 51, 100, 6])) }
            }
            .bind(host: "::1", port: 0).get()
        let port = upstream.localAddress!.port!
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vk-resolv6-\(getpid()).conf").path
        try "nameserver fe80::1%eth0\nnameserver ::1\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let gateway = world.gateway
        let gateway6 = IPv6Address("fd00:65::1")!
        try await world.loop.submit {
            var c = DNSServiceConfiguration()
            c.resolvConfPath = path
            c.hostsPath = nil
            c.resolvConfPort = UInt16(port)
            c.records = ["gateway.internal": [.v4(gatewayIP), .v6(gateway6)]]
            let service = try DNSService(driver: gateway.value, configuration: c)
            gateway.value.attachments.append(service)
        }.get()
        let guest = world.guest
        let box = try await world.loop.submit { NIOLoopBound(Box(), eventLoop: world.loop) }.get()
        let answers = try await world.loop.submit { NIOLoopBound(AnswerBox(), eventLoop: world.loop) }.get()
        let sources = try await world.loop.submit { NIOLoopBound(SourceBox(), eventLoop: world.loop) }.get()
        func ask(_ name: String, type: UInt8) async throws -> [UInt8]? {
            try await world.loop.submit {
                answers.value.answer = nil
                box.value.sockets.forEach { $0.close() }
                let socket = try guest.value.stack.bindUDP(port: 45354, address: .v6(.unspecified)) { message in
                    var payload = message.payload
                    answers.value.answer = payload.readBytes(length: payload.readableBytes)
                    sources.value.sources.append(message.source)
                }
                box.value.sockets = [socket]
                var query = ByteBuffer(bytes: [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                for label in name.split(separator: ".") {
                    query.writeInteger(UInt8(label.utf8.count))
                    query.writeString(String(label))
                }
                query.writeBytes([0, 0, type, 0, 1])
                try socket.send(query, to: .v6(gateway6), port: 53, now: .now())
                guest.value.flush()
            }.get()
            var answer: [UInt8]?
            for _ in 0..<300 where answer == nil {
                try await Task.sleep(for: .milliseconds(10))
                answer = try await world.loop.submit { answers.value.answer }.get()
            }
            return answer
        }
        #expect(try await ask("gateway.internal", type: 28).map { Array($0.suffix(16)) } == gateway6.octets)
        #expect(try await ask("six.example", type: 1).map { Array($0.suffix(4)) } == [198, 51, 100, 6])
        #expect(try await world.loop.submit { sources.value.sources }.get() == [.v6(gateway6), .v6(gateway6)])
        try await world.loop.submit { box.value.sockets.forEach { $0.close() } }.get()
        try await upstream.close()
        try await world.shutdown()
    }
}

extension NATIPv6Tests {
    @Test("UDP to a closed port on [::1]: the host's ICMPv6 port unreachable, read from the socket's error queue (IPV6_RECVERR), reaches the guest")
    func udpPortUnreachable() async throws {
        #if os(Linux)
        let world = try await NATWorld(ipv6: true)
        // A port that was bound a moment ago and is closed now: nobody listens there.
        let probe = try await DatagramBootstrap(group: world.group).bind(host: "::1", port: 0).get()
        let port = UInt16(probe.localAddress!.port!)
        try await probe.close()
        let guest = world.guest
        let box = try await world.loop.submit { NIOLoopBound(Box(), eventLoop: world.loop) }.get()
        try await world.loop.submit {
            let socket = try guest.value.stack.bindUDP(port: 40021, address: .v6(.unspecified)) { message in
                box.value.replies.append(message.sourcePort)
            }
            box.value.sockets.append(socket)
            try socket.send(ByteBuffer(string: "anyone?"), to: .v6(hostAlias6), port: port, now: .now())
            guest.value.flush()
        }.get()
        var counters = try await world.nat { $0.counters }
        for _ in 0..<300 where counters.udpUnreachablesToGuest == 0 {
            try await Task.sleep(for: .milliseconds(10))
            counters = try await world.nat { $0.counters }
        }
        #expect(counters.udpUnreachablesToGuest == 1 && counters.udpDatagramsToGuest == 0)
        try await world.shutdown()
        #endif
    }
}

final class SourceBox {
    var sources: [IPAddress] = []
}
