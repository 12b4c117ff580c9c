import Foundation
import VPNKitTestSupport
import Testing

/// What both python guests below begin with: the guest's MAC and addresses, the Internet checksum,
/// an ARP request for the gateway, and a unix stream socket with buffered reads and qemu's framing
/// (a 4-byte big-endian length before each frame).
let guestPrelude = #"""
import socket, struct, sys, threading, time, uuid

mac = bytes.fromhex("020000000042")
me = bytes([192, 168, 65, 3]); gw = bytes([192, 168, 65, 1])

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def arp_request():
    return b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + me + b"\0" * 6 + gw

class Stream:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
    def read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk: raise SystemExit("EOF")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
    def qemu(self):
        return (lambda f: self.s.sendall(struct.pack("!I", len(f)) + f),
                lambda: self.read(struct.unpack("!I", self.read(4))[0]))

"""#

/// A python client for the daemon's socket framings: sends an ARP request for the gateway and an
/// ICMP echo, prints what came back.
let socketClient = guestPrelude + #"""
path, proto = sys.argv[1], sys.argv[2]
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
    stream = Stream(path)
    if proto == "vmnet":
        stream.s.sendall(b"VMN3T" + struct.pack("<I", 22) + b"0" * 40)
        init = stream.read(49)
        assert init[:5] == b"VMN3T", init
        stream.s.sendall(bytes([1]) + str(uuid.uuid4()).encode() + b"\0" * 4)
        vif = stream.read(258)
        assert vif[0] == 1, vif[:8]
        mtu, maxsize = struct.unpack("<HH", vif[1:5])
        print("vif", mtu, maxsize, vif[5:11].hex())
        send = lambda f: stream.s.sendall(struct.pack("<H", len(f)) + f)
        recv = lambda: stream.read(struct.unpack("<H", stream.read(2))[0])
    else:
        send, recv = stream.qemu()
    s = stream.s
s.settimeout(5)
send(arp_request())
while True:
    f = recv()
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02":
        print("arp-reply", f[22:28].hex()); break
send(f[6:12] + mac + b"\x08\x00" + ip + icmp)
while True:
    f = recv()
    if f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0:
        print("echo-reply", f[42:].endswith(payload)); break
# IPv6 on the same link: a router solicitation from a link-local address (hop limit 255, with the
# source link-layer option); the gateway answers with an advertisement naming its prefix.
src6 = bytes.fromhex("fe800000000000000000000000000042"); allrouters = bytes.fromhex("ff020000000000000000000000000002")
rs = struct.pack("!BBHI", 133, 0, 0, 0) + bytes([1, 1]) + mac
rs = rs[:2] + struct.pack("!H", csum(src6 + allrouters + struct.pack("!IxxxB", len(rs), 58) + rs)) + rs[4:]
send(bytes.fromhex("333300000002") + mac + b"\x86\xdd" + struct.pack("!IHBB", 0x60000000, len(rs), 58, 255) + src6 + allrouters + rs)
while True:
    f = recv()
    if f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 134:
        options = f[70:]
        while len(options) >= 8 and options[1]:
            if options[0] == 3: print("ra", socket.inet_ntop(socket.AF_INET6, options[16:32]) + "/" + str(options[2]), "from", socket.inet_ntop(socket.AF_INET6, f[22:38]))
            options = options[options[1] * 8:]
        break
"""#

/// A python guest on the daemon's qemu socket, doing TCP by hand: a connection through the NAT to an
/// echo server it runs on the host's 127.0.0.1 (prints "echo hello", or "rst" when the NAT refused),
/// a UDP datagram to a UDP echo there ("udp howdy"), then a connection to a published port from the host, which must reach it as a SYN to port 80
/// (prints "publish syn").
let natSocketClient = guestPrelude + #"""
path = sys.argv[1]
host = bytes([192, 168, 65, 2])

server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
port = server.getsockname()[1]
def echo():
    c, _ = server.accept()
    c.sendall(c.recv(100))
    c.close()
threading.Thread(target=echo, daemon=True).start()

def tcp(flags, seq, ack, data=b"", options=b""):
    offset = (20 + len(options)) // 4
    h = struct.pack("!HHIIBBHHH", 40000, port, seq, ack, offset << 4, flags, 65535, 0, 0) + options
    c = csum(me + host + struct.pack("!BBH", 0, 6, len(h) + len(data)) + h + data)
    h = h[:16] + struct.pack("!H", c) + h[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(h) + len(data), 1, 0x4000, 64, 6, 0, me, host)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + h + data

stream = Stream(path)
stream.s.settimeout(5)
send, recv = stream.qemu()

send(arp_request())
while True:
    f = recv()
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02": gwmac = f[22:28]; break
eth = gwmac + mac + b"\x08\x00"

def segment():
    while True:
        f = recv()
        if f[12:14] == b"\x08\x00" and f[23] == 6 and f[26:30] == host:
            t = f[34:]
            off = (t[12] >> 4) * 4
            seq, ack = struct.unpack("!II", t[4:12])
            total = struct.unpack("!H", f[16:18])[0]
            return t[13], seq, ack, f[34 + off:14 + total]

send(eth + tcp(0x02, 1000, 0, options=struct.pack("!BBH", 2, 4, 1460)))
flags, seq, ack, _ = segment()
if flags & 0x04: print("rst"); sys.exit(0)
assert flags & 0x12 == 0x12, hex(flags)
send(eth + tcp(0x18, 1001, seq + 1, b"hello"))
while True:
    flags, _, _, data = segment()
    if data: print("echo", data.decode()); break
    if flags & 0x04: print("rst after handshake"); break
# UDP through the NAT to an echo socket on the host's 127.0.0.1.
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
def udp_echo():
    d, a = udp.recvfrom(2048); udp.sendto(d, a)
threading.Thread(target=udp_echo, daemon=True).start()
body = struct.pack("!HHHH", 40001, udp.getsockname()[1], 8 + 5, 0) + b"howdy"
body = body[:6] + struct.pack("!H", csum(me + host + struct.pack("!BBH", 0, 17, len(body)) + body) or 0xffff) + body[8:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 2, 0, 64, 17, 0, me, host)
send(eth + ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + body)
while True:
    f = recv()
    if f[12:14] == b"\x08\x00" and f[23] == 17 and f[26:30] == host:
        print("udp", f[42:].decode()); break

# A published port: a host client's connection must reach the guest as a SYN to port 80.
client = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
while True:
    f = recv()
    if f[12:14] == b"\x08\x00" and f[23] == 6 and f[30:34] == me:
        t = f[34:]
        if struct.unpack("!H", t[2:4])[0] == 80 and t[13] & 0x02: print("publish syn"); break
"""#

/// How to run the daemon as nobody from here: nothing when we are not root, setpriv when we are; nil
/// when that cannot work (no setpriv, or nobody cannot load the binary or its toolchain's libraries).
let asNobody: [String]? = {
    guard geteuid() == 0 else { return [] }
    guard let setpriv = which("setpriv") else { return nil }
    let prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    guard let probe = try? run(prefix[0], Array(prefix.dropFirst()) + [vpnkitBinary(), "--help"], timeout: 20), probe.status == 0 else { return nil }
    return prefix
}()

@Suite("vpnkit run on a VM's unix socket")
struct DaemonSocketTests {
    @Test("the stats socket: a client that asks gets its answer; a silent one is disconnected after 5 s")
    func statsRequestTimeout() throws {
        let directory = try freshDirectory("vk-stats-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("link").path
        let stats = directory.appendingPathComponent("stats").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vpnkitBinary())
        process.arguments = ["run", "--socket", path, "--protocol", "qemu", "--stats", stats]
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        waitForFile(stats)
        let script = #"""
import json, socket, sys, time
path = sys.argv[1]
silent = socket.socket(socket.AF_UNIX); silent.connect(path); silent.settimeout(20)
t0 = time.monotonic()
asking = socket.socket(socket.AF_UNIX); asking.connect(path); asking.settimeout(5)
asking.sendall(b"json\n")
answer = b""
while True:
    chunk = asking.recv(65536)
    if not chunk: break
    answer += chunk
print("answer", "stack" in json.loads(answer))
try:
    print("silent_eof", silent.recv(1) == b"")
except OSError as e:
    print("silent_error", e)
print("silent_after", round(time.monotonic() - t0, 1))
"""#
        let client = try run("/usr/bin/env", ["python3", "-c", script, stats], timeout: 40)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(client.output.contains("answer True"), "\(client.output) \(client.error)")
        #expect(client.output.contains("silent_eof True"), "\(client.output) \(client.error)")
        let after = client.output.split(separator: "\n").first { $0.hasPrefix("silent_after ") }.flatMap { Double($0.dropFirst(13)) } ?? -1
        #expect(after >= 4 && after < 15, "\(client.output)")
    }

    @Test("the VM's socket and the stats socket appear with mode 0600, never changed after; on exit, files that replaced them stay",
          arguments: ["qemu", "dgram", "vmnet"])
    func socketFiles(kind: String) throws {
        let directory = try freshDirectory("vk-files-\(getpid())-\(kind)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("link").path
        let stats = directory.appendingPathComponent("stats").path
        // The daemon inherits our umask, 022: a plain bind would make 0755.
        let watch = try DirectoryWatch(directory.path)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vpnkitBinary())
        process.arguments = ["run", "--socket", path, "--protocol", kind, "--no-dhcp", "--stats", stats]
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        waitForFile(path, while: process)
        waitForFile(stats, while: process)
        for file in [path, stats] {
            var info = stat()
            #expect(lstat(file, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK, "\(file)")
            #expect(info.st_mode & 0o7777 == 0o600, "\(file): mode \(String(info.st_mode & 0o7777, radix: 8))")
        }
        // A chmod after the bind would show as an attribute change.
        #expect(watch.events().map(\.description).sorted() == ["link:create", "stats:create"])
        for file in [path, stats] {
            unlink(file)
            #expect(FileManager.default.createFile(atPath: file, contents: Data("someone else's".utf8)))
        }
        #expect(stop(process), "the daemon did not exit within 10 s of SIGTERM")
        #expect(process.terminationStatus == 0)
        for file in [path, stats] {
            #expect(FileManager.default.contents(atPath: file).map { String(decoding: $0, as: UTF8.self) } == "someone else's", "\(file)")
        }
    }

    @Test("qemu stream, datagram and vmnet framings: ARP and ping through the daemon, and a router advertisement answering a solicitation", arguments: ["qemu", "dgram", "vmnet"])
    func socket(kind: String) throws {
        let directory = try freshDirectory("vk-sock-\(getpid())-\(kind)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("link").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vpnkitBinary())
        process.arguments = ["run", "--socket", path, "--protocol", kind, "--no-dhcp"]
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        waitForFile(path)
        let client = try run("/usr/bin/env", ["python3", "-c", socketClient, path, kind], timeout: 20)
        #expect(client.status == 0, "\(client.output) \(client.error)")
        #expect(client.output.contains("arp-reply 5a94efe40cee"), "\(client.output) \(client.error)")
        #expect(client.output.contains("echo-reply True"), "\(client.output)")
        if kind == "vmnet" { #expect(client.output.contains("vif 1500 1550")) }
        #expect(client.output.contains("ra fd00:65::/64 from fe80::1"), "every socket guest is dual-stack: \(client.output)")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let log = String(decoding: readAll(stderr.fileHandleForReading), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(log)")
        #expect(log.contains("icmp_echo_replies_sent=1"), "\(log)")
    }

    @Test(
        "as an unprivileged user (nobody): NAT TCP and UDP to the host's loopback and a published port work",
        .enabled(if: asNobody != nil, "skipped: as root this needs setpriv (util-linux), and nobody must be able to run the vpnkit binary and load its libraries")
    )
    func unprivileged() throws {
        // The options set on host sockets must be ones any user may set (SO_DEBUG, say, is not).
        let prefix = asNobody ?? []
        let directory = try freshDirectory("vk-sock-\(getpid())-nobody", attributes: [.posixPermissions: 0o700])
        if !prefix.isEmpty { try FileManager.default.setAttributes([.ownerAccountID: 65534, .groupOwnerAccountID: 65534], ofItemAtPath: directory.path) }
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("link").path
        let publishPort = try freeTCPPort()
        let process = Process()
        let command = prefix + [vpnkitBinary(), "run", "--socket", path, "--protocol", "qemu", "--no-dhcp", "--publish", "tcp:127.0.0.1:\(publishPort):80"]
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        waitForFile(path)
        let client = try run("/usr/bin/env", ["python3", "-c", natSocketClient, path, "\(publishPort)"], timeout: 30)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let log = String(decoding: readAll(stderr.fileHandleForReading), as: UTF8.self)
        #expect(client.output.contains("echo hello"), "\(client.output) \(client.error) \(log)")
        #expect(client.output.contains("udp howdy"), "\(client.output) \(client.error) \(log)")
        #expect(client.output.contains("publish syn"), "\(client.output) \(client.error) \(log)")
        #expect(log.contains("tcp_connects_started=1 tcp_connects_succeeded=1"), "\(log)")
    }
}

/// Starts the daemon with one listener of `mode` (`published`: a published TCP port; `qemu`: the
/// guest's qemu stream socket; `stats`: the stats socket), then lowers its soft open-file limit (with
/// prlimit, while it runs) to its lowest free descriptor number, so every accept fails with EMFILE.
/// Connects three clients to that listener and prints the daemon's CPU ticks over the next 2 s, how
/// many of the clients were refused while they waited (reset or closed, whether connect(2) or a
/// later recv saw it), how many found the listener already closed, how many were left waiting, and
/// how many "out of descriptors" notices it logged.
let acceptExhaustionScript = #"""
import os, socket, subprocess, sys, tempfile, time
vpnkit, prlimit, mode = sys.argv[1], sys.argv[2], sys.argv[3]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def listening(pid, port):
    # Bound and listening, seen in /proc without connecting: a probe connection would be accepted
    # (or, if the daemon is slow to accept it, fail) around the time the limit is lowered.
    for line in open(f"/proc/{pid}/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return True
    return False

def open_fds(pid):
    # The same set twice in a row, 0.2 s apart, so nothing opened for a moment is counted.
    before = None
    for _ in range(50):
        now = {int(f) for f in os.listdir(f"/proc/{pid}/fd")}
        if now == before: return now
        before = now; time.sleep(0.2)
    return before

def connect(target):
    if isinstance(target, tuple):
        return socket.create_connection(target, timeout=1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(1); s.connect(target); return s

def refused(client):
    client.settimeout(2)
    try:
        return client.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True

with tempfile.TemporaryDirectory() as d:
    link = os.path.join(d, "link")
    args = [vpnkit, "run", "--socket", link, "--protocol", "qemu"]
    if mode == "published":
        port = free_port(); target = ("127.0.0.1", port); args += ["--publish", f"tcp:127.0.0.1:{port}:80"]
    elif mode == "stats":
        target = os.path.join(d, "stats"); args += ["--stats", target]
    else:
        target = link
    log = open(os.path.join(d, "log"), "w+")
    p = subprocess.Popen(args, stderr=log)
    try:
        ready = False
        for _ in range(200):
            if p.poll() is not None: break
            if mode == "published":
                ready = listening(p.pid, port)
            else:
                ready = os.path.exists(target)
            if ready: break
            time.sleep(0.05)
        if not ready:
            log.seek(0); print("daemon did not start:", " ".join(log.read().split())); sys.exit(0)
        time.sleep(0.5)
        fds = open_fds(p.pid)
        lowest_free = next(n for n in range(len(fds) + 1) if n not in fds)
        subprocess.run([prlimit, "--pid", str(p.pid), f"--nofile={lowest_free}:"], check=True)
        clients, reset_at_connect, refused_at_connect = [], 0, 0
        for _ in range(3):
            try: clients.append(connect(target))
            # Queued, then reset by the listener's close before connect(2) returned here: refused
            # while waiting, as much as a reset seen later by recv.
            except ConnectionResetError: reset_at_connect += 1
            # The listener was already closed (paused) when this one came.
            except OSError: refused_at_connect += 1
        t0 = ticks(p.pid); time.sleep(2); t1 = ticks(p.pid)
        later = [refused(c) for c in clients]
        count = reset_at_connect + sum(later)
        waiting = later.count(False)
    finally:
        p.terminate(); p.wait()
    log.seek(0); text = log.read()
    print("limit", lowest_free)
    print("refused_at_connect", refused_at_connect)
    print("waiting", waiting)
    print("cpu_ticks", t1 - t0)
    print("refused", count)
    print("notices", text.count("out of descriptors"))
"""#

@Suite("vpnkit run: the open-file limit", .enabled(if: runsHere(which("prlimit") != nil), "skipped: needs prlimit (util-linux)"), .requires(which("prlimit") != nil, "skipped: needs prlimit (util-linux)"))
struct OpenFileLimitTests {
    /// Starts the daemon on a qemu socket under `prlimit --nofile=SOFT:HARD`; returns its soft and hard
    /// open-file limits as /proc shows them once it listens, and what it logged.
    func limits(soft: Int, hard: Int, arguments: [String]) throws -> (soft: Int, hard: Int, log: String) {
        let directory = try freshDirectory("vk-nofile-\(getpid())-\(soft)-\(hard)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("link").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: which("prlimit")!)
        process.arguments = ["--nofile=\(soft):\(hard)", vpnkitBinary(), "run", "--socket", path, "--protocol", "qemu"] + arguments
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        waitForFile(path)
        // prlimit execs the daemon: same pid.
        let table = try String(contentsOfFile: "/proc/\(process.processIdentifier)/limits", encoding: .utf8)
        let line = table.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let log = String(decoding: readAll(stderr.fileHandleForReading), as: UTF8.self)
        return (numbers.first ?? -1, numbers.dropFirst().first ?? -1, log)
    }

    @Test("a low soft limit is raised to what --max-connections, --max-udp-flows and the DNS forwarder (264) need, plus 128")
    func raised() throws {
        let (soft, hard, log) = try limits(soft: 256, hard: 8192, arguments: ["--max-connections", "2000", "--max-udp-flows", "500"])
        #expect(soft == 2000 + 500 + 264 + 128, "\(log)")
        #expect(hard == 8192)
        #expect(log.contains("open-file limit raised from 256 to 2892"), "\(log)")
    }

    @Test("out of descriptors, a listener does not spin: it pauses, refuses what waits, and says so",
          arguments: ["published", "qemu", "stats"])
    func acceptOutOfDescriptors(listener: String) throws {
        let result = try run("/usr/bin/env", ["python3", "-c", acceptExhaustionScript, vpnkitBinary(), which("prlimit")!, listener], timeout: 120)
        let values = Dictionary(result.output.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: " ", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { $1 })
        #expect(values["limit"] != nil, "\(result.output) \(result.error)")
        // Spinning on accept(2) burns the whole 2 s (200 ticks); paused, it is idle.
        #expect((Int(values["cpu_ticks"] ?? "") ?? 999) < 50, "\(result.output)")
        #expect((Int(values["refused"] ?? "") ?? 0) >= 1, "\(result.output)")
        #expect(values["waiting"] == "0", "\(result.output)")
        #expect((Int(values["notices"] ?? "") ?? 0) >= 1, "\(result.output)")
    }

    @Test("below 64 open files the daemon exits with an error that says so (at 12 SwiftNIO's setup used to trap)",
          arguments: [12, 63])
    func belowMinimum(limit: Int) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vk-min-\(getpid())-\(limit).sock").path
        defer { unlink(path) }
        let result = try run(which("prlimit")!, ["--nofile=\(limit):\(limit)", vpnkitBinary(), "run", "--socket", path, "--protocol", "qemu"], timeout: 30)
        #expect(result.status == 1, "\(result.status) \(result.error)")
        #expect(result.error.contains("the open-file limit is \(limit) (hard \(limit)); vpnkit needs at least 64"), "\(result.error)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a hard limit below the need: raised as far as it goes, and the log says what to change")
    func hardLimitTooLow() throws {
        let (soft, hard, log) = try limits(soft: 256, hard: 1000, arguments: [])
        #expect(soft == 1000 && hard == 1000)
        #expect(log.contains("the open-file limit is 1000 (hard 1000): --max-connections 4096 and --max-udp-flows 1024 need about 5512"), "\(log)")
    }
}

