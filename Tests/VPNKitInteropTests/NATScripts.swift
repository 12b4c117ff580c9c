import Foundation
import VPNKitTestSupport

/// Host-side servers for the NAT tests, all on 127.0.0.1: a TCP command server, an HTTP server, a
/// UDP echo server, a fake DNS upstream and one that never answers. Prints their ports on one line.
let natHostScript = #"""
import hashlib, http.server, os, random, socket, socketserver, struct, sys, threading
BLOCK = random.Random(7).randbytes(1048573)
def pattern(n):
    while n > 0:
        chunk = BLOCK[:n] if n < len(BLOCK) else BLOCK
        yield chunk
        n -= len(chunk)
class TCP(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c: return
            line += c
        cmd = line.decode().split()
        if cmd[0] == "echo":
            while True:
                d = s.recv(65536)
                if not d: break
                s.sendall(d)
            s.shutdown(socket.SHUT_WR)
        elif cmd[0] == "source":
            for chunk in pattern(int(cmd[1])): s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        elif cmd[0] == "sink":
            h = hashlib.sha256(); n = 0
            while True:
                d = s.recv(1 << 20)
                if not d: break
                h.update(d); n += len(d)
            s.sendall(f"{n} {h.hexdigest()}\n".encode())
            s.shutdown(socket.SHUT_WR)
        elif cmd[0] == "hold":
            s.recv(1)
class Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
tcp = Threaded(("127.0.0.1", 0), TCP)
class Quiet(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/blob/"):
            n = int(self.path[6:])
            self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
            for chunk in pattern(n): self.wfile.write(chunk)
            return
        body = b"hello from the host\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
web = Threaded(("127.0.0.1", 0), Quiet)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
udp.bind(("127.0.0.1", 0))
def udp_echo():
    while True:
        d, a = udp.recvfrom(65535)
        udp.sendto(d, a)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dns.bind(("127.0.0.1", 0))
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); silent.bind(("127.0.0.1", 0))
def dns_serve():
    while True:
        q, a = dns.recvfrom(4096)
        i = 12
        while q[i] != 0: i += q[i] + 1
        question = q[12:i + 5]
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + bytes([198, 51, 100, 7])
        dns.sendto(q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0) + question + answer, a)
for target in (tcp.serve_forever, web.serve_forever, udp_echo, dns_serve):
    threading.Thread(target=target, daemon=True).start()
print(tcp.server_address[1], web.server_address[1], udp.getsockname()[1], dns.getsockname()[1], silent.getsockname()[1], flush=True)
sys.stdin.read()
"""#

/// The guest side: one mode per check, printing `ok …` on success.
let natGuestScript = #"""
import hashlib, random, socket, struct, sys, time
BLOCK = random.Random(7).randbytes(1048573)
def pattern_hash(n):
    h = hashlib.sha256()
    while n > 0:
        chunk = BLOCK[:n] if n < len(BLOCK) else BLOCK
        h.update(chunk); n -= len(chunk)
    return h.hexdigest()
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
arg = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4].isdigit() else 0
def connect():
    return socket.create_connection((host, port), timeout=30)
if mode == "download":
    s = connect(); s.sendall(f"source {arg}\n".encode())
    h = hashlib.sha256(); n = 0; t0 = time.time()
    while True:
        d = s.recv(1 << 20)
        if not d: break
        h.update(d); n += len(d)
    dt = time.time() - t0
    assert n == arg, f"got {n} of {arg} bytes"
    assert h.hexdigest() == pattern_hash(arg), "hash differs"
    print(f"ok download {n} bytes {n * 8 / dt / 1e6:.0f} Mbit/s")
elif mode == "upload":
    s = connect(); s.sendall(b"sink\n"); t0 = time.time()
    n = arg
    while n > 0:
        chunk = BLOCK[:n] if n < len(BLOCK) else BLOCK
        s.sendall(chunk); n -= len(chunk)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = s.recv(4096)
        if not d: break
        reply += d
    dt = time.time() - t0
    count, digest = reply.decode().split()
    assert int(count) == arg, f"host got {count} of {arg} bytes"
    assert digest == pattern_hash(arg), "hash differs"
    print(f"ok upload {arg} bytes {arg * 8 / dt / 1e6:.0f} Mbit/s")
elif mode == "short":
    t0 = time.time()
    for i in range(arg):
        s = connect(); s.sendall(b"echo\nx"); assert s.recv(1) == b"x", f"connection {i}: no echo"; s.close()
    print(f"ok short {arg} in {time.time() - t0:.2f}s")
elif mode == "refused":
    t0 = time.time()
    try:
        connect(); sys.exit("connected")
    except ConnectionRefusedError:
        print(f"ok refused in {time.time() - t0:.3f}s")
elif mode == "hold":
    held = []
    for i in range(arg):
        s = connect(); s.sendall(b"echo\ny"); assert s.recv(1) == b"y"; held.append(s)
    try:
        connect(); sys.exit(f"connection {arg + 1} was accepted")
    except ConnectionRefusedError:
        pass
    for s in held: s.close()
    time.sleep(1)
    s = connect(); s.sendall(b"echo\nz"); assert s.recv(1) == b"z"
    print(f"ok hold {arg}, the next refused, one more after closing")
elif mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.settimeout(5)
    rng = random.Random(3)
    sizes = [rng.choice([1, 64, 512, 1200, 1472, 3000, 8000]) for _ in range(arg)]
    got = 0; sent = 0; inflight = 0; window = 32; bytes_ = 0
    while got < arg:
        while sent < arg and inflight < window:
            s.sendto(struct.pack(">I", sent) + bytes([sent & 255]) * (sizes[sent] - 4 if sizes[sent] > 4 else 0), (host, port))
            sent += 1; inflight += 1
        d, a = s.recvfrom(65535)
        seq = struct.unpack(">I", d[:4])[0] if len(d) >= 4 else -1
        assert len(d) == max(sizes[seq], 4) and a == (host, port), f"datagram {seq}: {len(d)} bytes from {a}"
        got += 1; inflight -= 1; bytes_ += len(d)
    print(f"ok udp {got} datagrams {bytes_} bytes echoed")
elif mode == "udpphases":
    # One flow through both read modes of the host socket and the TAP: request-answer (one datagram
    # per wakeup; the readers stop trying the empty read after it), then 32 in flight (datagrams
    # queue; the readers must take them all), and again. A datagram left unread stalls the phase.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.settimeout(5)
    seq = 0
    for window, count in [(1, 40), (32, 1000), (1, 40), (32, 1000), (1, 40)]:
        sent = got = 0
        while got < count:
            while sent < count and sent - got < window:
                s.sendto(struct.pack(">I", seq + sent) + b"p" * 60, (host, port)); sent += 1
            d, a = s.recvfrom(65535)
            assert struct.unpack(">I", d[:4])[0] == seq + got and a == (host, port), f"phase of {window}: datagram {got}"
            got += 1
        seq += count
    print(f"ok udpphases {seq}")
elif mode == "udpbig":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    data = random.Random(5).randbytes(arg)
    s.sendto(data, (host, port))
    d, a = s.recvfrom(65535)
    assert d == data, f"got {len(d)} bytes back"
    print(f"ok udpbig {len(d)}")
elif mode == "unreachable":
    t0 = time.time()
    try:
        connect(); sys.exit("connected")
    except OSError as e:
        print(f"ok unreachable errno {e.errno} in {time.time() - t0:.1f}s")
elif mode == "udpclosed":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.connect((host, port)); s.send(b"anyone?")
    try:
        s.recv(100); sys.exit("answered")
    except ConnectionRefusedError:
        print("ok udp refused")
elif mode == "dnsudpmany":
    # `arg` queries for distinct names, one after another, each waiting for its answer.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10)
    answered = 0
    for n in range(arg):
        q = struct.pack(">HHHHHH", n, 0x0100, 1, 0, 0, 0) + bytes([4]) + b"q%03d" % n + bytes([7]) + b"example" + b"\0" + struct.pack(">HH", 1, 1)
        s.sendto(q, (host, port))
        r, _ = s.recvfrom(4096)
        answered += r[:2] == q[:2] and r[3] & 15 == 0
    print(f"ok dnsudpmany answered {answered}")
elif mode == "dnstcppipeline":
    # `arg` queries pipelined on one connection, which stays open a second and then closes.
    s = socket.create_connection((host, port), timeout=10)
    data = b""
    for n in range(arg):
        q = struct.pack(">HHHHHH", n, 0x0100, 1, 0, 0, 0) + bytes([4]) + b"t%03d" % (n % 1000) + bytes([7]) + b"example" + b"\0" + struct.pack(">HH", 1, 1)
        data += struct.pack(">H", len(q)) + q
    s.sendall(data)
    time.sleep(1)
    s.close()
    print(f"ok dnstcppipeline sent {arg}")
elif mode in ("dns", "dnstcp"):
    name = sys.argv[4]
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    t0 = time.time()
    if mode == "dns":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10)
        s.sendto(q, (host, port))
        r, a = s.recvfrom(4096)
    else:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(struct.pack(">H", len(q)) + q)
        r = b""
        while len(r) < 2 or len(r) < 2 + struct.unpack(">H", r[:2])[0]:
            d = s.recv(4096)
            if not d: break
            r += d
        r = r[2:]
    rcode = r[3] & 15
    an = struct.unpack(">H", r[6:8])[0]
    addresses = []
    i = 12
    while r[i] != 0: i += r[i] + 1
    i += 5
    for _ in range(an):
        i += 2 if r[i] & 0xC0 == 0xC0 else 0
        rtype, rclass, ttl, rdlen = struct.unpack(">HHIH", r[i:i + 10]); i += 10
        if rtype == 1: addresses.append(".".join(map(str, r[i:i + 4])))
        i += rdlen
    print(f"ok dns rcode {rcode} answers {','.join(addresses) or '-'} in {time.time() - t0:.1f}s")
"""#

/// The host servers of `natHostScript`, stopped when released.
final class HostServers {
    let process = Process()
    let input = Pipe()
    let tcp: Int, http: Int, udp: Int, dns: Int, silentDNS: Int

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", natHostScript]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = input
        try process.run()
        // The first line: the ports.
        var line = [UInt8]()
        let fd = output.fileHandleForReading.fileDescriptor
        var byte: UInt8 = 0
        while line.last != 10 {
            let n = read(fd, &byte, 1)
            if n == 1 { line.append(byte) } else if n < 0 && errno == EINTR { continue } else { break }
        }
        let ports = String(decoding: line, as: UTF8.self).split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        guard ports.count == 5 else {
            process.terminate()
            throw NamespaceError(message: "the host servers did not start")
        }
        (tcp, http, udp, dns, silentDNS) = (ports[0], ports[1], ports[2], ports[3], ports[4])
    }

    deinit {
        try? input.fileHandleForWriting.close()
        process.terminate()
        process.waitUntilExit()
    }
}

/// SHA-256 (hex) of the first `count` bytes of the host servers' pattern.
func patternSHA256(_ count: Int) throws -> String {
    let script = """
        import hashlib, random
        block = random.Random(7).randbytes(1048573); n = \(count); h = hashlib.sha256()
        while n > 0:
            c = block[:n] if n < len(block) else block; h.update(c); n -= len(c)
        print(h.hexdigest())
        """
    return try run("/usr/bin/env", ["python3", "-c", script], timeout: 60).output.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A DNS upstream on 127.0.0.1 that watches what the forwarder sends: it answers UDP queries (A
/// 198.51.100.9) and records their source ports and ids; over TCP, on the same port, it accepts
/// connections and reads queries but never answers. Prints its port; a line on stdin makes it print
/// `udp QUERIES PORTS IDS tcp CONNECTIONS QUERIES` (distinct source ports and ids).
let dnsObserverScript = #"""
import socket, struct, sys, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
port = u.getsockname()[1]
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("127.0.0.1", port)); t.listen(64)
seen = []; stats = {"connections": 0, "queries": 0}
def serve_udp():
    while True:
        q, a = u.recvfrom(4096)
        seen.append((a[1], q[:2]))
        i = 12
        while q[i] != 0: i += q[i] + 1
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + bytes([198, 51, 100, 9])
        u.sendto(q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0) + q[12:i + 5] + answer, a)
def serve_tcp(c):
    buf = b""
    while True:
        d = c.recv(65536)
        if not d: return
        buf += d
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
            buf = buf[2 + struct.unpack(">H", buf[:2])[0]:]; stats["queries"] += 1
def accept_tcp():
    while True:
        c, _ = t.accept(); stats["connections"] += 1
        threading.Thread(target=serve_tcp, args=(c,), daemon=True).start()
for target in (serve_udp, accept_tcp): threading.Thread(target=target, daemon=True).start()
print(port, flush=True)
for line in sys.stdin:
    print("udp %d %d %d tcp %d %d" % (len(seen), len({p for p, _ in seen}), len({i for _, i in seen}), stats["connections"], stats["queries"]), flush=True)
"""#
