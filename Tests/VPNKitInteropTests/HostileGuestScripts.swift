/// A hostile guest, in Python, run inside the guest namespace: it writes crafted Ethernet frames
/// straight onto tap0 through an AF_PACKET socket (so the kernel's own stack does not get in the
/// way) or opens sockets by the thousand. Modes:
///   synflood DST PORT COUNT          SYNs with random source ports and sequence numbers
///   udpflood DST PORT PORTS          one datagram from each of PORTS distinct source ports
///   dhcpstarve COUNT                 DISCOVER and REQUEST from COUNT random MAC addresses
///   malformed COUNT SEED             every kind of broken frame, COUNT of them
///   spoof COUNT                      UDP, TCP and ping from addresses outside the guest's subnet
///   scan DST INFLIGHT                connect() to all 65,535 ports, INFLIGHT at a time
///   hold DST PORT                    one echo connection that works before and after stdin's line
///   tiny DST PORT SECONDS            one TCP connection from an address the guest's kernel does not
///                                    own, fed 1-byte segments until the window stays closed
/// Each prints one line starting with "ok".
let hostileGuestScript = #"""
import errno, os, random, select, selectors, socket, struct, sys, time
IFACE = "tap0"

def mac_bytes(text): return bytes(int(x, 16) for x in text.split(":"))
def checksum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16: total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF
def ip4(text): return socket.inet_aton(text)
def my_address():
    import fcntl
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", IFACE.encode()))[20:24]
def gateway_mac():
    for line in open("/proc/net/arp").read().splitlines()[1:]:
        f = line.split()
        if f[0] == "192.168.65.1" and f[3] != "00:00:00:00:00:00": return mac_bytes(f[3])
    raise SystemExit("no ARP entry for the gateway (ping it first)")

class Wire:
    def __init__(self, paced=False):
        # Paced: 200 frames per 10 ms at most, so the daemon (a debug build in the tests) sees them
        # all instead of the TAP queue dropping them; floods are sent unpaced.
        self.paced = paced
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.s.bind((IFACE, 0))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.mac = mac_bytes(open("/sys/class/net/%s/address" % IFACE).read().strip())
        self.sent = 0
        self.rejected = 0
    def send(self, frame):
        if self.paced and self.sent % 200 == 199: time.sleep(0.01)
        while True:
            try:
                self.s.send(frame); self.sent += 1; return
            except OSError as e:
                if e.errno in (errno.ENOBUFS, errno.EAGAIN): time.sleep(0.0005); continue
                if e.errno in (errno.EINVAL, errno.EMSGSIZE): self.rejected += 1; return  # shorter than a header, longer than the MTU
                raise
    def eth(self, dst, payload, etype=0x0800, src=None):
        return dst + (src or self.mac) + struct.pack("!H", etype) + payload

def ipv4(src, dst, proto, payload, ident=0, flags_frag=0x4000, ttl=64, options=b"", total=None, ihl=None):
    hl = 20 + len(options)
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ((ihl if ihl is not None else hl // 4) & 0xF), 0, total if total is not None else hl + len(payload),
                    ident, flags_frag, ttl, proto, 0, src, dst) + options
    return h[:10] + struct.pack("!H", checksum(h)) + h[12:] + payload
def tcp(src, dst, sport, dport, seq, ack, flags, payload=b"", options=b"", window=64240):
    off = (20 + len(options)) // 4
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, window, 0, 0) + options
    c = checksum(src + dst + struct.pack("!BBH", 0, 6, len(h) + len(payload)) + h + payload)
    return h[:16] + struct.pack("!H", c) + h[18:] + payload
def udp(src, dst, sport, dport, payload):
    h = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    c = checksum(src + dst + struct.pack("!BBH", 0, 17, len(h) + len(payload)) + h + payload) or 0xFFFF
    return h[:6] + struct.pack("!H", c) + payload
def icmp_echo(ident, seq, payload):
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return h[:2] + struct.pack("!H", checksum(h + payload)) + h[4:] + payload

mode = sys.argv[1]
if mode == "synflood":
    dst, port, count = ip4(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    w = Wire(); src = my_address(); gw = gateway_mac(); r = random.Random(1)
    t = time.time()
    for i in range(count):
        w.send(w.eth(gw, ipv4(src, dst, 6, tcp(src, dst, r.randrange(1024, 65536), port, r.getrandbits(32), 0, 0x02,
                     options=b"\x02\x04\x05\xb4\x01\x03\x03\x07"), ident=i & 0xFFFF)))
    print("ok synflood sent %d in %.1f s" % (w.sent, time.time() - t))
elif mode == "udpflood":
    dst, port, ports = ip4(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    w = Wire(); src = my_address(); gw = gateway_mac()
    sources = random.Random(2).sample(range(1024, 65536), ports)
    for i, sport in enumerate(sources):
        w.send(w.eth(gw, ipv4(src, dst, 17, udp(src, dst, sport, port, b"flood %d" % i), ident=i & 0xFFFF)))
    print("ok udpflood sent %d" % w.sent)
elif mode == "dhcpstarve":
    count = int(sys.argv[2]); w = Wire(); r = random.Random(3)
    for i in range(count):
        mac = bytes([0x02]) + r.randbytes(5)
        for kind, extra in ((1, b""), (3, b"\x32\x04" + bytes([192, 168, 65, 3 + i % 250]) + b"\x36\x04\xc0\xa8\x41\x01")):
            bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128sI", 1, 1, 6, 0, r.getrandbits(32), 0, 0x8000,
                                b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, mac + b"\0" * 10, b"", b"", 0x63825363)
            bootp += bytes([53, 1, kind]) + extra + b"\xff"
            src, dst = b"\0" * 4, b"\xff" * 4
            w.send(w.eth(b"\xff" * 6, ipv4(src, dst, 17, udp(src, dst, 68, 67, bootp), ident=i & 0xFFFF), src=mac))
    print("ok dhcpstarve sent %d" % w.sent)
elif mode == "spoof":
    count = int(sys.argv[2]); w = Wire(paced=True); gw = gateway_mac(); r = random.Random(4)
    for i in range(count):
        src = bytes([r.choice([10, 172, 203, 8]), r.randrange(256), r.randrange(256), r.randrange(1, 255)])
        dst = ip4(r.choice(["192.168.65.2", "192.168.65.1", "198.18.0.1"]))
        kind = i % 3
        if kind == 0: body, proto = udp(src, dst, r.randrange(1024, 65536), 53, b"spoofed"), 17
        elif kind == 1: body, proto = tcp(src, dst, r.randrange(1024, 65536), 80, r.getrandbits(32), 0, 0x02), 6
        else: body, proto = icmp_echo(r.randrange(65536), i & 0xFFFF, b"spoofed"), 1
        w.send(w.eth(gw, ipv4(src, dst, proto, body, ident=i & 0xFFFF)))
    print("ok spoof sent %d" % w.sent)
elif mode == "malformed":
    count, seed = int(sys.argv[2]), int(sys.argv[3])
    w = Wire(paced=True); src = my_address(); gw = gateway_mac(); r = random.Random(seed)
    targets = [ip4("192.168.65.1"), ip4("192.168.65.2"), ip4("198.18.0.1")]
    kinds = {}
    def good_tcp(dst): return tcp(src, dst, r.randrange(1024, 65536), r.choice([53, 80, 7]), r.getrandbits(32), r.getrandbits(32), r.choice([0x02, 0x10, 0x18, 0x11, 0x04, 0x3F]), r.randbytes(r.randrange(0, 64)))
    for i in range(count):
        dst = r.choice(targets)
        kind = r.randrange(16)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == 0:   # truncated anywhere
            f = w.eth(gw, ipv4(src, dst, 6, good_tcp(dst))); f = f[:r.randrange(14, len(f))]
        elif kind == 1: # IP total length larger than the frame
            f = w.eth(gw, ipv4(src, dst, 17, udp(src, dst, 1000, 53, b"x" * 20), total=r.randrange(49, 65536)))
        elif kind == 2: # IP total length smaller than the header
            f = w.eth(gw, ipv4(src, dst, 17, udp(src, dst, 1000, 53, b"x" * 20), total=r.randrange(0, 20)))
        elif kind == 3: # header length field lies
            f = w.eth(gw, ipv4(src, dst, 6, good_tcp(dst), ihl=r.choice([0, 1, 4, 6, 15])))
        elif kind == 4: # bad IP checksum
            p = bytearray(ipv4(src, dst, 1, icmp_echo(1, i & 0xFFFF, b"abc"))); p[10] ^= 0x55; f = w.eth(gw, bytes(p))
        elif kind == 5: # bad TCP/UDP/ICMP checksum
            p = bytearray(ipv4(src, dst, 6, good_tcp(dst))); p[36] ^= 0xFF; f = w.eth(gw, bytes(p))
        elif kind == 6: # IP options, some garbage
            opts = r.choice([b"\x07\x27\x04" + b"\0" * 37, b"\x44\x04\x05\x00", bytes([r.randrange(256) for _ in range(4 * r.randrange(1, 11))])])
            opts = opts[: (len(opts) // 4) * 4] or b"\x01\x01\x01\x00"
            f = w.eth(gw, ipv4(src, dst, 1, icmp_echo(2, i & 0xFFFF, b"opt"), options=opts))
        elif kind == 7: # tiny fragments (8 bytes each, MF)
            f = w.eth(gw, ipv4(src, dst, 17, r.randbytes(8), ident=r.randrange(65536), flags_frag=0x2000 | r.randrange(0, 8192)))
        elif kind == 8: # overlapping fragments of one datagram
            ident = r.randrange(65536)
            for off in (0, 1, 2, 1, 0):
                w.send(w.eth(gw, ipv4(src, dst, 17, r.randbytes(24), ident=ident, flags_frag=0x2000 | off)))
            f = w.eth(gw, ipv4(src, dst, 17, r.randbytes(16), ident=ident, flags_frag=3))
        elif kind == 9: # a fragment that would make the datagram larger than 65,535 bytes
            f = w.eth(gw, ipv4(src, dst, 17, r.randbytes(1400), ident=r.randrange(65536), flags_frag=8191))
        elif kind == 10: # garbage TCP options
            opts = bytes([r.randrange(256) for _ in range(4 * r.randrange(1, 11))])
            f = w.eth(gw, ipv4(src, dst, 6, tcp(src, dst, r.randrange(1024, 65536), 7, r.getrandbits(32), 0, 0x02, options=opts)))
        elif kind == 11: # TCP data offset beyond the segment
            p = bytearray(tcp(src, dst, 2000, 7, 1, 0, 0x02)); p[12] = 0xF0; f = w.eth(gw, ipv4(src, dst, 6, bytes(p)))
        elif kind == 12: # ARP with odd hardware and protocol lengths
            arp = struct.pack("!HHBBH", r.choice([1, 6, 0xFFFF]), r.choice([0x0800, 0x86DD]), r.randrange(256), r.randrange(256), r.choice([1, 2, 9])) + r.randbytes(r.randrange(0, 40))
            f = w.eth(b"\xff" * 6, arp, etype=0x0806)
        elif kind == 13: # UDP length larger or smaller than the datagram
            u = bytearray(udp(src, dst, 1000, 53, b"y" * 30)); struct.pack_into("!H", u, 4, r.choice([0, 1, 7, 9, 200, 65535])); f = w.eth(gw, ipv4(src, dst, 17, bytes(u)))
        elif kind == 14: # not IPv4 at all: IPv6, VLAN-tagged garbage, unknown EtherType
            f = w.eth(gw, r.randbytes(r.randrange(0, 100)), etype=r.choice([0x86DD, 0x8100, 0x88CC, 0x0000, 0xFFFF]))
        else:            # random bytes after a valid Ethernet header
            f = w.eth(gw, r.randbytes(r.randrange(0, 1500)))
        w.send(f)
    print("ok malformed sent %d kinds %d (%d refused by the kernel)" % (w.sent, len(kinds), w.rejected))
elif mode == "scan":
    dst, inflight = sys.argv[2], int(sys.argv[3])
    sel = selectors.DefaultSelector(); ports = iter(range(1, 65536)); open_, refused, other, pending = 0, 0, 0, 0
    t = time.time()
    def start():
        global pending
        p = next(ports, None)
        if p is None: return False
        s = socket.socket(); s.setblocking(False)
        e = s.connect_ex((dst, p))
        if e in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, (p, time.time())); pending += 1
        else:
            s.close(); global other; other += 1
        return True
    more = True
    while more and pending < inflight: more = start()
    while pending:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj; e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if e == 0: open_ += 1
            elif e == errno.ECONNREFUSED: refused += 1
            else: other += 1
            sel.unregister(s); s.close(); pending -= 1
            if more: more = start()
        now = time.time()
        for key in list(sel.get_map().values()):
            if now - key.data[1] > 15:
                sel.unregister(key.fileobj); key.fileobj.close(); pending -= 1; other += 1
                if more: more = start()
    print("ok scan open %d refused %d other %d in %.1f s" % (open_, refused, other, time.time() - t))
elif mode == "tiny":
    # A TCP sender of our own, so that every segment carries one byte (the kernel would coalesce):
    # its address and MAC are not the kernel's, which therefore ignores the replies (no RST); ARP
    # for it is answered here. Go-back-N on a stall; stops once the window stays closed.
    dst, port, seconds = ip4(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    mac, src = bytes([2, 0, 0, 0, 0, 0xc8]), ip4("192.168.65.200")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((IFACE, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setblocking(False)
    gw = None; sport = 40000 + os.getpid() % 20000; isn = 1000
    state = {"una": isn + 1, "win": 0, "synack": None, "shift": 0}
    def frames():
        while True:
            try: f = s.recv(65536)
            except BlockingIOError: return
            if f[0:6] != mac and f[0:6] != b"\xff" * 6: continue
            yield f
    def handle(f):
        global gw
        etype = struct.unpack("!H", f[12:14])[0]
        if etype == 0x0806:
            op = struct.unpack("!H", f[20:22])[0]
            if op == 2: gw = f[22:28]
            elif op == 1 and f[38:42] == src:
                s.send(f[6:12] + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac + src + f[22:28] + f[28:32])
        elif etype == 0x0800 and f[23] == 6:
            t = f[14 + (f[14] & 15) * 4:]
            seq, ack, off, flags, win = struct.unpack("!IIBBH", t[4:16])
            if flags & 0x12 == 0x12:
                state["synack"] = seq
                options, i = t[20:(off >> 4) * 4], 0
                while i < len(options) and options[i] != 0:
                    if options[i] == 1: i += 1; continue
                    if options[i] == 3 and i + 2 < len(options): state["shift"] = options[i + 2]
                    i += max(2, options[i + 1] if i + 1 < len(options) else 2)
            if flags & 0x10:
                if (ack - state["una"]) % (1 << 32) < (1 << 31): state["una"] = ack
                state["win"] = win << (0 if flags & 0x02 else state["shift"])
    def pump(wait):
        end = time.time() + wait
        while True:
            for f in frames(): handle(f)
            if time.time() >= end: return
            select.select([s], [], [], max(0, end - time.time()))
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + src + b"\0" * 6 + ip4("192.168.65.1"))
    t0 = time.time()
    while gw is None and time.time() - t0 < 5: pump(0.05)
    if gw is None: raise SystemExit("no ARP reply from the gateway")
    def segment(seq, ack, flags, payload=b"", options=b""):
        return gw + mac + b"\x08\x00" + ipv4(src, dst, 6, tcp(src, dst, sport, port, seq, ack, flags, payload, options, window=65535))
    # MSS, and window scaling so that the whole receive buffer can be offered (the worst case).
    s.send(segment(isn, 0, 0x02, options=b"\x02\x04\x05\xb4\x01\x03\x03\x07"))
    while state["synack"] is None and time.time() - t0 < 10: pump(0.05)
    if state["synack"] is None: raise SystemExit("no SYN-ACK")
    rcv = state["synack"] + 1
    s.send(segment(isn + 1, rcv, 0x10))
    templates = [segment(0, rcv, 0x18, bytes([b])) for b in range(256)]
    nxt = isn + 1; sent = 0; last_progress = time.time(); last_una = state["una"]; closed_since = None
    deadline = time.time() + seconds
    while time.time() < deadline:
        una, win = state["una"], state["win"]
        inflight = (nxt - una) % (1 << 32)
        room = min(win, 2000) - inflight
        if room > 0:
            for _ in range(min(room, 256)):
                f = bytearray(templates[nxt & 0xFF]); struct.pack_into("!I", f, 38, nxt % (1 << 32))
                # the TCP checksum covers the sequence number: adjust it
                c = checksum(src + dst + struct.pack("!BBH", 0, 6, 21) + bytes(f[34:50]) + b"\0\0" + bytes(f[52:55]))
                struct.pack_into("!H", f, 50, c)
                try: s.send(f)
                except BlockingIOError: break
                nxt += 1; sent += 1
        pump(0 if room > 0 else 0.01)
        if state["una"] != last_una: last_una = state["una"]; last_progress = time.time()
        elif time.time() - last_progress > 0.3 and nxt != state["una"]:
            nxt = state["una"]; last_progress = time.time()  # go back: something was lost
        if state["win"] == 0 and state["una"] == nxt:
            closed_since = closed_since or time.time()
            if time.time() - closed_since > 2: break
        else:
            closed_since = None
    held = (state["una"] - isn - 1) % (1 << 32)
    print("ok tiny sent %d acknowledged %d window %d in %.1f s" % (sent, held, state["win"], time.time() - t0), flush=True)
    sys.stdin.readline()
elif mode == "hold":
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=30)
    s.sendall(b"echo\nbefore")
    assert s.recv(6) == b"before"
    print("ready", flush=True)
    sys.stdin.readline()
    s.sendall(b"after")
    got = b""
    while len(got) < 5:
        d = s.recv(5 - len(got))
        if not d: break
        got += d
    print("ok hold" if got == b"after" else "broken hold: %r" % got, flush=True)
"""#
