# The IPv6 captures, sourced by record.sh (which provides mk_pair, start_cap,
# stop_cap, del_pair, log, die, $TMP, $PIDS): neighbour discovery as the links
# come up, ping6 with fragments, UDP to a closed port, a TCP transfer with a
# refused connection before it, and DNS over IPv6 (and one query over IPv4).
# Addresses: fd00:200:N::/64 and 10.200.N.0/24 inside the namespaces only.

TCP6_BYTES=${TCP6_BYTES:-60000}

# wait_file PATH WHAT: waits up to 10 s for PATH to exist.
wait_file() {
    local i
    for i in $(seq 1 100); do [[ -e $1 ]] && return 0; sleep 0.1; done
    die "$2 did not start"
}

# ---------------------------------------------------------------------------
# ndp6.pcap: the capture starts with vA up and vB down (no carrier), then vB
# comes up: both hosts run DAD on their link-local addresses (A also on a
# configured global one), send MLDv2 reports (hop-by-hop header with a router
# alert), A solicits a router, dnsmasq in B answers with router advertisements
# (prefix, MTU, RDNSS), A forms a SLAAC address and runs DAD on it, and one
# ping6 from A to B's global address shows address resolution (NS/NA).
record_ndp6() {
    log "ndp6.pcap"
    mk_pair ndp
    ip -n "$A" addr add fd00:200:6::1/64 dev vA
    ip -n "$B" addr add fd00:200:6::2/64 dev vB nodad
    start_cap "$A" vA ndp6
    ip netns exec "$B" dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
        --interface=vB --bind-interfaces --user=root --group=root --pid-file= \
        --log-facility=- --enable-ra --dhcp-range=::,constructor:vB,ra-only,64,600 \
        --ra-param=vB,mtu:1500,30,600 --dhcp-option=option6:dns-server,[fd00:200:6::2] \
        >"$TMP/dnsmasq-ra.log" 2>&1 &
    local dns_pid=$!
    PIDS+=("$dns_pid")
    sleep 0.5
    kill -0 "$dns_pid" 2>/dev/null || { cat "$TMP/dnsmasq-ra.log" >&2; die "dnsmasq (RA) failed to start"; }
    ip -n "$B" link set vB up
    # DAD (1 s), the router solicitation and its answer, SLAAC and its DAD.
    local i
    for i in $(seq 1 100); do
        ip -n "$A" -6 addr show dev vA | grep -q 'fd00:200:6::ff:fe00:a/64 scope global dynamic' \
            && ! ip -n "$A" -6 addr show dev vA | grep -q tentative && break
        sleep 0.1
    done
    ip -n "$A" -6 addr show dev vA | grep -q 'fd00:200:6::ff:fe00:a/64' || die "A formed no SLAAC address"
    ip netns exec "$A" ping -6 -n -q -c 1 fd00:200:6::2 >/dev/null
    stop_cap ndp6
    kill "$dns_pid"; wait "$dns_pid" || true; forget_pid "$dns_pid"
    del_pair
}

# ---------------------------------------------------------------------------
# ping6.pcap: address resolution, 3 default-size pings, 2 with -s 4000 (3
# fragments each way) and 1 with -s 30000 (21 fragments each way), MTU 1500.
record_ping6() {
    log "ping6.pcap"
    mk_pair ipv6
    ip -n "$A" addr add fd00:200:7::1/64 dev vA nodad
    ip -n "$B" addr add fd00:200:7::2/64 dev vB nodad
    sleep 3 # let the link-local and MLD chatter die down before capturing
    start_cap "$A" vA ping6
    ip netns exec "$A" ping -6 -n -q -c 3 -i 0.2 fd00:200:7::2 >/dev/null
    ip netns exec "$A" ping -6 -n -q -c 2 -i 0.2 -s 4000 fd00:200:7::2 >/dev/null
    ip netns exec "$A" ping -6 -n -q -c 1 -s 30000 fd00:200:7::2 >/dev/null
    stop_cap ping6
    del_pair
}

# ---------------------------------------------------------------------------
# udp6.pcap: a datagram to a closed port answered by ICMPv6 port unreachable,
# a UDP echo, and a datagram carrying a destination options header (PadN)
# before its UDP header, echoed.
record_udp6() {
    log "udp6.pcap"
    mk_pair ipv6
    ip -n "$A" addr add fd00:200:8::1/64 dev vA nodad
    ip -n "$B" addr add fd00:200:8::2/64 dev vB nodad
    sleep 3
    cat >"$TMP/udp6_server.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fd00:200:8::2", 7777))
s.settimeout(20)
open(sys.argv[1], "w").close()
for _ in range(2):
    d, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + d, peer)
EOF
    cat >"$TMP/udp6_client.py" <<'EOF'
import socket, time
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
c.bind(("fd00:200:8::1", 40001))
c.settimeout(5)
c.sendto(b"nobody listens here", ("fd00:200:8::2", 9))   # closed port -> ICMPv6
time.sleep(0.2)
c.sendto(b"hello over ipv6", ("fd00:200:8::2", 7777))
print(c.recvfrom(2048)[0])
# A destination options header: next header (set by the kernel), length 0
# (8 bytes), one PadN option of 4 zero bytes.
d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
d.bind(("fd00:200:8::1", 40002))
d.settimeout(5)
d.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
d.sendto(b"with destination options", ("fd00:200:8::2", 7777))
print(d.recvfrom(2048)[0])
EOF
    start_cap "$A" vA udp6
    ip netns exec "$B" python3 "$TMP/udp6_server.py" "$TMP/udp6.ready" &
    local srv=$!
    PIDS+=("$srv")
    wait_file "$TMP/udp6.ready" "udp6 server"
    ip netns exec "$A" python3 "$TMP/udp6_client.py" >"$TMP/udp6_client.out" || die "udp6 client failed"
    wait "$srv" || die "udp6 server failed"
    forget_pid "$srv"
    stop_cap udp6
    del_pair
}

# ---------------------------------------------------------------------------
# tcp6.pcap: a SYN to a closed port answered by RST/ACK, then a transfer of
# TCP6_BYTES A -> B with Linux's SYN options (MSS 1440, SACK-permitted,
# timestamps, window scale); nftables in B drops every 8th full-sized data
# segment after the capture point, so B's ACKs carry SACK blocks.
record_tcp6() {
    log "tcp6.pcap"
    mk_pair ipv6
    ip -n "$A" addr add fd00:200:9::1/64 dev vA nodad
    ip -n "$B" addr add fd00:200:9::2/64 dev vB nodad
    ip netns exec "$B" nft -f - <<'EOF'
table ip6 fxloss6 {
    chain pre {
        type filter hook prerouting priority -300; policy accept;
        ip6 saddr fd00:200:9::1 tcp dport 5001 ip6 length > 1000 numgen inc mod 8 == 3 counter drop
    }
}
EOF
    sleep 3
    cat >"$TMP/tcp6_server.py" <<'EOF'
import socket, sys
addr, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(1)
open(ready, "w").close()
c, _ = s.accept()
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
c.sendall(b"received %d bytes\n" % n)
c.close()
s.close()
EOF
    start_cap "$A" vA tcp6
    ip netns exec "$B" python3 "$TMP/tcp6_server.py" fd00:200:9::2 5001 "$TMP/tcp6.ready" &
    local srv=$!
    PIDS+=("$srv")
    wait_file "$TMP/tcp6.ready" "tcp6 server"
    # tcp_client.py (record_tcp) works for either family: first the refused
    # connection to port+1, then the transfer.
    write_tcp_client
    ip netns exec "$A" python3 "$TMP/tcp_client.py" fd00:200:9::2 5001 "$TCP6_BYTES" >"$TMP/tcp6_client.out"
    wait "$srv" || die "tcp6 server failed"
    forget_pid "$srv"
    log "  client got: $(cat "$TMP/tcp6_client.out")"
    log "  nft drops: $(ip netns exec "$B" nft list table ip6 fxloss6 | grep -o 'packets [0-9]*')"
    stop_cap tcp6
    del_pair
}

# ---------------------------------------------------------------------------
# dns.pcap: a small DNS responder in B (python, on [fd00:200:10::2]:53 and
# 10.200.10.2:53) answers queries from A: AAAA and A for host.internal, a CNAME
# chain (the target name compressed), a PTR, an NS, a TXT (no data in the
# decode), a name that does not exist (NXDOMAIN), a query with an EDNS OPT
# record, and one A query over IPv4.
record_dns() {
    log "dns.pcap"
    mk_pair ipv6
    ip -n "$A" addr add fd00:200:10::1/64 dev vA nodad
    ip -n "$B" addr add fd00:200:10::2/64 dev vB nodad
    ip -n "$A" addr add 10.200.10.1/24 dev vA
    ip -n "$B" addr add 10.200.10.2/24 dev vB
    sleep 3
    cat >"$TMP/dns_server.py" <<'EOF'
import select, socket, struct, sys
IN, A, NS, CNAME, PTR, TXT, AAAA = 1, 1, 2, 5, 12, 16, 28

def name(text):
    out = b""
    for label in text.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def rr(owner, rtype, ttl, data):
    # owner: bytes already in wire form (a name or a compression pointer)
    return owner + struct.pack("!HHIH", rtype, IN, ttl, len(data)) + data

def answer(query):
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", query[:12])
    i = 12
    labels = []
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode())
        i += 1 + query[i]
    qname = ".".join(labels)
    qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    q = b"\xc0\x0c"  # pointer to the question's name
    rcode, answers = 0, []
    if qname == "host.internal" and qtype == AAAA:
        answers = [rr(q, AAAA, 60, socket.inet_pton(socket.AF_INET6, "fd00:65::2"))]
    elif qname == "host.internal" and qtype == A:
        answers = [rr(q, A, 60, socket.inet_aton("192.168.65.2"))]
    elif qname == "www.internal" and qtype == A:
        # CNAME www.internal -> host.internal, then host.internal's A record,
        # its owner a pointer to the CNAME's target inside the first answer.
        target_at = 12 + len(question) + 12
        answers = [rr(q, CNAME, 300, name("host.internal")),
                   rr(struct.pack("!H", 0xC000 | target_at), A, 60, socket.inet_aton("192.168.65.2"))]
    elif qtype == PTR:
        answers = [rr(q, PTR, 60, name("host.internal"))]
    elif qname == "internal" and qtype == NS:
        answers = [rr(q, NS, 3600, b"\x02ns" + q)]
    elif qname == "host.internal" and qtype == TXT:
        answers = [rr(q, TXT, 60, b"\x0bhello world")]
    else:
        rcode = 3
    header = struct.pack("!6H", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)

s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.bind(("fd00:200:10::2", 53))
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s4.bind(("10.200.10.2", 53))
open(sys.argv[1], "w").close()
remaining = int(sys.argv[2])
while remaining:
    r, _, _ = select.select([s6, s4], [], [], 20)
    if not r:
        sys.exit("dns server: timeout")
    for s in r:
        d, peer = s.recvfrom(4096)
        s.sendto(answer(d), peer)
        remaining -= 1
EOF
    cat >"$TMP/dns_client.py" <<'EOF'
import ipaddress, socket, struct

def query(server, family, qid, qname, qtype, edns=False):
    q = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    for label in qname.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", qtype, 1)
    if edns:
        q += b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)  # OPT: root owner, UDP size 1232
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (server, 53))
    reply = s.recvfrom(4096)[0]
    print(qname, qtype, "->", len(reply), "bytes, rcode", reply[3] & 15)

v6 = "fd00:200:10::2"
query(v6, socket.AF_INET6, 0x1234, "host.internal", 28)
query(v6, socket.AF_INET6, 0x1235, "host.internal", 1)
query(v6, socket.AF_INET6, 0x1236, "www.internal", 1)
query(v6, socket.AF_INET6, 0x1237, ipaddress.ip_address("fd00:65::2").reverse_pointer, 12)
query(v6, socket.AF_INET6, 0x1238, "internal", 2)
query(v6, socket.AF_INET6, 0x1239, "host.internal", 16)
query(v6, socket.AF_INET6, 0x123a, "nothere.internal", 28)
query(v6, socket.AF_INET6, 0x123b, "host.internal", 28, edns=True)
query("10.200.10.2", socket.AF_INET, 0x123c, "host.internal", 1)
EOF
    start_cap "$A" vA dns
    ip netns exec "$B" python3 "$TMP/dns_server.py" "$TMP/dns.ready" 9 &
    local srv=$!
    PIDS+=("$srv")
    wait_file "$TMP/dns.ready" "dns server"
    ip netns exec "$A" python3 "$TMP/dns_client.py" >"$TMP/dns_client.out" || die "dns client failed"
    wait "$srv" || die "dns server failed"
    forget_pid "$srv"
    stop_cap dns
    del_pair
}
