import Foundation
import VPNKitTestSupport
import Testing

/// A python client for the daemon's socket framings: sends an ARP request for the gateway and an
/// ICMP echo, prints what came back.
let socketClient = #"""
import socket, struct, sys, time, uuid

path, proto = sys.argv[1], sys.argv[2]
mac = bytes.fromhex("020000000042")
gw = bytes([192, 168, 65, 1]); me = bytes([192, 168, 65, 3])

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

arp = b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + me + b"\0" * 6 + gw
payload = b"ping-through-socket" * 10
icmp = struct.pack("!BBHHH", 8, 0, 0, 0x77, 1) + payload
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, me, gw)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]

if proto == "dgram":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mine = path + ".client"
    s.bind(mine)
    s.connect(path)
    send = lambda f: s.send(f)
    recv = lambda: s.recv(70000)
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    buf = b""
    def read(n):
        global buf
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk: raise SystemExit("EOF")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out
    if proto == "vmnet":
        s.sendall(b"VMN3T" + struct.pack("<I", 22) + b"0" * 40)
        init = read(49)
        assert init[:5] == b"VMN3T", init
        s.sendall(bytes([1]) + str(uuid.uuid4()).encode() + b"\0" * 4)
        vif = read(258)
        assert vif[0] == 1, vif[:8]
        mtu, maxsize = struct.unpack("<HH", vif[1:5])
        print("vif", mtu, maxsize, vif[5:11].hex())
        send = lambda f: s.sendall(struct.pack("<H", len(f)) + f)
        recv = lambda: read(struct.unpack("<H", read(2))[0])
    else:
        send = lambda f: s.sendall(struct.pack("!I", len(f)) + f)
        recv = lambda: read(struct.unpack("!I", read(4))[0])
s.settimeout(5)
send(arp)
while True:
    f = recv()
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02":
        print("arp-reply", f[22:28].hex()); break
send(f[6:12] + mac + b"\x08\x00" + ip + icmp)
while True:
    f = recv()
    if f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0:
        print("echo-reply", f[42:].endswith(payload)); break
"""#

@Suite("vpnkit run on a VM's unix socket")
struct DaemonSocketTests {
    @Test("qemu stream, datagram and vmnet framings: ARP and ping through the daemon", arguments: ["qemu", "dgram", "vmnet"])
    func socket(kind: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vk-sock-\(getpid())-\(kind)")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("link").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vpnkitBinary())
        process.arguments = ["run", "--socket", path, "--protocol", kind, "--no-dhcp"]
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: path) && Date() < deadline { usleep(20_000) }
        let client = try run("/usr/bin/env", ["python3", "-c", socketClient, path, kind], timeout: 20)
        #expect(client.status == 0, "\(client.output) \(client.error)")
        #expect(client.output.contains("arp-reply 5a94efe40cee"), "\(client.output) \(client.error)")
        #expect(client.output.contains("echo-reply True"), "\(client.output)")
        if kind == "vmnet" { #expect(client.output.contains("vif 1500 1550")) }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let log = String(decoding: readAll(stderr.fileHandleForReading), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(log)")
        #expect(log.contains("icmp_echo_replies_sent=1"), "\(log)")
    }
}
