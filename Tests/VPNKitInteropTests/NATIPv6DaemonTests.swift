// The NAT over IPv6 against the kernel: `vpnkit run`'s guest namespace configures itself by SLAAC
// and reaches the host's ::1 through the IPv6 host alias fd00:65::2 (HTTP, UDP), pings the alias;
// with --no-host-loopback the alias refuses. Host servers listen on ::1 only.

import Foundation
import Testing
import VPNKitTestSupport

/// Host-side servers on [::1] only: HTTP serving /blob/N (the NAT tests' pattern) and a UDP echo.
/// Prints their ports on one line, then `served N SHA256` for each blob once it is written (the
/// hash of the bytes the server itself wrote).
let natHost6Script = #"""
import hashlib, http.server, random, socket, socketserver, sys, threading
BLOCK = random.Random(7).randbytes(1048573)
class Web(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(self.path[6:]) if self.path.startswith("/blob/") else 0
        self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
        size, h = n, hashlib.sha256()
        while n > 0:
            chunk = BLOCK[:n] if n < len(BLOCK) else BLOCK
            self.wfile.write(chunk); h.update(chunk); n -= len(chunk)
        print("served", size, h.hexdigest(), flush=True)
    def log_message(self, *a): pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
web = Server(("::1", 0), Web)
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); udp.bind(("::1", 0))
def echo():
    while True:
        d, a = udp.recvfrom(65535); udp.sendto(d, a)
for target in (web.serve_forever, echo):
    threading.Thread(target=target, daemon=True).start()
print(web.server_address[1], udp.getsockname()[1], flush=True)
sys.stdin.read()
"""#

/// The guest's UDP check: `count` datagrams of mixed sizes to [host]:port, one at a time, each
/// echoed intact from the address it was sent to.
let udpEcho6Script = #"""
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(5)
for i in range(count):
    d = bytes([i & 255]) * (1 + (i * 37) % 3000)
    s.sendto(d, (host, port))
    r, a = s.recvfrom(65535)
    assert r == d, f"datagram {i} differs"
    assert socket.inet_pton(socket.AF_INET6, a[0]) == socket.inet_pton(socket.AF_INET6, host), f"reply from {a[0]}"
print(f"ok udp6 {count}")
"""#

/// A `vpnkit run` daemon (dual-stack by default) whose guest has its SLAAC address in fd00:65::/64
/// (and `address` on tap0 when given: else no IPv4 address at all).
func natDaemon6(_ label: String, _ arguments: [String], address: String? = nil) throws -> Daemon {
    let daemon = try Daemon(label: label, arguments: arguments, address: address)
    if try daemon.waitForSLAAC() { return daemon }
    _ = daemon.stop()
    throw NamespaceError(message: "\(label): no SLAAC address in fd00:65::/64")
}

extension Daemon {
    /// Waits up to `timeout` seconds for the guest's tap0 to have an address in fd00:65::/64 that
    /// passed duplicate address detection; false when it never does.
    func waitForSLAAC(timeout: Double = 20) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let shown = try namespace.ip("-6", "addr", "show", "dev", "tap0", "scope", "global").output
            if shown.contains("inet6 fd00:65:") && !shown.contains("tentative") { return true }
            usleep(100_000)
        }
        return false
    }
}

@Suite("the NAT over IPv6: the guest reaches the host's ::1 through fd00:65::2", .serialized, .enabled(if: runsHere(canRunNAT), natSkipReason), .requires(canRunNAT, natSkipReason))
struct NATIPv6DaemonTests {
    @Test("HTTP from a server on [::1] through http://[fd00:65::2]:PORT/ and http://host.internal:PORT/ (AAAA from the gateway; 64 MiB each, SHA-256 computed by the host server and by the guest), 300 UDP echoes, ping -6 the alias")
    func alias() throws {
        let host = try LineProcess("/usr/bin/env", ["python3", "-c", natHost6Script])
        let ports = host.readLine().split(separator: " ").compactMap { Int($0) }
        try #require(ports.count == 2, "the host servers did not start")
        defer { withExtendedLifetime(host) {} }
        let daemon = try natDaemon6("nat6", [])
        let size = 64 << 20
        let fetched = try daemon.namespace.exec(
            ["sh", "-c", "curl -sS -g --max-time 120 http://[fd00:65::2]:\(ports[0])/blob/\(size) | sha256sum"], timeout: 150)
        let served = host.readLine().split(separator: " ").map(String.init)
        try #require(served.count == 3 && served[1] == "\(size)", "host server: \(served)")
        // The guest's hash of what it received is the host's of what it sent, and the pattern's.
        #expect(fetched.output.hasPrefix(served[2] + " "), "\(fetched.output) \(fetched.error), host sent \(served[2])")
        #expect(served[2] == (try patternSHA256(size)))
        // By name: the server listens on ::1 only, so the guest must take host.internal's AAAA
        // (fd00:65::2) from the gateway's DNS and connect over IPv6 (over IPv4, 127.0.0.1 refuses).
        try daemon.namespace.setResolvConf("nameserver fd00:65::1\n")
        let named = try daemon.namespace.exec(
            ["sh", "-c", "curl -sS --max-time 120 -o /dev/stdout -w '%{stderr}%{remote_ip}' http://host.internal:\(ports[0])/blob/\(size) | sha256sum"],
            timeout: 150)
        let servedNamed = host.readLine().split(separator: " ").map(String.init)
        try #require(servedNamed.count == 3 && servedNamed[1] == "\(size)", "host server: \(servedNamed)")
        #expect(named.output.hasPrefix(servedNamed[2] + " ") && servedNamed[2] == served[2], "\(named.output) \(named.error)")
        #expect(named.error.hasSuffix("fd00:65::2"), "curl connected to \(named.error)")
        let udp = try daemon.namespace.exec(["python3", "-c", udpEcho6Script, "fd00:65::2", "\(ports[1])", "300"], timeout: 90)
        #expect(udp.output.hasPrefix("ok udp6 300"), "\(udp.output) \(udp.error)")
        let ping = try daemon.namespace.exec(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fd00:65::2"], timeout: 30)
        #expect(pingSummary(ping.output)?.received == 3, "\(ping.output) \(ping.error)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("tcp_connects_succeeded=2") && stderr.contains("udp_datagrams_to_guest=300"), "\(stderr)")
    }

    @Test("--no-host-loopback: TCP to [fd00:65::2] is refused at once (RST), though the host server is there")
    func noHostLoopback() throws {
        let host = try LineProcess("/usr/bin/env", ["python3", "-c", natHost6Script])
        let ports = host.readLine().split(separator: " ").compactMap { Int($0) }
        try #require(ports.count == 2, "the host servers did not start")
        defer { withExtendedLifetime(host) {} }
        let daemon = try natDaemon6("nat6noloop", ["--no-host-loopback"])
        defer { _ = daemon.stop() }
        // The guest's connect fails with ECONNREFUSED (a RST), within a second.
        let refused = try daemon.guest("refused", "fd00:65::2", "\(ports[0])")
        let seconds = Double(refused.split(separator: " ").last!.dropLast()) ?? 99
        #expect(refused.hasPrefix("ok refused") && seconds < 1, "\(refused)")
    }

    @Test("an outside IPv6 host (a namespace behind a veth): ping -6 through the host's ICMPv6 socket, TCP byte-exact, 1,000 UDP datagrams echoed with none lost or duplicated, a closed port RST, an absent neighbour unreachable; a host without IPv6 routes: unreachable at once")
    func outside() throws {
        // The daemon's host side is a namespace of its own with a veth to a peer namespace, both on
        // a documentation prefix, so every outside address is one this test made.
        let hostSide = try TestNamespace("nat6host")
        let peer = try TestNamespace("nat6peer")
        try hostSide.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", peer.name)
        try hostSide.ip("-6", "addr", "add", "2001:db8:6::1/64", "dev", "veth0", "nodad")
        try hostSide.ip("link", "set", "veth0", "up")
        try peer.ip("-6", "addr", "add", "2001:db8:6::2/64", "dev", "veth1", "nodad")
        try peer.ip("link", "set", "veth1", "up")
        try peer.ip("link", "set", "lo", "up")
        let server = #"""
            import socket
            l = socket.socket(socket.AF_INET6); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            l.bind(("2001:db8:6::2", 8080)); l.listen()
            print("listening", flush=True)
            c, a = l.accept()
            while True:
                d = c.recv(65536)
                if not d: break
                c.sendall(d)
            c.close()
            """#
        let echo = try LineProcess("/usr/bin/env", ["ip", "netns", "exec", peer.name, "python3", "-c", server])
        let udpEcho = try LineProcess("/usr/bin/env", ["ip", "netns", "exec", peer.name, "python3", "-c", udpEcho6ServerScript, "2001:db8:6::2", "8081"])
        defer { withExtendedLifetime(udpEcho) {} }
        #expect(udpEcho.readLine() == "listening")
        defer { withExtendedLifetime(echo) {} }  // alive to the end of the test
        #expect(echo.readLine() == "listening")
        let daemon = try Daemon(label: "nat6out", arguments: [], address: "192.168.65.3/24", hostNamespace: hostSide.name)
        defer { _ = daemon.stop() }
        try #require(try daemon.waitForSLAAC(), "no SLAAC address")
        let ping = try daemon.namespace.exec(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "2001:db8:6::2"], timeout: 30)
        #expect(pingSummary(ping.output)?.received == 3, "\(ping.output) \(ping.error)")
        let bytes = #"""
            import socket, sys, random
            data = random.Random(3).randbytes(1 << 20)
            s = socket.create_connection(("2001:db8:6::2", 8080), timeout=20)
            s.sendall(data); s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                d = s.recv(65536)
                if not d: break
                got += d
            assert got == data, f"got {len(got)} bytes"
            print("ok tcp6", len(got))
            """#
        let tcp = try daemon.namespace.exec(["python3", "-c", bytes], timeout: 60)
        #expect(tcp.output.hasPrefix("ok tcp6 1048576"), "\(tcp.output) \(tcp.error)")
        // 1,000 numbered datagrams of mixed sizes, 16 in flight: each echoed exactly once.
        let udp = try daemon.namespace.exec(["python3", "-c", udpWindowed6Script, "2001:db8:6::2", "8081", "1000"], timeout: 120)
        #expect(udp.output.hasPrefix("ok udp6 1000 echoed, 0 lost, 0 duplicated"), "\(udp.output) \(udp.error)")
        let refused = try daemon.guest("refused", "2001:db8:6::2", "9")
        #expect(refused.hasPrefix("ok refused"), "\(refused)")
        // Nobody has ::99 on the peer link: the host's connect fails when neighbour discovery gives
        // up, and the guest hears "address unreachable" (EHOSTUNREACH, 113), not its own timeout.
        let absent = try daemon.guest("unreachable", "2001:db8:6::99", "80", timeout: 60)
        #expect(absent.hasPrefix("ok unreachable errno 113"), "\(absent)")
        // No route on the host for another prefix: unreachable at once (ENETUNREACH, 101).
        let noRoute = try daemon.guest("unreachable", "2001:db8:7::1", "80")
        #expect(noRoute.hasPrefix("ok unreachable errno 101"), "\(noRoute)")
        let seconds = Double(noRoute.split(separator: " ").last!.dropLast()) ?? 99
        #expect(seconds < 1, "\(noRoute)")
    }
}

/// A UDP echo on [HOST]:PORT (argv 1, 2), for a namespace of the test's own. Prints `listening`;
/// exits at the end of its input (when its `LineProcess` is released).
let udpEcho6ServerScript = #"""
import socket, sys, threading
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
u.bind((sys.argv[1], int(sys.argv[2])))
def echo():
    while True:
        d, a = u.recvfrom(65535); u.sendto(d, a)
threading.Thread(target=echo, daemon=True).start()
print("listening", flush=True)
sys.stdin.read()
"""#

/// `count` numbered datagrams of mixed sizes to [host]:port over IPv6, at most 16 in flight (so
/// no socket buffer overflows), no retransmission: each must come back exactly once, intact, from
/// the address it was sent to. Prints what came back, lost and duplicated.
let udpWindowed6Script = #"""
import random, socket, struct, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.settimeout(5)
rng = random.Random(11)
sizes = [rng.choice([4, 64, 512, 1200, 1400, 3000, 8000]) for _ in range(count)]
def payload(i): return struct.pack(">I", i) + bytes([i & 255]) * (sizes[i] - 4)
seen = [0] * count; sent = 0; inflight = 0; window = 16; duplicated = 0
try:
    while sent < count or inflight > 0:
        while sent < count and inflight < window:
            s.sendto(payload(sent), (host, port)); sent += 1; inflight += 1
        d, a = s.recvfrom(65535)
        i = struct.unpack(">I", d[:4])[0]
        assert d == payload(i), f"datagram {i} differs"
        assert socket.inet_pton(socket.AF_INET6, a[0]) == socket.inet_pton(socket.AF_INET6, host), f"from {a[0]}"
        seen[i] += 1
        if seen[i] > 1: duplicated += 1
        else: inflight -= 1
except socket.timeout:
    pass
s.settimeout(0.5)  # a duplicate arriving late still counts
try:
    while True:
        d, a = s.recvfrom(65535); i = struct.unpack(">I", d[:4])[0]; seen[i] += 1; duplicated += 1
except socket.timeout:
    pass
lost = sum(1 for n in seen if n == 0)
print(f"ok udp6 {count - lost} echoed, {lost} lost, {duplicated} duplicated")
"""#
