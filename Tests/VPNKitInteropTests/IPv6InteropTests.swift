// IPv6 with the Linux kernel as the judge: a namespace's TAP comes up opposite the stack and
// configures itself by SLAAC from our advertisements; rdisc6 reads them; pings of every size go
// both ways in fragments; a closed UDP port is refused.

import Foundation
import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitIPv6
import VPNKitStack
import VPNKitTransport
import VPNKitTestSupport
import VPNKitRuntime

/// The stack with IPv6 on, on a TAP in a fresh namespace whose kernel configures itself: the link
/// comes up only once the stack runs, so the guest's first router solicitation is answered.
final class IPv6GuestLink {
    let namespace: TestNamespace
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let driver: NIOLoopBound<StackDriver>
    var loop: any EventLoop { driver.eventLoop }

    init(label: String, mtu: Int = 1500, offloads: Bool = false) throws {
        namespace = try TestNamespace(label)
        let loop = group.next()
        let transport = try TAPTransport.open(namespace: namespace.name, device: "tap0", mtu: mtu, offloads: offloads, on: loop).wait()
        try namespace.ip("link", "set", "tap0", "mtu", "\(mtu)")
        driver = try loop.submit {
            var configuration = StackConfiguration(mtu: mtu)
            configuration.ipv6 = IPv6LinkConfiguration()
            let driver = StackDriver(stack: NetworkStack(configuration: configuration), transport: transport.value, eventLoop: loop)
            driver.start()
            return NIOLoopBound(driver, eventLoop: loop)
        }.wait()
        try namespace.ip("link", "set", "tap0", "up")
    }

    func counters() throws -> StackCounters {
        let driver = self.driver
        return try loop.submit { driver.value.stack.statistics }.wait()
    }

    /// The guest's global address once SLAAC and DAD are done, waiting up to `timeout` seconds.
    func waitForGlobalAddress(timeout: TimeInterval = 10) throws -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let shown = try namespace.ip("-6", "addr", "show", "dev", "tap0", "scope", "global")
            if let line = shown.output.split(separator: "\n").first(where: { $0.contains("inet6 fd00:65:") }), !line.contains("tentative") {
                return line.split(separator: " ").dropFirst().first.map { String($0.split(separator: "/")[0]) }
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return nil
    }

    func shutdown() {
        let driver = self.driver
        try? loop.submit { driver.value.stop() }.wait()
        try? group.syncShutdownGracefully()
    }
}

@Suite("IPv6 with the Linux kernel as the judge", .serialized, .enabled(if: runsHere(canUseNamespaces), namespaceSkipReason), .requires(canUseNamespaces, namespaceSkipReason))
struct IPv6InteropTests {
    @Test("SLAAC: the guest takes an address in our prefix and a default route via fe80::1; its DAD succeeds; rdisc6 shows MTU and RDNSS")
    func slaac() throws {
        let link = try IPv6GuestLink(label: "slaac")
        defer { link.shutdown() }
        let address = try link.waitForGlobalAddress()
        #expect(address != nil, "no global address within 10 s: \((try? link.namespace.ip("-6", "addr").output) ?? "")")
        let addresses = try link.namespace.ip("-6", "addr", "show", "dev", "tap0").output
        #expect(!addresses.contains("dadfailed"), "\(addresses)")
        let route = try link.namespace.ip("-6", "route", "show", "default").output
        #expect(route.contains("via fe80::1 dev tap0"), "\(route)")
        if let rdisc6 = which("rdisc6") {
            let shown = try link.namespace.exec([rdisc6, "-1", "-w", "2000", "tap0"], timeout: 15)
            #expect(shown.status == 0, "\(shown.output) \(shown.error)")
            #expect(shown.output.contains("fd00:65::/64"), "\(shown.output)")
            #expect(shown.output.range(of: #"MTU\s*:\s*1500"#, options: .regularExpression) != nil, "\(shown.output)")
            #expect(shown.output.range(of: #"Recursive DNS server\s*:\s*fd00:65::1"#, options: .regularExpression) != nil, "\(shown.output)")
        } else {
            Issue.record("rdisc6 (Debian ndisc6) is not installed")
        }
        let counters = try link.counters()
        #expect(counters[.ndpRouterSolicitationsReceived] >= 1)
        #expect(counters[.ndpRouterAdvertisementsSent] >= 2)
    }

    @Test("ping -6 the gateway with 56, 4000 and 30000 bytes (fragments both ways); its neighbour entry goes REACHABLE")
    func ping() throws {
        let link = try IPv6GuestLink(label: "ping6")
        defer { link.shutdown() }
        _ = try link.waitForGlobalAddress()
        for size in [56, 4000, 30000] {
            let result = try link.namespace.exec(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", "\(size)", "fd00:65::1"], timeout: 30)
            #expect(result.status == 0, "ping -6 -s \(size): \(result.output) \(result.error)")
            #expect(pingSummary(result.output)?.received == 3, "ping -6 -s \(size): \(result.output)")
        }
        let neighbour = try link.namespace.ip("-6", "neigh", "show", "fd00:65::1")
        #expect(neighbour.output.contains("5a:94:ef:e4:0c:ee"), "\(neighbour.output)")
        #expect(neighbour.output.contains("router") && neighbour.output.contains("REACHABLE"), "\(neighbour.output)")
        let counters = try link.counters()
        #expect(counters[.icmpv6EchoRepliesSent] == 9)
        #expect(counters[.ipv6Reassembled] == 6)
        #expect(counters[.ipv6FragmentsSent] >= 6 * 3)
    }

    @Test("UDP over IPv6 to a closed gateway port: the guest's connected socket sees ECONNREFUSED; beyond the link, connects fail at once")
    func udpRefused() throws {
        let link = try IPv6GuestLink(label: "udp6")
        defer { link.shutdown() }
        _ = try link.waitForGlobalAddress()
        let script = """
            import socket, sys
            c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            c.settimeout(3)
            c.connect(("fd00:65::1", 9))
            c.send(b"anyone?")
            try:
                c.recv(100)
                print("no error"); sys.exit(2)
            except ConnectionRefusedError:
                print("refused")
            # Beyond the link there is no IPv6 route yet: a connect fails at once (our ICMPv6
            # no-route answer never leaves this namespace and the stack), so clients fall back to IPv4.
            import time
            start = time.time()
            try:
                socket.create_connection(("2001:db8::1", 80), timeout=10)
                print("connected?!"); sys.exit(3)
            except OSError as e:
                print("unreachable", e.errno, round(time.time() - start, 2))
                assert time.time() - start < 2, "the connect waited"
            """
        let result = try link.namespace.exec(["python3", "-c", script], timeout: 20)
        #expect(result.status == 0 && result.output.contains("refused") && result.output.contains("unreachable"), "\(result.output) \(result.error)")
        #expect(try link.counters()[.udpPortUnreachable] >= 1)
        #expect(try link.counters()[.ipv6NoRoute] >= 1)
    }

    @Test(
        "TCP over IPv6 through the diagnostic echo: 32 MiB echoed byte-exact; the SYN-ACK's MSS 1440, window scaling, SACK and timestamps; with offloads the guest's segments arrive larger than the MTU",
        arguments: [false, true])
    func tcpEcho(offloads: Bool) throws {
        let link = try IPv6GuestLink(label: "tcp6", offloads: offloads)
        defer { link.shutdown() }
        let driver = link.driver
        try link.loop.submit {
            let d = driver.value
            d.keep(try DiagnosticServices(stack: d.stack))
        }.wait()
        _ = try link.waitForGlobalAddress()
        let script = """
            import os, socket, subprocess, sys, threading, time
            data = os.urandom(32 << 20)
            # tshark decodes the handshake: the SYN, then our SYN-ACK.
            fields = ["tcp.flags", "tcp.options.mss_val", "tcp.options.sack_perm", "tcp.options.timestamp.tsval", "tcp.options.wscale.shift"]
            cap = subprocess.Popen(
                ["tshark", "-i", "tap0", "-c", "2", "-f", "tcp", "-T", "fields", "-E", "separator=;"] + [a for f in fields for a in ("-e", f)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(2)
            s = socket.create_connection(("fd00:65::1", 7), timeout=30)
            lines = cap.communicate(timeout=20)[0].strip().splitlines()
            print(lines)
            synack = lines[1].split(";")
            assert synack[0] == "0x0012", f"not a SYN-ACK: {synack}"
            assert synack[1] == "1440", f"MSS {synack[1]}"
            assert synack[2] != "" and synack[3] != "" and synack[4] != "", f"options missing: {synack}"
            got = bytearray()
            def reader():
                while len(got) < len(data):
                    chunk = s.recv(1 << 20)
                    if not chunk: break
                    got.extend(chunk)
            t = threading.Thread(target=reader); t.start()
            s.sendall(data)
            t.join(60)
            assert bytes(got) == data, f"echo differs: {len(got)} of {len(data)}"
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b"", "expected EOF after our FIN"
            s.close()
            try:
                socket.create_connection(("fd00:65::1", 9999), timeout=5)
                print("connected?!"); sys.exit(2)
            except ConnectionRefusedError:
                print("refused")
            c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            c.settimeout(3)
            c.connect(("fd00:65::1", 7))
            c.send(b"over udp")
            assert c.recv(100) == b"over udp"
            print("ok")
            """
        let result = try link.namespace.exec(["python3", "-c", script], timeout: 120)
        #expect(result.status == 0, "\(result.output) \(result.error)")
        #expect(result.output.contains("refused") && result.output.contains("ok"))
        let counters = try link.counters()
        #expect(counters[.tcpResetsSent] >= 1)
        #expect(counters[.tcpConnectionsOpened] == 1)
        // With TUN_F_TSO6 the guest's kernel hands over IPv6 segments of up to 64 KiB.
        let driver2 = link.driver
        let (oversized, segmented) = try link.loop.submit {
            let tap = driver2.value.transport as? TAPTransport
            return (tap?.oversizedFramesReceived ?? 0, tap?.segmentationOffloadFramesSent ?? 0)
        }.wait()
        #expect(offloads ? oversized > 0 : oversized == 0, "oversized frames received: \(oversized)")
        // And ours go out as large segments the guest's kernel cuts (GSO type TCPV6).
        #expect(offloads ? segmented > 0 : segmented == 0, "segmentation offload frames sent: \(segmented)")
    }

    @Test("vpnkit run is dual-stack by default: the guest configures itself, pings fd00:65::1; --ipv6-prefix moves it; --no-ipv6 turns it off")
    func daemon() throws {
        for (arguments, gateway) in [([String](), "fd00:65::1"), (["--ipv6-prefix", "fd00:77:1::/64"], "fd00:77:1::1")] {
            let daemon = try Daemon(label: "run6", arguments: arguments, address: nil)
            var configured = false
            let deadline = Date().addingTimeInterval(10)
            while !configured && Date() < deadline {
                let shown = try daemon.namespace.ip("-6", "addr", "show", "dev", "tap0", "scope", "global").output
                configured = shown.contains("inet6 \(gateway.dropLast(2))") && !shown.contains("tentative")
                if !configured { usleep(100_000) }
            }
            #expect(configured, "no SLAAC address in \(gateway)/64")
            let ping = try daemon.namespace.exec(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", gateway], timeout: 30)
            #expect(pingSummary(ping.output)?.received == 3, "\(ping.output) \(ping.error)")
            let (status, stderr) = daemon.stop()
            #expect(status == 0, "\(stderr)")
            #expect(stderr.contains("icmpv6_echo_replies_sent=3"), "\(stderr)")
            #expect(stderr.contains("ndp_router_advertisements_sent="), "\(stderr)")
        }
        let off = try Daemon(label: "run6off", arguments: ["--no-ipv6"], address: nil)
        usleep(1_500_000)
        let shown = try off.namespace.ip("-6", "addr", "show", "dev", "tap0", "scope", "global").output
        #expect(!shown.contains("inet6"), "\(shown)")
        let (status, stderr) = off.stop()
        #expect(status == 0 && !stderr.contains("ndp_router_advertisements_sent"), "\(stderr)")
        let bad = try run(vpnkitBinary(), ["run", "--netns", "x", "--tap", "t", "--ipv6-prefix", "fd00::/48"])
        #expect(bad.status != 0 && bad.error.contains("--ipv6-prefix"), "\(bad.error)")
    }

    /// A `vpnkit run` daemon with IPv6 (and `arguments`), its guest configured by SLAAC and told
    /// the gateway's MAC (so resolution does not hinge on the fault seed).
    private func lossyDaemon(_ label: String, _ arguments: [String]) throws -> Daemon {
        let daemon = try Daemon(label: label, arguments: arguments, address: nil)
        _ = try daemon.waitForSLAAC()
        try daemon.namespace.ip("-6", "neigh", "replace", "fd00:65::1", "lladdr", "5a:94:ef:e4:0c:ee", "dev", "tap0", "nud", "permanent")
        return daemon
    }

    @Test("ping -6 on a link losing 10 % each way: small and fragmented pings still come back, intact")
    func lossyPing() throws {
        let daemon = try lossyDaemon("ping6loss", ["--fault-drop", "0.1", "--fault-seed", "11"])
        for (size, count, least) in [(56, 20, 10), (4000, 20, 4), (30000, 10, 0)] {
            let ping = try daemon.namespace.exec(
                ["ping", "-6", "-c", "\(count)", "-i", "0.2", "-W", "1", "-s", "\(size)", "fd00:65::1"], timeout: 60)
            let summary = try #require(pingSummary(ping.output), "\(ping.output) \(ping.error)")
            #expect(summary.transmitted == count)
            #expect(summary.received >= least, "ping -6 -s \(size): \(ping.output)")
            // ping checks each reply's data: a reply put together wrongly would say so.
            #expect(!ping.output.contains("wrong data") && !ping.output.contains("DUP"), "\(ping.output)")
        }
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("faults_to_guest: passed="), "\(stderr)")
    }

    @Test("TCP over IPv6 on a lossy, reordering, duplicating link: 4 MiB echoed byte-exact")
    func lossyTCP() throws {
        let daemon = try lossyDaemon(
            "tcp6loss", ["--diagnostic-services", "--fault-drop", "0.03", "--fault-reorder", "0.03", "--fault-duplicate", "0.01", "--fault-seed", "7"])
        let script = """
            import os, socket, threading
            data = os.urandom(4 << 20)
            s = socket.create_connection(("fd00:65::1", 7), timeout=60)
            got = bytearray()
            def reader():
                while len(got) < len(data):
                    chunk = s.recv(1 << 20)
                    if not chunk: break
                    got.extend(chunk)
            t = threading.Thread(target=reader); t.start()
            s.sendall(data)
            t.join(90)
            assert bytes(got) == data, f"echo differs: {len(got)} of {len(data)}"
            s.close()
            print("ok")
            """
        let result = try daemon.namespace.exec(["python3", "-c", script], timeout: 150)
        #expect(result.status == 0 && result.output.contains("ok"), "\(result.output) \(result.error)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("tcp_retransmissions="), "\(stderr)")
    }
}
