import Foundation
import Testing
import VPNKitTestSupport

/// A vmnet client that behaves as vpnkit's Go client (go/pkg/vmnet) does: handshake, then a bare
/// DHCP DISCOVER (xid 1, no parameter list) broadcast once a second until the first reply from port
/// 67, whose yiaddr is its address. Modes print one line each.
let vmnetClientScript = #"""
import socket, struct, sys, time
path = sys.argv[1]
def handshake(uuid, ip=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10); s.connect(path)
    s.sendall(b"VMN3T" + struct.pack("<I", 22) + b"0" * 40)
    init = b""
    while len(init) < 49: init += s.recv(49 - len(init))
    assert init[:5] == b"VMN3T", init
    if ip is None:
        s.sendall(b"\x01" + uuid.encode() + b"\0\0\0\0")
    else:
        s.sendall(b"\x08" + uuid.encode() + bytes(reversed(socket.inet_aton(ip))))
    r = b""
    while len(r) < 258:
        d = s.recv(258 - len(r))
        if not d: break
        r += d
    if r[0] == 1:
        mtu, maxp = struct.unpack("<HH", r[1:5])
        return s, r[5:11]
    return None, r[2:2 + r[1]].decode()
def frames(s):
    buf = b""
    while True:
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("<H", buf[:2])[0]:
            n = struct.unpack("<H", buf[:2])[0]
            yield buf[2:2 + n]; buf = buf[2 + n:]
        d = s.recv(65536)
        if not d: return
        buf += d
def checksum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def dhcp(s, mac):
    bootp = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0)
    bootp = bootp[:4] + bytes([1, 0, 0, 0]) + bootp[8:]
    bootp += mac + b"\0" * 10 + b"\0" * 192 + bytes([99, 130, 83, 99, 53, 1, 1, 255])
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0\0\0\0", b"\xff\xff\xff\xff")
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    frame = b"\xff" * 6 + mac + b"\x08\x00" + ip + udp
    s.sendall(struct.pack("<H", len(frame)) + frame)
    deadline = time.time() + 10; last = time.time()
    for f in frames(s):
        if time.time() > deadline: raise SystemExit("no DHCP reply")
        if time.time() - last > 1:
            s.sendall(struct.pack("<H", len(frame)) + frame); last = time.time()
        if f[0:6] not in (b"\xff" * 6, mac) or f[12:14] != b"\x08\x00": continue
        ihl = (f[14] & 15) * 4
        u = f[14 + ihl:]
        if f[23] != 17 or struct.unpack("!HH", u[:4]) != (67, 68): continue
        d = u[8:]
        if d[0] != 2 or d[4:8] != bytes([1, 0, 0, 0]): continue
        return socket.inet_ntoa(d[16:20])
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
    ip_b2 = dhcp(b, mac_b)
    print(f"ok A {mac_a.hex()} {ip_a} B {mac_b.hex()} {ip_b} C refused: {reason} D {ip_d} E {ip_e} B-after-A-left {ip_b2}")
"""#

@Suite("vpnkit's own command line, and vmnet semantics clients rely on", .serialized, .enabled(if: which("python3") != nil, "skipped: needs python3"))
struct UpstreamCommandLineTests {
    @Test("`vpnkit --ethernet PATH …` serves vmnet: a UUID keeps its MAC and address, preferred addresses are honoured or refused, a bare DISCOVER is answered")
    func vmnetSemantics() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vk-upstream-\(getpid()).sock").path
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: vpnkitBinary())
        daemon.arguments = ["--ethernet", path, "--mtu", "1500", "--listen-backlog", "32", "--host-ip", "192.168.65.2"]
        let stderr = Pipe()
        daemon.standardError = stderr
        try daemon.run()
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        waitForFile(path, timeout: 20, while: daemon)
        let result = try run("/usr/bin/env", ["python3", "-c", vmnetClientScript, path, "sequence"], timeout: 60)
        let line = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.hasPrefix("ok "), "\(result.output) \(result.error)")
        let words = line.split(separator: " ").map(String.init)
        guard words.count >= 17 else { return }
        // A and B: one UUID, one MAC, one address; C refused; D the next address; E the preferred one.
        #expect(words[2] == words[5], "MACs \(words[2]) \(words[5])")
        #expect(words[3] == "192.168.65.3" && words[6] == "192.168.65.3")
        #expect(line.contains("C refused: Preferred IP address 192.168.65.3 already used"))
        #expect(line.contains("D 192.168.65.4 "))
        #expect(line.contains("E 192.168.65.10 "))
        #expect(line.hasSuffix("B-after-A-left 192.168.65.3"))
        daemon.terminate()
        daemon.waitUntilExit()
        let log = String(decoding: readAll(stderr.fileHandleForReading), as: UTF8.self)
        #expect(log.contains("--listen-backlog 32 is accepted and ignored"), "\(log)")
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
