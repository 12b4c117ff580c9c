// Published ports over both families against the kernel: `vpnkit run --publish` with [::1] and
// with no host address (both loopbacks), a guest server on [::] seeing which alias (and so which
// family) each host connection or datagram came over; a guest without IPv6; crafted IPv6 packets
// toward the host's loopback under --no-host-loopback; and a host without IPv6 at all.

import Foundation
import Testing
import VPNKitTestSupport

/// The guest's servers, dual-stack on [::] (IPv4 connections appear as ::ffff:a.b.c.d): TCP port 80
/// writes the peer's address on a line and then echoes; UDP 5353 echoes, answering `whoami` with
/// the peer's address. Prints `listening`.
let publishGuestScript = #"""
import socket, threading
def dual(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s
def serve(c, a):
    c.sendall((a[0] + "\n").encode())
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
def tcp():
    l = dual(socket.SOCK_STREAM); l.bind(("::", 80)); l.listen(16)
    while True:
        c, a = l.accept()
        threading.Thread(target=serve, args=(c, a), daemon=True).start()
def udp():
    u = dual(socket.SOCK_DGRAM); u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20); u.bind(("::", 5353))
    while True:
        d, a = u.recvfrom(65535)
        u.sendto(a[0].encode() if d == b"whoami" else d, a)
for target in (tcp, udp):
    threading.Thread(target=target, daemon=True).start()
print("listening", flush=True)
import sys; sys.stdin.read()
"""#

/// The host's client: `tcp HOST PORT SIZE` sends SIZE random bytes and checks the echo byte-exact;
/// `udp HOST PORT COUNT` sends COUNT numbered datagrams one at a time, each echoed intact. Both
/// print `ok MODE HOST PEER N` with the address the guest saw them come from (IPv4-mapped shown as
/// IPv4).
let publishHostClientScript = #"""
import random, socket, struct, sys, threading
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
if mode == "tcp":
    s = socket.socket(family); s.settimeout(30); s.connect((host, port))
    f = s.makefile("rb")
    peer = f.readline().decode().strip()
    data = random.Random(5).randbytes(n)
    def send():
        s.sendall(data); s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send); t.start()
    got = f.read()
    t.join()
    assert got == data, f"got {len(got)} of {n} bytes back"
else:
    s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(b"whoami", (host, port)); peer = s.recvfrom(100)[0].decode()
    for i in range(n):
        d = struct.pack(">I", i) + bytes([i & 255]) * (i * 37 % 1400)
        s.sendto(d, (host, port))
        r, a = s.recvfrom(65535)
        assert r == d, f"datagram {i} differs"
print(f"ok {mode} {host} {peer.removeprefix('::ffff:')} {n}")
"""#

/// Sends a hand-built TCP SYN for each target address (argv 4…) from `source` (argv 1) to port
/// argv 2, in Ethernet frames to the gateway's MAC (argv 3) on a packet socket on tap0: the guest's
/// own routing table never sees them (it would keep ::1 for itself).
let craftedSYNScript = #"""
import socket, struct, sys
source, port, gateway, targets = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3].replace(":", "")), sys.argv[4:]
mac = bytes.fromhex(open("/sys/class/net/tap0/address").read().strip().replace(":", ""))
def checksum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); p.bind(("tap0", 0))
for i, target in enumerate(targets):
    src, dst = socket.inet_pton(socket.AF_INET6, source), socket.inet_pton(socket.AF_INET6, target)
    tcp = struct.pack(">HHIIBBHHH", 41000 + i, port, 1000 + i, 0, 5 << 4, 0x02, 65535, 0, 0)
    c = checksum(src + dst + struct.pack(">I3xB", len(tcp), 6) + tcp)
    tcp = tcp[:16] + struct.pack(">H", c) + tcp[18:]
    ip = struct.pack(">IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
    p.send(gateway + mac + struct.pack(">H", 0x86DD) + ip + tcp)
print(f"ok sent {len(targets)}")
"""#

/// A host listener on [::] (dual-stack, so 127.0.0.1 too) on a free port: prints the port, then on
/// each `count` line the connections accepted so far.
let loopbackWatcherScript = #"""
import socket, sys
l = socket.socket(socket.AF_INET6); l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
l.bind(("::", 0)); l.listen(16); l.setblocking(False)
print(l.getsockname()[1], flush=True)
accepted = 0
for line in sys.stdin:
    while True:
        try:
            l.accept(); accepted += 1
        except BlockingIOError:
            break
    print(accepted, flush=True)
"""#

extension Daemon {
    /// Starts `publishGuestScript` in the guest and waits until it listens.
    func startPublishGuest() throws -> LineProcess {
        let server = try LineProcess("/usr/bin/env", ["ip", "netns", "exec", namespace.name, "python3", "-c", publishGuestScript])
        guard server.readLine() == "listening" else { throw NamespaceError(message: "the guest servers did not start") }
        return server
    }

    /// The stats JSON of the daemon's --stats socket.
    func stats(_ path: String) throws -> [String: Any] {
        let json = try run(vpnkitBinary(), ["stats", path, "--json"], timeout: 20)
        return (try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]) ?? [:]
    }
}

/// Runs the host client; its `ok …` line, or what went wrong.
func publishClient(_ mode: String, _ host: String, _ port: UInt16, _ count: Int) throws -> String {
    let result = try run("/usr/bin/env", ["python3", "-c", publishHostClientScript, mode, host, "\(port)", "\(count)"], timeout: 90)
    return result.output.hasPrefix("ok ") ? result.output.trimmingCharacters(in: .whitespacesAndNewlines) : "\(result.output) \(result.error)"
}

@Suite("published ports over both families (vpnkit run --publish)", .serialized, .enabled(if: runsHere(canRunNAT), natSkipReason), .requires(canRunNAT, natSkipReason))
struct NATIPv6PublishTests {
    @Test("an IPv6-only (SLAAC) guest: tcp:[::1] 1 MiB byte-exact and udp:[::1] 300 datagrams reach its [::] servers from fd00:65::2; a port without HOSTIP is reachable through [::1] and 127.0.0.1, both over IPv6; the stats list the listeners and print IPv6 flows in brackets")
    func ipv6OnlyGuest() throws {
        let (tcp6, udp6, both) = (try freeTCPPort(), try freeTCPPort(), try freeTCPPort())
        let stats = FileManager.default.temporaryDirectory.appendingPathComponent("vk-pub6-\(getpid()).sock").path
        let daemon = try natDaemon6("pub6", [
            "--publish", "tcp:[::1]:\(tcp6):80", "--publish", "udp:[::1]:\(udp6):5353",
            "--publish", "tcp:\(both):80", "--publish", "udp:\(both):5353", "--stats", stats,
        ])
        defer { _ = daemon.stop() }
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        let alias = "fd00:65::2"
        #expect(try publishClient("tcp", "::1", tcp6, 1 << 20) == "ok tcp ::1 \(alias) \(1 << 20)")
        #expect(try publishClient("udp", "::1", udp6, 300) == "ok udp ::1 \(alias) 300")
        // No IPv4 address in the guest: 127.0.0.1 reaches it over IPv6 too.
        for host in ["::1", "127.0.0.1"] {
            #expect(try publishClient("tcp", host, both, 100_000) == "ok tcp \(host) \(alias) 100000")
            #expect(try publishClient("udp", host, both, 20) == "ok udp \(host) \(alias) 20")
        }
        // A connection held open while the stats are read.
        let holder = try LineProcess("/usr/bin/env", ["python3", "-c",
            "import socket,sys; s=socket.create_connection(('::1', \(tcp6))); print(s.recv(100).decode().strip(), flush=True); sys.stdin.read()"])
        defer { withExtendedLifetime(holder) {} }
        #expect(holder.readLine() == alias)
        let object = try daemon.stats(stats)
        let published = object["published"] as? [String] ?? []
        for port in ["tcp:[::1]:\(tcp6):80", "udp:[::1]:\(udp6):5353", "tcp:127.0.0.1:\(both):80", "tcp:[::1]:\(both):80",
                     "udp:127.0.0.1:\(both):5353", "udp:[::1]:\(both):5353"] {
            #expect(published.contains(port), "\(port) not in \(published)")
        }
        let flows = (object["flowTable"] as? [[String: Any]] ?? []).map { "\($0["guest"] ?? "") \($0["remote"] ?? "")" }
        #expect(flows.contains { $0.hasPrefix("[fd00:65:") && $0.contains(" [\(alias)]:") && $0.contains("]:80 ") }, "\(flows)")
        let table = try run(vpnkitBinary(), ["stats", stats], timeout: 20)
        #expect(table.output.contains("PUBLISHED") && table.output.contains("tcp:[::1]:\(tcp6):80") && table.output.contains("[\(alias)]:"), "\(table.output)")
    }

    @Test("a dual-stack guest: a port without HOSTIP takes [::1] over IPv6 (from fd00:65::2) and 127.0.0.1 over IPv4 (from 192.168.65.2)")
    func dualStackGuest() throws {
        let port = try freeTCPPort()
        let daemon = try natDaemon6("pubdual", ["--publish", "tcp:\(port):80", "--publish", "udp:\(port):5353"], address: "192.168.65.3/24")
        defer { _ = daemon.stop() }
        // The guest has been seen over IPv4 (its static address, no DHCP lease).
        _ = try daemon.namespace.exec(["ping", "-c", "1", "-W", "2", "192.168.65.1"], timeout: 10)
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        #expect(try publishClient("tcp", "::1", port, 1 << 20) == "ok tcp ::1 fd00:65::2 \(1 << 20)")
        #expect(try publishClient("tcp", "127.0.0.1", port, 1 << 20) == "ok tcp 127.0.0.1 192.168.65.2 \(1 << 20)")
        #expect(try publishClient("udp", "::1", port, 100) == "ok udp ::1 fd00:65::2 100")
        #expect(try publishClient("udp", "127.0.0.1", port, 100) == "ok udp 127.0.0.1 192.168.65.2 100")
    }

    @Test("--no-ipv6: tcp:[::1] and udp:[::1] still reach the guest, over IPv4 from 192.168.65.2")
    func guestWithoutIPv6() throws {
        let (tcp, udp) = (try freeTCPPort(), try freeTCPPort())
        let daemon = try Daemon(label: "pubno6", arguments: ["--no-ipv6", "--publish", "tcp:[::1]:\(tcp):80", "--publish", "udp:[::1]:\(udp):5353"])
        defer { _ = daemon.stop() }
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        #expect(try publishClient("tcp", "::1", tcp, 1 << 20) == "ok tcp ::1 192.168.65.2 \(1 << 20)")
        #expect(try publishClient("udp", "::1", udp, 200) == "ok udp ::1 192.168.65.2 200")
    }

    @Test("--no-host-loopback: SYNs crafted in the guest to ::1, ::ffff:127.0.0.1 and ::127.0.0.1 reach no host listener, and the daemon counts them dropped (no route); one to fd00:65::2 is refused by the NAT")
    func loopbackSpellings() throws {
        let watcher = try LineProcess("/usr/bin/env", ["python3", "-c", loopbackWatcherScript])
        defer { withExtendedLifetime(watcher) {} }
        let port = watcher.readLine()
        try #require(UInt16(port) != nil, "the host listener did not start")
        let stats = FileManager.default.temporaryDirectory.appendingPathComponent("vk-pubraw-\(getpid()).sock").path
        let daemon = try natDaemon6("pubraw", ["--no-host-loopback", "--stats", stats])
        defer { _ = daemon.stop() }
        let source = try daemon.namespace.ip("-6", "addr", "show", "dev", "tap0", "scope", "global").output
            .split(separator: "\n").compactMap { line -> String? in
                let fields = line.split(separator: " ")
                guard fields.first == "inet6", fields.count > 1 else { return nil }
                return String(fields[1].split(separator: "/")[0])
            }.first
        try #require(source != nil)
        // The router's MAC, from the guest's neighbour table (a ping makes sure it is there).
        _ = try daemon.namespace.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00:65::1"], timeout: 10)
        let neighbours = try daemon.namespace.ip("-6", "neigh", "show", "dev", "tap0").output
        let gatewayMAC = neighbours.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ").map(String.init)
            guard let at = fields.firstIndex(of: "lladdr"), at + 1 < fields.count, line.hasPrefix("fe80::1 ") || line.hasPrefix("fd00:65::1 ") else { return nil }
            return fields[at + 1]
        }.first
        try #require(gatewayMAC != nil, "no router in \(neighbours)")
        func dropped() throws -> (noRoute: Int, notForUs: Int, refusedAlias: Int) {
            let object = try daemon.stats(stats)
            let stack = object["stack"] as? [String: Any] ?? [:]
            let nat = object["nat"] as? [String: Any] ?? [:]
            return (stack["ipv6_no_route"] as? Int ?? -1, stack["ipv6_not_for_us"] as? Int ?? -1, nat["tcp_refused_host_loopback"] as? Int ?? -1)
        }
        let before = try dropped()
        let sent = try daemon.namespace.exec(
            ["python3", "-c", craftedSYNScript, source!, port, gatewayMAC!, "::1", "::ffff:127.0.0.1", "::127.0.0.1", "fd00:65::2"], timeout: 20)
        #expect(sent.output.hasPrefix("ok sent 4"), "\(sent.output) \(sent.error)")
        usleep(1_500_000)
        watcher.send("count")
        #expect(watcher.readLine() == "0", "a crafted SYN reached the host listener")
        let after = try dropped()
        // Each was neither ours nor forwarded (not for us, with the guest's other multicast) and got
        // ICMPv6 no route.
        #expect(after.noRoute - before.noRoute == 3 && after.notForUs - before.notForUs >= 3, "before \(before), after \(after)")
        // The control: the same crafting toward the IPv6 host alias is taken by the stack and
        // refused by the NAT (--no-host-loopback), so the frames above were well formed.
        #expect(after.refusedAlias - before.refusedAlias == 1, "before \(before), after \(after)")
    }

    @Test("a host without IPv6 (the daemon in a namespace with IPv6 disabled): a default publish binds 127.0.0.1 only, with a notice; the guest's TCP to an outside IPv6 address is unreachable at once; DNS keeps answering")
    func hostWithoutIPv6() throws {
        // The guest's connect is answered by the daemon, whose host socket fails; what the guest
        // hears is what the host's connect(2) said.
        let hostSide = try TestNamespace("pubnoip6")
        for key in ["all", "default", "lo"] {
            let set = try hostSide.exec(["sysctl", "-qw", "net.ipv6.conf.\(key).disable_ipv6=1"])
            try #require(set.status == 0, "\(set.error)")
        }
        let port = try freeTCPPort()
        let daemon = try Daemon(label: "pubnoip6g", arguments: ["--publish", "tcp:\(port):80"], address: "192.168.65.3/24", hostNamespace: hostSide.name)
        try #require(try daemon.waitForSLAAC(), "no SLAAC address")
        #expect(daemon.process.isRunning, "the daemon exited")
        let unreachable = try daemon.guest("unreachable", "2001:db8:6::2", "80", timeout: 20)
        // The host's connect(2) fails with EADDRNOTAVAIL (no IPv6 source address): the guest hears
        // ICMPv6 no route (ENETUNREACH, 101), at once.
        #expect(unreachable.hasPrefix("ok unreachable errno 101 "), "\(unreachable)")
        let seconds = Double(unreachable.split(separator: " ").last!.dropLast()) ?? 99
        #expect(seconds < 1, "\(unreachable)")
        #expect(try daemon.guest("dns", "192.168.65.1", "53", "gateway.internal").hasPrefix("ok dns rcode 0 answers 192.168.65.1 "))
        #expect(try daemon.guest("dnstcp", "fd00:65::1", "53", "gateway.internal").hasPrefix("ok dns rcode 0 answers 192.168.65.1 "))
        // The published port works on 127.0.0.1 inside the daemon's namespace.
        let guest = try daemon.startPublishGuest()
        defer { withExtendedLifetime(guest) {} }
        let reached = try hostSide.exec(["python3", "-c", publishHostClientScript, "tcp", "127.0.0.1", "\(port)", "1000"], timeout: 60)
        #expect(reached.output.hasPrefix("ok tcp 127.0.0.1 192.168.65.2 1000"), "\(reached.output) \(reached.error)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("tcp_connects_failed=1"), "\(stderr)")
        #expect(stderr.contains("::1 cannot be bound") && stderr.contains("IPv4 only"), "\(stderr)")
    }
}
