import Foundation
import Testing
import VPNKitTestSupport

let natSkipReason: Comment = "skipped: needs root, network namespaces, python3 and busybox (CI installs them)"
let canRunNAT = canUseNamespaces && busybox != nil && which("python3") != nil

/// A daemon with the NAT on a fresh guest namespace that got its address from our DHCP server
/// through busybox udhcpc, with the gateway as its DNS server.
func natDaemon(_ label: String, _ arguments: [String]) throws -> Daemon {
    let daemon = try Daemon(label: label, arguments: arguments, address: nil)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vk-nat-\(label)-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let script = try udhcpcScript(in: directory)
    let lease = try daemon.namespace.exec(
        ["timeout", "-s", "KILL", "20", busybox!, "udhcpc", "-i", "tap0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script], timeout: 30)
    guard lease.status == 0 else { throw NamespaceError(message: "udhcpc: \(lease.error)") }
    try daemon.namespace.setResolvConf("nameserver 192.168.65.1\n")
    return daemon
}

extension Daemon {
    /// Runs the guest script in the namespace; returns its `ok …` line (the test fails without one).
    func guest(_ arguments: String..., timeout: Double = 120) throws -> String {
        let result = try namespace.exec(["python3", "-c", natGuestScript] + arguments, timeout: timeout)
        let line = result.output.split(separator: "\n").first { $0.hasPrefix("ok ") }.map(String.init)
        guard let line else {
            throw NamespaceError(message: "guest \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.output) \(result.error)")
        }
        return line
    }
}

@Suite("the NAT: guest flows through host sockets", .serialized, .enabled(if: runsHere(canRunNAT), natSkipReason), .requires(canRunNAT, natSkipReason))
struct NATDaemonTests {
    @Test("DNS forwarding resists forgery and holds few descriptors: every UDP query leaves from a port of its own with an id of its own; 2,000 queries pipelined over TCP to an upstream that never answers use a few reused connections, and the daemon's open files come back", arguments: ["nio", "reactor"])
    func dnsForwarding(engine: String) throws {
        let observer = try LineProcess("/usr/bin/env", ["python3", "-c", dnsObserverScript])
        let port = try #require(Int(observer.readLine()), "the DNS observer did not start")
        defer { withExtendedLifetime(observer) {} }  // alive to the end of the test
        func report() -> [Int] {
            observer.send("report")
            return observer.readLine().split(separator: " ").compactMap { Int($0) }
        }
        let daemon = try natDaemon("dnshard-\(engine)", ["--dns-upstream", "127.0.0.1:\(port)", "--io-engine", engine])
        defer { _ = daemon.stop() }
        let resources = ProcessResources(pid: daemon.process.processIdentifier)
        let baseline = resources.openFiles

        #expect(try daemon.guest("dnsudpmany", "192.168.65.1", "53", "40") == "ok dnsudpmany answered 40")
        let udp = report()
        try #require(udp.count == 5, "\(udp)")
        // 40 queries, 40 tries: source ports drawn at random from 64,512 and ids from 65,536 collide
        // rarely (a pair among 40: about 1.2 %); one fixed port or a predictable sequence fails.
        #expect(udp[0] == 40, "\(udp)")
        #expect(udp[1] >= 38 && udp[2] >= 38, "distinct source ports and ids among 40 queries: \(udp)")
        // Their sockets closed with their answers.
        #expect(resources.waitForOpenFiles(atMost: baseline, seconds: 5) <= baseline)

        _ = try daemon.guest("dnstcppipeline", "192.168.65.1", "53", "2000", timeout: 60)
        // Right after: the pending tries (256 at most, the rest answered SERVFAIL at once) are on
        // one connection; before, each try opened a connection of its own (2,000 descriptors).
        #expect(resources.openFiles <= baseline + 8, "open files \(resources.openFiles), baseline \(baseline)")
        usleep(2_000_000)
        let tcp = report()
        try #require(tcp.count == 5, "\(tcp)")
        #expect(tcp[3] >= 1 && tcp[3] <= 8, "upstream TCP connections: \(tcp)")
        #expect(tcp[4] >= 256, "queries carried over TCP: \(tcp)")
        // The guest closed: its tries are abandoned and the idle connection closes after 10 s.
        let after = resources.waitForOpenFiles(atMost: baseline, seconds: 20)
        #expect(after <= baseline, "open files \(after), baseline \(baseline)")
    }

    @Test("HTTP to the host by name and by the host alias; DNS: built-in names, forwarding, SERVFAIL", arguments: ["nio", "reactor"])
    func httpAndDNS(engine: String) throws {
        let host = try HostServers()
        let daemon = try natDaemon("http-\(engine)", ["--dns-upstream", "127.0.0.1:\(host.dns)", "--io-engine", engine])
        defer { _ = daemon.stop() }
        for url in ["http://host.internal:\(host.http)/", "http://192.168.65.2:\(host.http)/"] {
            let page = try daemon.namespace.exec(["curl", "-sS", "--max-time", "20", url], timeout: 30)
            #expect(page.output == "hello from the host\n", "\(url): \(page.error)")
        }
        #expect(try daemon.guest("dns", "192.168.65.1", "53", "host.internal").hasPrefix("ok dns rcode 0 answers 192.168.65.2 "))
        #expect(try daemon.guest("dns", "192.168.65.1", "53", "gateway.internal").hasPrefix("ok dns rcode 0 answers 192.168.65.1 "))
        #expect(try daemon.guest("dns", "192.168.65.1", "53", "anything.example").hasPrefix("ok dns rcode 0 answers 198.51.100.7 "))
        // Over TCP: answered locally, and forwarded (upstream over TCP: the fake upstream has none,
        // so that one must come back SERVFAIL, not hang).
        #expect(try daemon.guest("dnstcp", "192.168.65.1", "53", "host.internal").hasPrefix("ok dns rcode 0 answers 192.168.65.2 "))
        let resolved = try daemon.namespace.exec(["getent", "ahostsv4", "host.internal"], timeout: 20)
        #expect(resolved.output.hasPrefix("192.168.65.2"), "getent: \(resolved.output) \(resolved.error)")
        // With IPv6 on (the default) host.internal has an AAAA record too, which `getent hosts` prefers.
        let either = try daemon.namespace.exec(["getent", "hosts", "host.internal"], timeout: 20)
        #expect(either.output.hasPrefix("fd00:65::2 "), "getent: \(either.output) \(either.error)")

        let silent = try natDaemon("dns-silent-\(engine)", ["--dns-upstream", "127.0.0.1:\(host.silentDNS)", "--io-engine", engine])
        defer { _ = silent.stop() }
        let answer = try silent.guest("dns", "192.168.65.1", "53", "anything.example")
        #expect(answer.hasPrefix("ok dns rcode 2 answers -"), "\(answer)")
        let seconds = Double(answer.split(separator: " ").last!.dropLast()) ?? 99
        #expect(seconds < 9, "SERVFAIL after \(seconds) s")
    }

    @Test("256 MiB down and up by hash, 1000 short connections, a closed host port refused at once", arguments: ["nio", "reactor"])
    func tcp(engine: String) throws {
        let host = try HostServers()
        let daemon = try natDaemon("tcp-\(engine)", ["--io-engine", engine])
        let size = 256 << 20
        let down = try daemon.guest("download", "192.168.65.2", "\(host.tcp)", "\(size)", timeout: 300)
        let up = try daemon.guest("upload", "192.168.65.2", "\(host.tcp)", "\(size)", timeout: 300)
        let short = try daemon.guest("short", "host.internal", "\(host.tcp)", "1000", timeout: 300)
        let refused = try daemon.guest("refused", "192.168.65.2", "1")
        print("NAT tcp: \(down); \(up); \(short); \(refused)")
        let seconds = Double(refused.split(separator: " ").last!.dropLast()) ?? 99
        #expect(seconds < 1, "refusal took \(seconds) s")
        let stopped = daemon.stop()
        #expect(stopped.status == 0)
        #expect(stopped.stderr.contains("nat: tcp_flows=") && stopped.stderr.contains("tcp_connects_started="), "\(stopped.stderr)")
    }

    @Test("UDP: 20,000 datagrams of mixed sizes, none lost; a 60,000-byte datagram whole; a closed port is refused", arguments: ["nio", "reactor"])
    func udp(engine: String) throws {
        let host = try HostServers()
        let daemon = try natDaemon("udp-\(engine)", ["--io-engine", engine])
        defer { _ = daemon.stop() }
        let many = try daemon.guest("udp", "192.168.65.2", "\(host.udp)", "20000", timeout: 300)
        #expect(many.hasPrefix("ok udp 20000 datagrams"))
        // Request-answer and bursts on one flow, in turn: both readers change how much they read
        // per wakeup, and nothing may be left unread.
        #expect(try daemon.guest("udpphases", "192.168.65.2", "\(host.udp)", "0", timeout: 120) == "ok udpphases 2120")
        #expect(try daemon.guest("udpbig", "192.168.65.2", "\(host.udp)", "60000").hasPrefix("ok udpbig 60000"))
        // A port nobody listens on: the host's ICMP port unreachable comes back to the guest.
        #expect(try daemon.guest("udpclosed", "192.168.65.2", "9") == "ok udp refused")
    }

    @Test("--no-host-loopback refuses the host alias (TCP and UDP; ping is the stack's own); --max-connections 5 refuses the sixth", arguments: ["nio", "reactor"])
    func limits(engine: String) throws {
        let host = try HostServers()
        let closed = try natDaemon("noloop-\(engine)", ["--no-host-loopback", "--io-engine", engine])
        #expect(try closed.guest("refused", "192.168.65.2", "\(host.tcp)").hasPrefix("ok refused"))
        // The host's UDP echo is there, but the guest must not reach it.
        #expect(try closed.guest("udpclosed", "192.168.65.2", "\(host.udp)").hasPrefix("ok udp refused"))
        // The alias answers ping itself (the stack owns it); nothing goes to the host's loopback.
        let ping = try closed.namespace.exec(["ping", "-c", "1", "-W", "2", "192.168.65.2"], timeout: 10)
        #expect(ping.status == 0)
        _ = closed.stop()
        let limited = try natDaemon("maxconn-\(engine)", ["--max-connections", "5", "--io-engine", engine])
        defer { _ = limited.stop() }
        #expect(try limited.guest("hold", "192.168.65.2", "\(host.tcp)", "5").hasPrefix("ok hold 5"))
    }

    @Test("ping: the gateway and the host alias answer; an outside address is pinged through the host", arguments: ["nio", "reactor"])
    func ping(engine: String) throws {
        // The daemon's host side is a namespace of its own with a veth to a peer namespace, so the
        // outside address is one this test made.
        let hostSide = try TestNamespace("pinghost-\(engine)")
        let peer = try TestNamespace("pingpeer-\(engine)")
        try hostSide.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", peer.name)
        try hostSide.ip("addr", "add", "198.18.0.1/24", "dev", "veth0")
        try hostSide.ip("link", "set", "veth0", "up")
        try peer.ip("addr", "add", "198.18.0.2/24", "dev", "veth1")
        try peer.ip("link", "set", "veth1", "up")
        let daemon = try Daemon(label: "ping-\(engine)", arguments: ["--io-engine", engine], address: "192.168.65.3/24", hostNamespace: hostSide.name)
        defer { _ = daemon.stop() }
        try daemon.namespace.ip("route", "add", "default", "via", "192.168.65.1")
        for target in ["192.168.65.1", "192.168.65.2", "198.18.0.2"] {
            let ping = try daemon.namespace.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", target], timeout: 20)
            #expect(ping.status == 0 && ping.output.contains("3 received"), "ping \(target): \(ping.output) \(ping.error)")
        }
        // TCP to an address on the peer link that nobody has: the host's connect fails (no ARP
        // answer), and the guest hears "host unreachable" instead of waiting for its own timeout.
        let unreachable = try daemon.namespace.exec(["python3", "-c", natGuestScript, "unreachable", "198.18.0.99", "80"], timeout: 60)
        #expect(unreachable.output.hasPrefix("ok unreachable errno 113"), "\(unreachable.output) \(unreachable.error)")
    }

    @Test("publishing: host 127.0.0.1 ports reach a guest server; half-close works both ways; UDP too", arguments: ["nio", "reactor"])
    func publish(engine: String) throws {
        // Ports of each engine's own: the two cases run at once.
        let (tcpPort, udpPort) = engine == "nio" ? (18080, 18081) : (18082, 18083)
        let daemon = try natDaemon(
            "publish-\(engine)", ["--publish", "tcp:127.0.0.1:\(tcpPort):80", "--publish", "udp:\(udpPort):5353", "--io-engine", engine])
        defer { _ = daemon.stop() }
        let server = #"""
            import socket, sys, threading
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
            def echo():
                d, a = u.recvfrom(65535); u.sendto(d.upper(), a)
            echoer = threading.Thread(target=echo, daemon=True); echoer.start()
            l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", 80)); l.listen()
            print("listening", flush=True)
            c, a = l.accept()
            n = 0
            while True:
                d = c.recv(65536)
                if not d: break
                n += len(d)
            c.sendall(f"got {n} from {a[0]}".encode()); c.close()
            c, a = l.accept()
            c.sendall(b"banner"); c.shutdown(socket.SHUT_WR)
            n = 0
            while True:
                d = c.recv(65536)
                if not d: break
                n += len(d)
            c.close()
            print(f"second {n}", flush=True)
            # The client's datagram comes after it closes this connection: exiting now could kill
            # the echo thread before it answers.
            echoer.join(30)
            """#
        let guestServer = Process()
        guestServer.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        guestServer.arguments = ["netns", "exec", daemon.namespace.name, "python3", "-c", server]
        let out = Pipe()
        guestServer.standardOutput = out
        try guestServer.run()
        var ready = [UInt8]()
        var byte: UInt8 = 0
        while ready.last != 10, read(out.fileHandleForReading.fileDescriptor, &byte, 1) == 1 { ready.append(byte) }

        let client = #"""
            import socket, sys
            s = socket.create_connection(("127.0.0.1", \#(tcpPort)), timeout=20)
            s.sendall(b"x" * 300000); s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                d = s.recv(4096)
                if not d: break
                reply += d
            print(reply.decode())
            s = socket.create_connection(("127.0.0.1", \#(tcpPort)), timeout=20)
            banner = b""
            while True:
                d = s.recv(4096)
                if not d: break
                banner += d
            s.sendall(b"y" * 100000); s.close()
            print(banner.decode())
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
            u.sendto(b"hello", ("127.0.0.1", \#(udpPort)))
            print(u.recvfrom(100)[0].decode())
            """#
        let result = try run("/usr/bin/env", ["python3", "-c", client], timeout: 60)
        #expect(result.output == "got 300000 from 192.168.65.2\nbanner\nHELLO\n", "\(result.output) \(result.error)")
        let deadline = Date().addingTimeInterval(20)
        while guestServer.isRunning && Date() < deadline { usleep(20_000) }
        let rest = String(decoding: readAll(out.fileHandleForReading), as: UTF8.self)
        #expect(rest.contains("second 100000"), "guest server: \(rest)")
    }

    @Test("vpnkit run -- COMMAND: the command reaches the host, its exit status is returned, no namespace is left")
    func command() throws {
        let host = try HostServers()
        let before = try run("/usr/sbin/ip", ["netns", "list"]).output
        let result = try run(
            vpnkitBinary(),
            ["run", "--", "sh", "-c", "curl -sS --max-time 20 http://host.internal:\(host.http)/ && exit 3"], timeout: 90)
        #expect(result.status == 3, "\(result.output) \(result.error)")
        #expect(result.output == "hello from the host\n", "\(result.error)")
        // A namespace of ours is `vpnkit-PID`; one whose daemon still runs belongs to another run
        // (tests in parallel), one that was there before is not this run's.
        let after = try run("/usr/sbin/ip", ["netns", "list"]).output
        let leftBehind = after.split(separator: "\n").map { String($0.split(separator: " ").first ?? "") }.filter { name in
            guard name.hasPrefix("vpnkit-"), !before.contains(name), let pid = Int32(name.dropFirst("vpnkit-".count)) else { return false }
            return kill(pid, 0) != 0
        }
        #expect(leftBehind.isEmpty, "left behind: \(leftBehind) (before: \(before))")
        let failed = try run(vpnkitBinary(), ["run", "--configure", "--", "sh", "-c", "exit 0"], timeout: 60)
        #expect(failed.status == 0, "\(failed.error)")
    }

    @Test("--stats serves counters and the flow table; vpnkit stats prints them")
    func stats() throws {
        let host = try HostServers()
        let socketPath = FileManager.default.temporaryDirectory.appendingPathComponent("vk-stats-\(getpid()).sock").path
        let daemon = try natDaemon("stats", ["--stats", socketPath])
        defer { _ = daemon.stop() }
        // One connection held open while the stats are read.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        holder.arguments = ["netns", "exec", daemon.namespace.name, "python3", "-c",
            "import socket,time; s=socket.create_connection(('192.168.65.2', \(host.tcp))); s.sendall(b'hold\\n'); time.sleep(5)"]
        try holder.run()
        defer { holder.terminate() }
        usleep(1_500_000)
        // Secure default: only the daemon's owner may open the socket.
        let mode = try FileManager.default.attributesOfItem(atPath: socketPath)[.posixPermissions] as? Int
        #expect(mode == 0o600, "stats socket mode \(String(mode ?? -1, radix: 8))")
        let table = try run(vpnkitBinary(), ["stats", socketPath], timeout: 20)
        #expect(table.status == 0, "\(table.error)")
        #expect(table.output.contains("tcp open") && table.output.contains("192.168.65.2:\(host.tcp)"), "\(table.output)")
        let json = try run(vpnkitBinary(), ["stats", socketPath, "--json"], timeout: 20)
        let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        let flows = object?["flows"] as? [String: Any]
        #expect((flows?["tcpOpen"] as? Int) == 1, "\(json.output)")
        let prometheus = try run(vpnkitBinary(), ["stats", socketPath, "--prometheus"], timeout: 20)
        #expect(prometheus.output.contains("vpnkit_nat_tcp_flows 1"), "\(prometheus.output)")
    }
}
