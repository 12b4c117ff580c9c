import Foundation
import Testing
import VPNKitTestSupport

/// A vmnet client that sends what vpnkit's Go client (moby/vpnkit go/pkg/vmnet/vmnet.go, v0.5.0 as
/// rootlesskit up to 2.3.4 pins it, and v0.6.0 = master since) sends, byte for byte and write for
/// write, learned by reading that file:
/// - the init message in three writes: "VMN3T", version 22 (u32 LE), a 40-byte commit of the
///   digits 0-9 four times; the server's 49-byte init is read and not checked;
/// - the command in three writes: type 1 (or 8 with a preferred address), the UUID as 36 lowercase
///   characters, the address as a u32 LE of its big-endian value (octets reversed); the reply's
///   first byte 1 is followed by MTU and max packet size (u16 LE), the MAC and 247 discarded bytes,
///   anything else by a 1-byte length and an error text;
/// - each frame as a u16 LE length and the frame, in two writes;
/// - its DHCP DISCOVER: 286 bytes, broadcast, IPv4 id 0x7f61, TTL 64, **header checksum 0**, UDP
///   68→67 with checksum 0, BOOTP flags 0x8000, xid 01 00 00 00, chaddr the MAC, the cookie, then
///   only option 53 = DISCOVER and END (244 bytes of BOOTP, no padding), sent at once and again
///   every second until a reply is taken, with no timeout of its own (the script gives up after 10 s);
/// - the reply taken by both of its parsers: v0.5.0's (any destination MAC, IHL from the first IP
///   byte, UDP 67→68, at least 243 bytes of BOOTP, bytes 240-242 = 35 01 02: option 53 = OFFER
///   first) and master's (destination broadcast or its MAC, UDP 67→68, at least 243 bytes, op 2, xid
///   01 00 00 00); both read yiaddr at BOOTP offset 16. Each prints its result; they must agree.
/// Modes print one line each.
let vmnetClientScript = #"""
import socket, struct, sys, time, uuid as uuidlib
path = sys.argv[1]
def handshake(uuid, ip=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10); s.connect(path)
    for part in (b"VMN3T", struct.pack("<I", 22), b"0123456789" * 4): s.sendall(part)
    init = b""
    while len(init) < 49: init += s.recv(49 - len(init))
    address = b"\0\0\0\0" if ip is None else struct.pack("<I", struct.unpack("!I", socket.inet_aton(ip))[0])
    for part in (b"\x01" if ip is None else b"\x08", uuid.encode(), address): s.sendall(part)
    def exactly(n):
        got = b""
        while len(got) < n:
            d = s.recv(n - len(got))
            if not d: raise SystemExit("connection closed in the response")
            got += d
        return got
    kind = exactly(1)[0]
    if kind == 1:
        mtu, maxp = struct.unpack("<HH", exactly(4)); mac = exactly(6); exactly(247)
        return s, mac
    n = exactly(1)[0]
    return None, exactly(n).decode()
def frames(s):
    buf = b""
    while True:
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("<H", buf[:2])[0]:
            n = struct.unpack("<H", buf[:2])[0]
            yield buf[2:2 + n]; buf = buf[2 + n:]
        try:
            d = s.recv(65536)
        except socket.timeout:
            yield None; continue
        if not d: return
        buf += d
def drain(s):
    s.settimeout(0.2)
    try:
        while s.recv(65536): pass
    except socket.timeout: pass
def send_frame(s, frame):
    s.sendall(struct.pack("<H", len(frame))); s.sendall(frame)
def discover(mac):
    bootp = bytes([1, 1, 6, 0]) + bytes([1, 0, 0, 0]) + b"\0\0" + b"\x80\x00" + b"\0" * 16 + mac + b"\0" * 10 + b"\0" * 192
    bootp += bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 255])
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x7f61, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4)
    frame = b"\xff" * 6 + mac + b"\x08\x00" + ip + udp
    assert len(frame) == 286 and len(bootp) == 244
    return frame
def parse_v050(f):
    if len(f) < 14: return None
    p = f[14:]
    if len(p) < 20: return None
    u = p[(p[0] & 0x0f) * 4:]
    if len(u) < 8 or struct.unpack("!HH", u[:4]) != (67, 68): return None
    d = u[8:]
    if len(d) < 243 or d[240:243] != b"\x35\x01\x02": return None
    return socket.inet_ntoa(d[16:20])
def parse_master(f, mac):
    if len(f) < 14 or f[0:6] not in (b"\xff" * 6, mac): return None
    p = f[14:]
    if len(p) < 20: return None
    u = p[(p[0] & 0x0f) * 4:]
    if len(u) < 8 or struct.unpack("!HH", u[:4]) != (67, 68): return None
    d = u[8:]
    if len(d) < 243 or d[0] != 2 or d[4:8] != b"\x01\x00\x00\x00": return None
    return socket.inet_ntoa(d[16:20])
def dhcp(s, mac):
    frame = discover(mac)
    s.settimeout(0.2)
    send_frame(s, frame)
    deadline = time.time() + 10; last = time.time()
    for f in frames(s):
        if time.time() > deadline: raise SystemExit("no DHCP reply the Go client takes")
        if time.time() - last >= 1:
            send_frame(s, frame); last = time.time()
        if f is None: continue
        old, new = parse_v050(f), parse_master(f, mac)
        if old is None and new is None: continue
        s.settimeout(10)
        if old != new: raise SystemExit("the parsers disagree: v0.5.0 %s, master %s" % (old, new))
        return old
    raise SystemExit("connection closed during DHCP")
mode = sys.argv[2]
if mode == "sequence":
    a, mac_a = handshake("11111111-2222-3333-4444-555555555555")
    ip_a = dhcp(a, mac_a)
    b, mac_b = handshake("11111111-2222-3333-4444-555555555555")
    ip_b = dhcp(b, mac_b)
    c, reason = handshake("99999999-2222-3333-4444-555555555555", ip_a)
    assert c is None, "a preferred address in use was granted"
    d, mac_d = handshake("99999999-2222-3333-4444-555555555555")
    ip_d = dhcp(d, mac_d)
    e, mac_e = handshake("aaaaaaaa-2222-3333-4444-555555555555", "192.168.65.10")
    ip_e = dhcp(e, mac_e)
    a.close()
    time.sleep(0.3)
    # The OFFERs to D and E went out as broadcasts (their BOOTP broadcast flag) and wait in B's
    # socket; the Go client's parsers would take the first (same xid), so they are read away first.
    drain(b)
    ip_b2 = dhcp(b, mac_b)
    print(f"ok A {mac_a.hex()} {ip_a} B {mac_b.hex()} {ip_b} C refused: {reason} D {ip_d} E {ip_e} B-after-A-left {ip_b2}")
elif mode == "rootlesskit":
    # rootlesskit's vpnkit driver: the parent connects with a random UUID, takes an address by DHCP
    # and keeps that connection open without ever reading it again; the child connects again with
    # the same UUID and runs DHCP again; its tap carries the parent's MAC and the parent's address.
    u = str(uuidlib.uuid4())
    parent, mac_p = handshake(u)
    ip_p = dhcp(parent, mac_p)
    child, mac_c = handshake(u)
    ip_c = dhcp(child, mac_c)
    # The child's link works while the parent's connection sits unread: ping the gateway from the
    # parent's address and MAC, many times, so that broadcasts and replies would fill the parent's
    # socket if they still went there.
    def ping(seq):
        icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, seq) + b"x" * 1000
        t = sum(struct.unpack("!%dH" % (len(icmp) // 2), icmp)); t = (t & 0xffff) + (t >> 16); t = (t & 0xffff) + (t >> 16)
        icmp = icmp[:2] + struct.pack("!H", ~t & 0xffff) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, socket.inet_aton(ip_p), socket.inet_aton("192.168.65.1"))
        t = sum(struct.unpack("!10H", ip)); t = (t & 0xffff) + (t >> 16); t = (t & 0xffff) + (t >> 16)
        ip = ip[:10] + struct.pack("!H", ~t & 0xffff) + ip[12:]
        return ip + icmp
    # The gateway's MAC, by ARP from the child.
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_c + socket.inet_aton(ip_p) + b"\0" * 6 + socket.inet_aton("192.168.65.1")
    send_frame(child, b"\xff" * 6 + mac_c + b"\x08\x06" + arp)
    child.settimeout(5)
    gateway = None
    for f in frames(child):
        if f is not None and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02": gateway = f[22:28]; break
    replies = 0
    for seq in range(300):
        send_frame(child, gateway + mac_c + b"\x08\x00" + ping(seq))
    deadline = time.time() + 10
    for f in frames(child):
        if f is not None and f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0: replies += 1
        if replies == 300 or time.time() > deadline: break
    print(f"ok parent {mac_p.hex()} {ip_p} child {mac_c.hex()} {ip_c} gateway {gateway.hex() if gateway else None} replies {replies}")
elif mode == "steal":
    # Two guests on one switch; B tries to take A's place: it sends from A's MAC, claims A's address
    # by ARP, and releases A's lease. None of it may work, and A's link must keep working.
    def csum(data):
        if len(data) % 2: data += b"\0"
        t = sum(struct.unpack("!%dH" % (len(data) // 2), data)); t = (t & 0xffff) + (t >> 16); t = (t & 0xffff) + (t >> 16)
        return ~t & 0xffff
    def ipv4(src, proto, payload, ident):
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton("192.168.65.1"))
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
    def echo(src, ident, seq):
        icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"y" * 56
        return ipv4(src, 1, icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:], seq)
    def arp(op, sha, spa, tha):
        return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + socket.inet_aton(spa) + tha + socket.inet_aton("192.168.65.1")
    def replies(s, ident, want, seconds):
        s.settimeout(0.2); got = 0; deadline = time.time() + seconds
        for f in frames(s):
            if f is not None and f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0 and struct.unpack("!H", f[38:40])[0] == ident: got += 1
            if got == want or time.time() > deadline: return got
        return got
    a, mac_a = handshake(str(uuidlib.uuid4()))
    ip_a = dhcp(a, mac_a)
    b, mac_b = handshake(str(uuidlib.uuid4()))
    ip_b = dhcp(b, mac_b)
    # A resolves the gateway: the stack learns A's address at A's MAC.
    send_frame(a, b"\xff" * 6 + mac_a + b"\x08\x06" + arp(1, mac_a, ip_a, b"\0" * 6))
    a.settimeout(5); gateway = None
    for f in frames(a):
        if f is not None and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02": gateway = f[22:28]; break
    # B: A's address at B's MAC, by reply and by request.
    send_frame(b, gateway + mac_b + b"\x08\x06" + arp(2, mac_b, ip_a, gateway))
    send_frame(b, b"\xff" * 6 + mac_b + b"\x08\x06" + arp(1, mac_b, ip_a, b"\0" * 6))
    # B: pings from A's MAC and address, whose replies would reach A.
    for seq in range(10): send_frame(b, gateway + mac_a + b"\x08\x00" + echo(ip_a, 0x6666, seq))
    # B: a RELEASE of A's lease, chaddr A's MAC, in a frame from B's MAC.
    bootp = bytes([1, 1, 6, 0]) + b"\x02\0\0\0" + b"\0\0\0\0" + socket.inet_aton(ip_a) + b"\0" * 12 + mac_a + b"\0" * 10 + b"\0" * 192
    bootp += bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 7, 54, 4]) + socket.inet_aton("192.168.65.1") + bytes([255])
    send_frame(b, gateway + mac_b + b"\x08\x00" + ipv4(ip_a, 17, struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp, 0x4242))
    time.sleep(0.5)
    # A's link still works: its pings are answered to it, and B's came to no one.
    for seq in range(10): send_frame(a, gateway + mac_a + b"\x08\x00" + echo(ip_a, 0x1234, seq))
    mine = replies(a, 0x1234, 10, 5)
    stolen = replies(a, 0x6666, 10, 0.5)
    print(f"ok A {mac_a.hex()} {ip_a} B {mac_b.hex()} {ip_b} gateway {gateway.hex() if gateway else None} replies {mine} stolen {stolen}")
"""#

@Suite("vpnkit's own command line, and vmnet semantics clients rely on", .serialized, .enabled(if: runsHere(which("python3") != nil), "skipped: needs python3"), .requires(which("python3") != nil, "skipped: needs python3"))
struct UpstreamCommandLineTests {
    @Test("`vpnkit --ethernet PATH …` serves vmnet: a UUID keeps its MAC and address, preferred addresses are honoured or refused, a bare DISCOVER is answered")
    func vmnetSemantics() throws {
        let daemon = try VmnetDaemon("upstream") { ["--ethernet", $0, "--mtu", "1500", "--listen-backlog", "32", "--host-ip", "192.168.65.2"] }
        let (line, words) = try daemon.client("sequence")
        guard words.count >= 17 else { return }
        // A and B: one UUID, one MAC, one address; C refused; D the next address; E the preferred one.
        #expect(words[2] == words[5], "MACs \(words[2]) \(words[5])")
        #expect(words[3] == "192.168.65.3" && words[6] == "192.168.65.3")
        #expect(line.contains("C refused: Preferred IP address 192.168.65.3 already used"))
        #expect(line.contains("D 192.168.65.4 "))
        #expect(line.contains("E 192.168.65.10 "))
        #expect(line.hasSuffix("B-after-A-left 192.168.65.3"))
        let log = daemon.stopAndReadLog()
        #expect(log.contains("--listen-backlog 32 is accepted and ignored"), "\(log)")
    }

    @Test("rootlesskit's pattern: the parent's connection stays open and unread, the child connects again with the same UUID and gets the same MAC and address, and its link works")
    func rootlesskitPattern() throws {
        // `vpnkit --ethernet PATH` is this command (see `vmnetSemantics`); --stats to read the counters.
        let daemon = try VmnetDaemon("rootlesskit", withStats: true) { ["run", "--socket", $0, "--protocol", "vmnet", "--mtu", "1500"] }
        let (line, words) = try daemon.client("rootlesskit")
        guard words.count == 11 else { return }
        #expect(words[2] == words[5], "the child got another MAC: \(line)")
        #expect(words[3] == words[6] && words[3].hasPrefix("192.168.65."), "the child was offered another address: \(line)")
        #expect(words[8] != "None", "no ARP reply on the child's connection")
        #expect(words[10] == "300", "echo replies on the child's connection: \(line)")
        // The Go client's DISCOVER has a zero IPv4 header checksum: taken, and counted as such.
        let (json, object) = try daemon.stats()
        let stack = object["stack"] as? [String: Any] ?? [:]
        #expect((stack["ipv4_zero_checksum_accepted"] as? Int ?? 0) >= 2, "\(json)")
        #expect((stack["ipv4_bad_checksum"] as? Int ?? -1) == 0, "\(json)")
    }

    @Test("a second vmnet client cannot take the first's place: frames from its MAC, ARP for its address and a RELEASE of its lease are all refused and counted, and the first's link keeps working")
    func secondClientCannotSteal() throws {
        let daemon = try VmnetDaemon("steal", withStats: true) { ["run", "--socket", $0, "--protocol", "vmnet", "--mtu", "1500"] }
        let (line, words) = try daemon.client("steal")
        guard words.count == 13 else { return }
        #expect(words[2] != words[5] && words[3] != words[6], "two clients, two identities: \(line)")
        #expect(words[8] != "None", "no ARP reply on A's connection")
        #expect(words[10] == "10", "A's echo replies after B's attempts: \(line)")
        #expect(words[12] == "0", "replies to B's pings from A's MAC reached A: \(line)")
        let (json, object) = try daemon.stats()
        let stack = object["stack"] as? [String: Any] ?? [:]
        let link = (object["switch"] as? [String: Any])?["counters"] as? [String: Any] ?? [:]
        let dhcp = object["dhcp"] as? [String: Any] ?? [:]
        #expect((link["foreign_source_drops"] as? Int ?? 0) >= 10, "\(json)")
        #expect((stack["arp_not_from_lease_holder"] as? Int ?? 0) >= 2, "\(json)")
        #expect(((dhcp["counters"] as? [String: Any])?["refused_not_from_holder"] as? Int ?? 0) == 1, "\(json)")
    }

    @Test("flags for features we do not have are refused with a message, not ignored")
    func refusals() throws {
        let refused = try run(vpnkitBinary(), ["--ethernet", "/tmp/x.sock", "--port", "/tmp/port.sock"], timeout: 20)
        #expect(refused.status == 2)
        #expect(refused.error.contains("--port is not supported"), "\(refused.error)")
        let unknown = try run(vpnkitBinary(), ["--ethernet", "/tmp/x.sock", "--frobnicate", "1"], timeout: 20)
        #expect(unknown.status == 2 && unknown.error.contains("unknown option --frobnicate"), "\(unknown.error)")
        let missing = try run(vpnkitBinary(), ["--mtu", "1500"], timeout: 20)
        #expect(missing.status == 2 && missing.error.contains("--ethernet"), "\(missing.error)")
        let help = try run(vpnkitBinary(), ["--help"], timeout: 20)
        #expect(help.status == 0 && help.output.contains("SUBCOMMANDS"), "\(help.output)")
    }
}

/// A daemon serving vmnet on a socket of its own, for `vmnetClientScript`; stopped when released.
final class VmnetDaemon {
    let process = Process()
    let path: String
    let statsPath: String?
    /// The daemon's log, in a file: a pipe nobody reads would block it once full.
    private let logPath: String

    /// Starts `vpnkit` with `arguments(path)` (plus `--stats` when `withStats`) and waits for the socket.
    init(_ label: String, withStats: Bool = false, arguments: (String) -> [String]) throws {
        let directory = FileManager.default.temporaryDirectory
        path = directory.appendingPathComponent("vk-\(label)-\(getpid()).sock").path
        statsPath = withStats ? directory.appendingPathComponent("vk-\(label)-\(getpid()).stats").path : nil
        process.executableURL = URL(fileURLWithPath: vpnkitBinary())
        process.arguments = arguments(path) + (statsPath.map { ["--stats", $0] } ?? [])
        logPath = directory.appendingPathComponent("vk-\(label)-\(getpid()).log").path
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        waitForFile(path, timeout: 20, while: process)
    }

    /// Runs the vmnet client script in `mode`; its line (expected to start with "ok ") and words.
    func client(_ mode: String) throws -> (line: String, words: [String]) {
        let result = try run("/usr/bin/env", ["python3", "-c", vmnetClientScript, path, mode], timeout: 60)
        let line = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.hasPrefix("ok "), "\(result.output) \(result.error)")
        return (line, line.split(separator: " ").map(String.init))
    }

    /// `vpnkit stats --json` of the daemon: the text and the parsed object.
    func stats() throws -> (json: String, object: [String: Any]) {
        let json = try run(vpnkitBinary(), ["stats", try #require(statsPath), "--json"], timeout: 20)
        return (json.output, try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any] ?? [:])
    }

    /// Stops the daemon and returns what it logged.
    func stopAndReadLog() -> String {
        stop()
        return (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    private func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: logPath)
    }
}
