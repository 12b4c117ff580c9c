// Uses only `import VPNKit` (no @testable, no per-layer imports): what a library user can write.
// If the public surface changes in a way that breaks users, this stops compiling or failing.
import Foundation
import MetricsTestKit
import Testing
import VPNKit

/// Two stacks joined in memory: a gateway serving DHCP, and a host that configures itself from it.
func makeNetwork(subnet: String = "10.90.0.0/24", mtu: Int = 1500) async throws -> (gateway: UserspaceStack, host: UserspaceStack) {
    let (gatewayLink, hostLink) = UserspaceStack.Link.connectedPair(mtu: mtu)
    let gateway = try await UserspaceStack.start(configuration: StackConfiguration(subnet: IPv4Subnet(subnet)!, mtu: mtu), link: gatewayLink)
    try await gateway.serveDHCP(gateway.defaultDHCPServerConfiguration)
    var client = DHCPClientConfiguration(hardwareAddress: MACAddress("02:00:00:00:90:02")!)
    client.probeAddress = false  // nobody else is on this link; skip the 5 s of ARP probing
    let host = try await UserspaceStack.start(configuration: .unconfigured(macAddress: client.hardwareAddress, mtu: mtu), link: hostLink)
    _ = try await host.configureWithDHCP(hostName: "api-test", configuration: client, timeout: .seconds(20))
    return (gateway, host)
}

func pattern(_ count: Int, seed: UInt8 = 7) -> ByteBuffer {
    let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &+ $0 >> 9) }
    return ByteBuffer(bytes: bytes)
}

@Suite("The public API (import VPNKit only)", .timeLimit(.minutes(10)))
struct PublicAPITests {
    @Test("DHCP client and server: the host's lease configures its stack; the server lists it")
    func dhcp() async throws {
        let (gateway, host) = try await makeNetwork()
        let lease = try #require(await host.dhcpLease())
        #expect(lease.address == IPv4Address("10.90.0.3"))
        #expect(lease.routers == [IPv4Address("10.90.0.1")!])
        #expect(lease.mtu == 1500)
        let hostView = try await host.snapshot()
        #expect(hostView.addresses == [lease.address])
        #expect(hostView.subnet == IPv4Subnet("10.90.0.0/24"))
        let server = try #require(try await gateway.snapshot().dhcpServer)
        #expect(server.counters.acks == 1)
        #expect(server.leases.map(\.address) == [lease.address])
        #expect(server.leases.first?.hostName == "api-test")
        await host.shutdown()
        await gateway.shutdown()
    }

    @Test("TCP: listener as an AsyncSequence, 2 MiB echoed byte for byte, half-close gives EOF")
    func tcpEcho() async throws {
        let (gateway, host) = try await makeNetwork()
        let listener = try await gateway.listenTCP(port: 7)
        let server = Task {
            var served = 0
            for await connection in listener {
                served += 1
                while let bytes = try await connection.read() { try await connection.write(bytes) }
                await connection.shutdown()
                break
            }
            return served
        }
        let connection = try await host.connectTCP(to: IPAddress("10.90.0.1")!, port: 7)
        #expect(connection.remotePort == 7)
        let data = pattern(2 << 20)
        async let sending: Void = {
            var rest = data
            while rest.readableBytes > 0 { try await connection.write(rest.readSlice(length: min(65_536, rest.readableBytes))!) }
            await connection.shutdown()
        }()
        var received = ByteBuffer()
        while var bytes = try await connection.read() { received.writeBuffer(&bytes) }
        try await sending
        #expect(received == data)
        #expect(try await server.value == 1)
        let counters = try await gateway.snapshot().counters
        #expect(counters[.tcpConnectionsOpened] == 1)
        await listener.close()
        await host.shutdown()
        await gateway.shutdown()
    }

    @Test("TCP: a closed port is refused; a second listener on a port is an error")
    func tcpRefusals() async throws {
        let (gateway, host) = try await makeNetwork()
        await #expect(throws: AsyncTCPError.connectionClosed(.refused)) {
            _ = try await host.connectTCP(to: IPAddress("10.90.0.1")!, port: 9)
        }
        let listener = try await gateway.listenTCP(port: 80)
        await #expect(throws: StackError.self) { _ = try await gateway.listenTCP(port: 80) }
        await listener.close()
        _ = try await gateway.listenTCP(port: 80)  // free again after close
        await host.shutdown()
        await gateway.shutdown()
    }

    @Test("UDP: a datagram each way between two sockets")
    func udp() async throws {
        let (gateway, host) = try await makeNetwork()
        let server = try await gateway.bindUDP(port: 5353)
        let client = try await host.bindUDP(port: 40000)
        try await client.send(ByteBuffer(string: "question"), to: IPAddress("10.90.0.1")!, port: 5353)
        var serverMessages = server.messages.makeAsyncIterator()
        let question = try #require(await serverMessages.next())
        #expect(String(buffer: question.payload) == "question")
        #expect(question.sourcePort == 40000)
        try await server.send(ByteBuffer(string: "answer"), to: question.source, port: question.sourcePort)
        var clientMessages = client.messages.makeAsyncIterator()
        let answer = try #require(await clientMessages.next())
        #expect(String(buffer: answer.payload) == "answer")
        await host.shutdown()
        await gateway.shutdown()
        // Shutdown ends the sockets' sequences.
        #expect(await clientMessages.next() == nil)
    }

    @Test("Shutdown resets open connections: a pending read ends with an error instead of hanging")
    func shutdownEndsConnections() async throws {
        let (gateway, host) = try await makeNetwork()
        let listener = try await gateway.listenTCP(port: 7)
        let accepted = Task { () -> AsyncTCPConnection? in
            for await connection in listener { return connection }
            return nil
        }
        let connection = try await host.connectTCP(to: IPAddress("10.90.0.1")!, port: 7)
        _ = try #require(await accepted.value)
        let reading = Task { try await connection.read() }
        try await Task.sleep(for: .milliseconds(50))
        await host.shutdown()
        await #expect(throws: AsyncTCPError.connectionClosed(.aborted)) { _ = try await reading.value }
        await #expect(throws: UserspaceStackError.shutDown) { _ = try await host.snapshot() }
        #expect(await host.waitUntilLinkEnds() == .shutDown)
        await gateway.shutdown()
    }

    @Test("Capture switch: frames are kept only while a capture runs; a file capture is a readable pcap")
    func capture() async throws {
        let (gateway, host) = try await makeNetwork()
        let socket = try await host.bindUDP(port: 40001)
        let target = IPv4Address("10.90.0.1")!
        // Waits until the gateway has answered `count` datagrams in all (port unreachable), so a
        // loaded machine cannot make the test look at the capture too early.
        func answered(_ count: UInt64) async throws {
            for _ in 0..<200 where try await gateway.snapshot().counters[.udpPortUnreachable] < count {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        func ipv4Only(_ frames: [ByteBuffer]) -> [ByteBuffer] {
            // ARP may join in when an entry expired meanwhile (a starved test can take minutes).
            frames.filter { (try? EthernetFrame($0))?.etherType == .ipv4 }
        }
        try await socket.send(ByteBuffer(string: "not captured"), to: .v4(target), port: 9)
        try await answered(1)
        try await gateway.startCapture(maximumFrames: 100)
        try await socket.send(ByteBuffer(string: "captured"), to: .v4(target), port: 9)
        try await answered(2)
        let frames = ipv4Only(await gateway.stopCapture())
        // The datagram in, and the port-unreachable out.
        #expect(frames.count == 2)
        let inbound = try EthernetFrame(try #require(frames.first))
        #expect(inbound.etherType == .ipv4)
        let ip = try IPv4Packet(inbound.payload)
        #expect(ip.protocol == .udp)
        #expect(String(buffer: try UDPDatagram(ip.payload).payload.buffer) == "captured")

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("api-capture-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await gateway.startCapture(toFile: path)
        try await socket.send(ByteBuffer(string: "to file"), to: .v4(target), port: 9)
        try await answered(3)
        await gateway.stopCapture()
        let reader = try PcapReader(path: path)
        var records: [ByteBuffer] = []
        while let record = reader.next() { records.append(record.data) }
        #expect(ipv4Only(records).count == 2)
        #expect(try await gateway.snapshot().framesCaptured >= 4)
        await host.shutdown()
        await gateway.shutdown()
    }

    @Test("Metrics: counters and gauges reach a swift-metrics backend, as increments since the last report")
    func metrics() async throws {
        let (gateway, host) = try await makeNetwork()
        let backend = TestMetrics()
        try await gateway.exportMetrics(every: .seconds(3600), labelPrefix: "gw", dimensions: [("stack", "gateway")], factory: backend)
        let before = try backend.expectCounter("gw_stack_udp_port_unreachable", [("stack", "gateway")]).totalValue
        let socket = try await host.bindUDP(port: 40002)
        for _ in 0..<3 { try await socket.send(ByteBuffer(string: "x"), to: IPAddress("10.90.0.1")!, port: 9) }
        try await Task.sleep(for: .milliseconds(100))
        try await gateway.reportMetrics()
        let after = try backend.expectCounter("gw_stack_udp_port_unreachable", [("stack", "gateway")]).totalValue
        #expect(after - before == 3)
        #expect(try backend.expectCounter("gw_dhcp_acks", [("stack", "gateway")]).totalValue == 1)
        #expect(try backend.expectGauge("gw_dhcp_leases", [("stack", "gateway")]).lastValue == 1)
        // Reporting twice adds nothing new.
        try await gateway.reportMetrics()
        #expect(try backend.expectCounter("gw_stack_udp_port_unreachable", [("stack", "gateway")]).totalValue == after)
        await #expect(throws: UserspaceStackError.alreadyAttached("metrics export")) {
            try await gateway.exportMetrics(factory: backend)
        }
        await host.shutdown()
        await gateway.shutdown()
    }

    @Test("NAT: the guest reaches a TCP server on the host's 127.0.0.1 through the host alias")
    func nat() async throws {
        // A host-side echo server on loopback, through plain sockets.
        let server = try LoopbackEchoServer()
        defer { server.stop() }
        let (gateway, guest) = try await makeNetwork(subnet: "192.168.65.0/24")
        var nat = NATConfiguration()
        nat.hostAlias = IPAddress("192.168.65.2")
        try await gateway.attachNAT(nat, dns: nil)
        let connection = try await guest.connectTCP(to: IPAddress("192.168.65.2")!, port: server.port)
        try await connection.write(ByteBuffer(string: "through the NAT"))
        await connection.shutdown()
        var reply = ByteBuffer()
        while var bytes = try await connection.read() { reply.writeBuffer(&bytes) }
        #expect(String(buffer: reply) == "through the NAT")
        let snapshot = try #require(try await gateway.snapshot().nat)
        #expect(snapshot.counters.tcpConnectsSucceeded == 1)
        #expect(snapshot.counters.tcpBytesToHost == 15)
        await #expect(throws: UserspaceStackError.alreadyAttached("a NAT")) { try await gateway.attachNAT() }
        await guest.shutdown()
        await gateway.shutdown()
    }

    @Test("Replaying a kernel capture: the stack answers ARP and pings exactly as Linux did")
    func replay() throws {
        let capture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fixtures/ping.pcap").standardized.path
        let mac = MACAddress("02:00:00:00:00:0b")!
        var configuration = StackConfiguration(macAddress: mac, subnet: IPv4Subnet("10.200.2.0/24")!, gateway: IPv4Address("10.200.2.2")!)
        configuration.gratuitousARPOnStart = false
        let stack = NetworkStack(configuration: configuration)
        let result = try CaptureReplay.run(capture: capture, against: stack, standingInFor: mac) { frame in
            // IP options (record route) are left out: the kernel honours them, we do not.
            guard let ethernet = try? EthernetFrame(frame), ethernet.etherType == .ipv4 else { return true }
            return (try? IPv4Packet(ethernet.payload))?.headerLength == 20
        }
        #expect(result.framesReplayed == 52)
        #expect(result.answers.count == result.recordedAnswers.count)
        #expect(stack.statistics[.icmpEchoRepliesSent] == 7)
    }

    @Test("IPv6 addresses are accepted by the API and refused by the IPv4-only stack with a typed, counted error")
    func ipv6Refused() async throws {
        let (gateway, host) = try await makeNetwork()
        let v6 = try #require(IPAddress("2001:db8::1"))
        await #expect(throws: StackError.addressFamilyNotSupported(v6)) { _ = try await host.connectTCP(to: v6, port: 7) }
        await #expect(throws: StackError.addressFamilyNotSupported(v6)) { _ = try await host.bindUDP(port: 53, address: v6) }
        let socket = try await host.bindUDP(port: 40003)
        await #expect(throws: StackError.addressFamilyNotSupported(v6)) { try await socket.send(ByteBuffer(string: "x"), to: v6, port: 53) }
        #expect(try await host.snapshot().counters[.addressFamilyNotSupported] == 3)
        // IPv4 goes on as before on the same socket.
        try await socket.send(ByteBuffer(string: "x"), to: IPAddress("10.90.0.1")!, port: 9)
        await host.shutdown()
        await gateway.shutdown()
    }

    @Test("Published ports: an IPv6 host address in brackets, and the text form round-trips")
    func publishedPortText() {
        let v6 = PublishedPort("tcp:[::1]:8080:80")
        #expect(v6?.hostAddress == IPAddress("::1") && v6?.hostPort == 8080 && v6?.guestPort == 80)
        #expect(v6?.description == "tcp:[::1]:8080:80")
        for text in ["tcp:127.0.0.1:8080:80", "udp:[2001:db8::1]:53:5353", "tcp:0.0.0.0:1:2", "udp:[::]:5353:53"] {
            #expect(PublishedPort(text)?.description == text, "\(text)")
        }
        #expect(PublishedPort("tcp:8080:80")?.description == "tcp:8080:80")
        for text in ["tcp:::1:8080:80", "tcp:[::1]8080:80", "tcp:[::1:8080:80", "tcp:[1.2.3.4]:8080:80", "tcp:[::1]:8080", "tcp:[]:1:2", "tcp::8080:80"] {
            #expect(PublishedPort(text) == nil, "\(text)")
        }
    }

    @Test("Secure defaults: published ports bind the loopbacks (127.0.0.1 and ::1) unless told; limits are finite")
    func secureDefaults() {
        #expect(PublishedPort("tcp:8080:80")?.hostAddresses == [IPAddress("127.0.0.1")!, IPAddress("::1")!])
        #expect(PublishedPort("udp:5353:53")?.hostAddress == nil)
        #expect(PublishedPort("tcp:0.0.0.0:8080:80")?.hostAddress == IPAddress("0.0.0.0"))
        let nat = NATConfiguration()
        #expect(nat.maximumConnections == 4096 && nat.maximumUDPFlows == 1024 && nat.maximumICMPEchoesInFlight == 4096)
        let stack = StackConfiguration()
        #expect(stack.maximumTCPConnections == 4096 && stack.tcpSYNBacklog == 256 && stack.reassembly.maximumTotalBytes == 4 << 20)
    }

    @Test("A custom transport: any FrameTransport works as a link")
    func customTransport() async throws {
        // A transport that loops frames back to an observer: the smallest transport there is.
        final class Recorder: FrameTransport {
            let mtu = 1500
            var guestAddress: MACAddress? { nil }
            var onFrame: ((ByteBuffer) -> Void)?
            var onClose: (((any Error)?) -> Void)?
            var statistics = TransportStatistics()
            func send(_ frame: ByteBuffer) -> Bool {
                statistics.countSent(frame.readableBytes)
                return true
            }
            func close() {}
        }
        // IPv4 only, so what goes out on start is exactly one frame (a dual-stack stack also sends
        // router advertisements, 4 s apart at first: a slow machine would see a second one).
        let stack = try await UserspaceStack.start(configuration: StackConfiguration(), link: .custom { _ in Recorder() })
        // The gratuitous ARP for the gateway went out on start.
        let link = try await stack.snapshot().link
        #expect(link.framesSent == 1)
        #expect(link.bytesSent == 42)
        await stack.shutdown()
    }
}

/// A TCP echo server on 127.0.0.1 with an ephemeral port, on a thread of its own.
final class LoopbackEchoServer: @unchecked Sendable {
    let descriptor: Int32
    let port: UInt16
    private let thread: Thread

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.descriptor = descriptor
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        guard bound == 0, listen(descriptor, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        port = UInt16(bigEndian: address.sin_port)
        let listening = descriptor
        thread = Thread {
            while true {
                let client = accept(listening, nil, nil)
                guard client >= 0 else { return }
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = read(client, &buffer, buffer.count)
                    guard count > 0 else { break }
                    _ = write(client, buffer, count)
                }
                close(client)
            }
        }
        thread.start()
    }

    func stop() {
        shutdown(descriptor, Int32(SHUT_RDWR))
        close(descriptor)
    }
}
