// DNS and stateless DHCPv6 over IPv6 against the kernel: a SLAAC guest of `vpnkit run` asks the
// gateway's IPv6 address (UDP and TCP port 53) for gateway.internal and host.internal (AAAA, A,
// PTR), has a query forwarded to a fake upstream on the host's [::1], and sends a DHCPv6
// INFORMATION-REQUEST to ff02::1:2 from port 546; `vpnkit run -- CMD` lists both gateways in
// resolv.conf. Everything is python3 (no dig needed).

import Foundation
import Testing
import VPNKitTestSupport

/// A fake upstream on [::1], UDP and TCP on one port: AAAA questions are answered 2001:db8::99
/// over UDP and 2001:db8::98 over TCP, anything else NOERROR with no answers. Prints its port.
let fakeUpstream6Script = #"""
import socket, struct, sys, threading
def answer(query, address):
    i = 12
    while query[i] != 0: i += 1 + query[i]
    qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
    question = query[12:i + 5]
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if qtype == 28 else 0, 0, 0)
    body = question
    if qtype == 28:
        body += b"\xc0\x0c" + struct.pack(">HHIH", 28, 1, 30, 16) + socket.inet_pton(socket.AF_INET6, address)
    return header + body
while True:
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); udp.bind(("::1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET6); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        tcp.bind(("::1", port)); break
    except OSError:
        udp.close(); tcp.close()
tcp.listen()
def serve_udp():
    while True:
        d, a = udp.recvfrom(4096); udp.sendto(answer(d, "2001:db8::99"), a)
def serve_tcp_client(c):
    while True:
        n = c.recv(2)
        if len(n) < 2: return
        d = b""
        while len(d) < struct.unpack(">H", n)[0]: d += c.recv(4096)
        r = answer(d, "2001:db8::98"); c.sendall(struct.pack(">H", len(r)) + r)
def serve_tcp():
    while True:
        c, _ = tcp.accept(); threading.Thread(target=serve_tcp_client, args=(c,), daemon=True).start()
for target in (serve_udp, serve_tcp): threading.Thread(target=target, daemon=True).start()
print(port, flush=True)
sys.stdin.read()
"""#

/// The guest's side: DNS queries to [fd00:65::1]:53 over UDP and TCP, each printed as
/// `NAME TYPE proto: answers`, then a DHCPv6 INFORMATION-REQUEST to ff02::1:2 on tap0, its
/// REPLY's options printed as `dhcpv6 CODE HEX`.
let guestDNS6Script = #"""
import os, random, socket, struct, sys, time
SERVER = ("fd00:65::1", 53)
def query(name, qtype):
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    return q + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
def skip_name(m, i):
    while True:
        if m[i] & 0xC0 == 0xC0: return i + 2
        if m[i] == 0: return i + 1
        i += 1 + m[i]
def read_name(m, i):
    labels = []
    while m[i] != 0:
        if m[i] & 0xC0 == 0xC0: i = struct.unpack(">H", m[i:i + 2])[0] & 0x3FFF; continue
        labels.append(m[i + 1:i + 1 + m[i]].decode()); i += 1 + m[i]
    return ".".join(labels)
def answers(m):
    flags, qd, an = struct.unpack(">HHH", m[2:8])
    i = skip_name(m, 12) + 4
    out = []
    for _ in range(an):
        i = skip_name(m, i)
        t, c, ttl, n = struct.unpack(">HHIH", m[i:i + 10]); i += 10
        d = m[i:i + n]; i += n
        if t == 28: out.append(socket.inet_ntop(socket.AF_INET6, d))
        elif t == 1: out.append(socket.inet_ntop(socket.AF_INET, d))
        elif t == 12: out.append(read_name(m, i - n))
        else: out.append(f"type{t}")
    return f"rcode={flags & 15} aa={(flags >> 10) & 1} " + ",".join(out)
def ask(name, qtype, tcp):
    q = query(name, qtype)
    if tcp:
        s = socket.create_connection(SERVER, timeout=5); s.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", s.recv(2))[0]; m = b""
        while len(m) < n: m += s.recv(4096)
        s.close()
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(q, SERVER)
        m, a = s.recvfrom(4096)
        assert a[0] == SERVER[0] and a[1] == 53, f"answer from {a}"
    assert m[:2] == q[:2]
    print(name, qtype, "tcp" if tcp else "udp", answers(m), flush=True)
ptr = ".".join(reversed(socket.inet_pton(socket.AF_INET6, "fd00:65::1").hex())) + ".ip6.arpa"
for tcp in (False, True):
    for name, qtype in (("gateway.internal", 28), ("host.internal", 28), ("gateway.internal", 1), ("gateway.internal", 15), (ptr, 12), ("fwd.example", 28)):
        ask(name, qtype, tcp)
# DHCPv6 INFORMATION-REQUEST from port 546 on tap0 to ff02::1:2 port 547.
scope = socket.if_nametoindex("tap0")
mac = bytes.fromhex(open("/sys/class/net/tap0/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"tap0")
# From the link-local address, as RFC 8415 §13.1 has clients do (an unbound socket might pick the SLAAC one).
ll = next(":".join(f[0][i:i + 4] for i in range(0, 32, 4)) for f in (l.split() for l in open("/proc/net/if_inet6")) if f[5] == "tap0" and f[3] == "20")
for _ in range(100):  # until its duplicate address detection is over (bind refuses a tentative address)
    try:
        s.bind((ll, 546, 0, scope)); break
    except OSError:
        time.sleep(0.1)
tid = os.urandom(3)
duid = b"\x00\x03\x00\x01" + mac
msg = b"\x0b" + tid + struct.pack(">HH", 1, len(duid)) + duid + struct.pack(">HHH", 8, 2, 0) + struct.pack(">HHHHH", 6, 6, 23, 24, 32)
for attempt in range(3):
    s.sendto(msg, ("ff02::1:2", 547, 0, scope))
    try:
        m, a = s.recvfrom(4096)
    except socket.timeout:
        continue
    assert m[0] == 7 and m[1:4] == tid, "not our reply"
    print("dhcpv6 from", a[0].split("%")[0], a[1], flush=True)
    i = 4
    while i + 4 <= len(m):
        code, n = struct.unpack(">HH", m[i:i + 4]); print("dhcpv6", code, m[i + 4:i + 4 + n].hex(), flush=True); i += 4 + n
    break
else:
    print("dhcpv6 no reply", flush=True)
"""#

@Suite("DNS and DHCPv6 over IPv6: the gateway's fd00:65::1 answers a SLAAC guest", .serialized, .enabled(if: runsHere(canRunNAT), natSkipReason), .requires(canRunNAT, natSkipReason))
struct DNSIPv6DaemonTests {
    @Test("AAAA, A, NODATA and ip6.arpa PTR over UDP and TCP to [fd00:65::1]:53; AAAA forwarded to an upstream on [::1]; a DHCPv6 INFORMATION-REQUEST answered")
    func gatewayDNS() throws {
        let upstream = try LineProcess("/usr/bin/env", ["python3", "-c", fakeUpstream6Script])
        let port = try #require(Int(upstream.readLine().trimmingCharacters(in: .whitespaces)), "the fake upstream did not start")
        defer { withExtendedLifetime(upstream) {} }
        let daemon = try natDaemon6("dns6", ["--dns-upstream", "[::1]:\(port)", "--domain", "example.internal"])
        let result = try daemon.namespace.exec(["python3", "-c", guestDNS6Script], timeout: 60)
        let lines = Set(result.output.split(separator: "\n").map(String.init))
        let ptr = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.6.0.0.0.0.d.f.ip6.arpa"
        for proto in ["udp", "tcp"] {
            #expect(lines.contains("gateway.internal 28 \(proto) rcode=0 aa=1 fd00:65::1"), "\(result.output) \(result.error)")
            #expect(lines.contains("host.internal 28 \(proto) rcode=0 aa=1 fd00:65::2"), "\(result.output)")
            #expect(lines.contains("gateway.internal 1 \(proto) rcode=0 aa=1 192.168.65.1"), "\(result.output)")
            #expect(lines.contains("gateway.internal 15 \(proto) rcode=0 aa=1 "), "\(result.output)")
            #expect(lines.contains("\(ptr) 12 \(proto) rcode=0 aa=1 gateway.internal"), "\(result.output)")
        }
        // Forwarded to [::1]: UDP over UDP, TCP over TCP (the fake answers differ).
        #expect(lines.contains("fwd.example 28 udp rcode=0 aa=0 2001:db8::99"), "\(result.output)")
        #expect(lines.contains("fwd.example 28 tcp rcode=0 aa=0 2001:db8::98"), "\(result.output)")
        // DHCPv6: from fe80::1 port 547; server id a DUID-LL, DNS fd00:65::1, the search domain, refresh time 86400.
        #expect(lines.contains("dhcpv6 from fe80::1 547"), "\(result.output) \(result.error)")
        #expect(lines.contains { $0.hasPrefix("dhcpv6 2 00030001") }, "\(result.output)")
        #expect(lines.contains { $0.hasPrefix("dhcpv6 1 00030001") }, "\(result.output)")
        #expect(lines.contains("dhcpv6 23 fd000065000000000000000000000001"), "\(result.output)")
        #expect(lines.contains("dhcpv6 24 076578616d706c6508696e7465726e616c00"), "\(result.output)")
        #expect(lines.contains("dhcpv6 32 00015180"), "\(result.output)")
        let (status, stderr) = daemon.stop()
        #expect(status == 0, "\(stderr)")
    }

    @Test("vpnkit run -- CMD: resolv.conf lists 192.168.65.1 then fd00:65::1, and the resolver gets AAAA for host.internal through it; with --no-ipv6 neither")
    func resolvConf() throws {
        let script = #"""
            import socket
            print(open("/etc/resolv.conf").read().strip().replace("\n", "|"))
            print("aaaa", sorted({a[4][0] for a in socket.getaddrinfo("host.internal", 80, socket.AF_INET6, socket.SOCK_STREAM)}))
            """#
        let result = try run(vpnkitBinary(), ["run", "--", "python3", "-c", script], timeout: 90)
        #expect(result.status == 0, "\(result.output) \(result.error)")
        #expect(result.output.contains("nameserver 192.168.65.1|nameserver fd00:65::1"), "\(result.output) \(result.error)")
        #expect(result.output.contains("aaaa ['fd00:65::2']"), "\(result.output) \(result.error)")
        // --no-ipv6: the IPv4 gateway alone, and host.internal has no AAAA record (NODATA).
        let v4only = #"""
            import socket
            print(open("/etc/resolv.conf").read().strip().replace("\n", "|"))
            try:
                print("aaaa", socket.getaddrinfo("host.internal", 80, socket.AF_INET6, socket.SOCK_STREAM))
            except socket.gaierror as e:
                print("no aaaa", e.errno == socket.EAI_NODATA or e.errno == socket.EAI_NONAME)
            """#
        let plain = try run(vpnkitBinary(), ["run", "--no-ipv6", "--", "python3", "-c", v4only], timeout: 90)
        #expect(plain.status == 0, "\(plain.output) \(plain.error)")
        #expect(plain.output.hasPrefix("nameserver 192.168.65.1\n"), "\(plain.output)")
        #expect(!plain.output.contains("fd00:65::1"), "\(plain.output)")
        #expect(plain.output.contains("no aaaa True"), "\(plain.output) \(plain.error)")
    }

    @Test(
        "real clients in vpnkit run -- CMD: rdisc6 sees the O flag, ISC dhclient -6 -S gets the DNS server and search list by INFORMATION-REQUEST",
        .enabled(if: runsHere(dhcpv6ClientsPresent), dhcpv6ClientsSkipReason), .requires(dhcpv6ClientsPresent, dhcpv6ClientsSkipReason))
    func realClients() throws {
        let directory = try freshDirectory("vk-dhclient6-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let hook = directory.appendingPathComponent("hook").path
        let out = directory.appendingPathComponent("out").path
        try "#!/bin/sh\necho \"reason=$reason dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search\" >> \(out)\n"
            .write(toFile: hook, atomically: true, encoding: .utf8)
        chmod(hook, 0o755)
        // Wait for the link-local address (DAD done), then ask; dhclient stays in the foreground
        // (-d) and is stopped once its hook ran.
        let script = """
            for i in $(seq 100); do ip -6 addr show dev tap0 scope link | grep -v tentative | grep -q inet6 && break; sleep 0.1; done
            rdisc6 -1 -w 2000 tap0 | grep 'Stateful'
            dhclient -6 -S -1 -d -sf \(hook) -lf \(directory.path)/leases -pf \(directory.path)/pid tap0 2>/dev/null &
            for i in $(seq 100); do [ -s \(out) ] && break; sleep 0.1; done
            kill $! 2>/dev/null
            cat \(out)
            """
        let result = try run(vpnkitBinary(), ["run", "--domain", "example.internal", "--", "sh", "-c", script], timeout: 90)
        #expect(result.status == 0, "\(result.output) \(result.error)")
        #expect(result.output.range(of: #"Stateful other conf\.\s+:\s+Yes"#, options: .regularExpression) != nil, "\(result.output)")
        #expect(result.output.range(of: #"Stateful address conf\.\s+:\s+No"#, options: .regularExpression) != nil, "\(result.output)")
        #expect(result.output.contains("dns=fd00:65::1 search=example.internal."), "\(result.output) \(result.error)")
        #expect(result.error.contains("dhcpv6: received=1 replies=1"), "\(result.error)")
    }
}

let dhcpv6ClientsPresent = canRunNAT && which("dhclient") != nil && which("rdisc6") != nil
let dhcpv6ClientsSkipReason: Comment = "skipped: needs root, namespaces, python3, busybox, dhclient (isc-dhcp-client) and rdisc6 (ndisc6); CI installs them"
