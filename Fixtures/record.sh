#!/usr/bin/env bash
# Records the packet-capture fixtures in this directory from REAL Linux kernel
# traffic between two private network namespaces joined by a veth pair.
#
#   sudo bash Fixtures/record.sh && python3 Fixtures/expect.py
#
# Must run as root. Every namespace it makes is named fx-*-<pid>-<n> and is
# deleted on exit (also on failure); it only kills processes it started itself,
# by pid. No traffic leaves the namespaces it creates.
#
# Environment:
#   FIXTURES_OUT   where to write the .pcap files (default: this directory)
#   TCP_BYTES      bytes to send in tcp.pcap (default 150000)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${FIXTURES_OUT:-$HERE}
TCP_BYTES=${TCP_BYTES:-150000}

log() { printf '[record] %s\n' "$*" >&2; }
die() { printf '[record] ERROR: %s\n' "$*" >&2; exit 1; }

# --- tool checks ------------------------------------------------------------
missing=()
need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("'$1' (Debian package: $2)")
}
need ip       iproute2
need tc       iproute2
need ethtool  ethtool
need tcpdump  tcpdump
need dnsmasq  dnsmasq-base
need busybox  busybox
need ping     iputils-ping
need nft      nftables
need python3  python3
need mount    mount
if ((${#missing[@]})); then
    for m in "${missing[@]}"; do printf '[record] missing tool %s\n' "$m" >&2; done
    die "install the missing packages: apt-get install -y --no-install-recommends <package>..."
fi
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, tcpdump, nftables)"
busybox udhcpc --help >/dev/null 2>&1 || die "this busybox has no udhcpc applet (Debian package: busybox)"

# --- state and cleanup --------------------------------------------------------
TMP=$(mktemp -d /tmp/fx-record.XXXXXX)
SUFFIX=$$
NS_LIST=()
PIDS=()
BPFFS=""
NS_COUNTER=0

cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    for ns in "${NS_LIST[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    if [[ -n $BPFFS ]] && mountpoint -q "$BPFFS"; then umount "$BPFFS"; fi
    rm -rf "$TMP"
    if ((rc != 0)); then log "failed (exit $rc); namespaces and processes cleaned up"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # remove a pid from PIDS after it was reaped
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

MAC_A=02:00:00:00:00:0a
MAC_B=02:00:00:00:00:0b

# mk_pair [ipv6|ndp]: makes two fresh namespaces A and B joined by veth vA<->vB,
# offloads off, links up, no addresses. Sets globals A and B. ipv6: IPv6 on but
# quiet (no DAD, no router solicitations); ndp: IPv6 with DAD and router
# solicitations (one a second) on, B a router (forwarding), and vB left down so
# that the capture sees both links come up; without either, IPv6 is off.
mk_pair() {
    local want_v6=${1:-}
    NS_COUNTER=$((NS_COUNTER + 1))
    A=fx-a-$SUFFIX-$NS_COUNTER
    B=fx-b-$SUFFIX-$NS_COUNTER
    ip netns add "$A"; NS_LIST+=("$A")
    ip netns add "$B"; NS_LIST+=("$B")
    local ns
    for ns in "$A" "$B"; do
        if [[ $want_v6 == ndp ]]; then
            ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.router_solicitation_interval=1 \
                net.ipv6.conf.default.use_tempaddr=0
        elif [[ $want_v6 == ipv6 ]]; then
            # IPv6 on, but quiet: no DAD, no router solicitations.
            ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
                net.ipv6.conf.default.accept_dad=0 \
                net.ipv6.conf.all.router_solicitations=0 \
                net.ipv6.conf.default.router_solicitations=0
        else
            ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
                net.ipv6.conf.default.disable_ipv6=1
        fi
        ip -n "$ns" link set lo up
    done
    ip -n "$A" link add vA address "$MAC_A" type veth peer name vB address "$MAC_B" netns "$B"
    # Every checksum on the wire must be final: no checksum/segmentation offload.
    ip netns exec "$A" ethtool -K vA tx off rx off tso off gso off gro off >/dev/null
    ip netns exec "$B" ethtool -K vB tx off rx off tso off gso off gro off >/dev/null
    ip -n "$A" link set vA up
    if [[ $want_v6 == ndp ]]; then
        ip netns exec "$B" sysctl -qw net.ipv6.conf.all.forwarding=1
    else
        ip -n "$B" link set vB up
    fi
}

# start_cap NS DEV NAME: tcpdump -w $TMP/NAME.pcap inside NS; sets CAP_PID.
start_cap() {
    local ns=$1 dev=$2 name=$3
    local err=$TMP/$name.tcpdump.err
    ip netns exec "$ns" tcpdump -Z root -U --immediate-mode -n -s 0 -i "$dev" \
        -w "$TMP/$name.pcap" 2>"$err" &
    CAP_PID=$!
    PIDS+=("$CAP_PID")
    local i
    for i in $(seq 1 100); do
        grep -q 'listening on' "$err" 2>/dev/null && return 0
        kill -0 "$CAP_PID" 2>/dev/null || { cat "$err" >&2; die "tcpdump failed to start"; }
        sleep 0.1
    done
    die "tcpdump did not start listening on $dev in $ns"
}

# stop_cap NAME: lets late packets arrive, stops tcpdump with SIGINT (so the
# file is flushed and closed), copies the capture to $OUT.
stop_cap() {
    local name=$1
    sleep 1
    kill -INT "$CAP_PID"
    wait "$CAP_PID" || die "tcpdump for $name exited with an error: $(cat "$TMP/$name.tcpdump.err")"
    forget_pid "$CAP_PID"
    grep -E 'captured|dropped' "$TMP/$name.tcpdump.err" | sed "s/^/[record]   $name: /" >&2 || true
    install -m 0644 "$TMP/$name.pcap" "$OUT/$name.pcap"
    log "wrote $OUT/$name.pcap ($(stat -c %s "$OUT/$name.pcap") bytes)"
}

del_pair() {
    ip netns del "$A"
    ip netns del "$B"
}

# ---------------------------------------------------------------------------
# dhcp.pcap: dnsmasq (A) serves busybox udhcpc (B): DISCOVER/OFFER/REQUEST/ACK,
# then RELEASE (udhcpc -q -R exits after the lease and releases it).
record_dhcp() {
    log "dhcp.pcap"
    mk_pair
    ip -n "$A" addr add 10.200.1.1/24 dev vA
    cat >"$TMP/udhcpc.script" <<'EOF'
#!/bin/sh
# Minimal udhcpc event script: configure/unconfigure the leased address so the
# RELEASE (sent from the leased address through the kernel) can go out.
case "$1" in
    deconfig) ip addr flush dev "$interface" ;;
    bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"
                 : >"$FX_BOUND" ;;
esac
exit 0
EOF
    chmod +x "$TMP/udhcpc.script"
    start_cap "$A" vA dhcp
    ip netns exec "$A" dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
        --interface=vA --bind-interfaces --user=root --group=root --pid-file= \
        --log-facility=- --log-dhcp --no-ping --dhcp-authoritative \
        --dhcp-leasefile="$TMP/dnsmasq.leases" \
        --dhcp-range=10.200.1.100,10.200.1.150,255.255.255.0,120 \
        --dhcp-option=option:router,10.200.1.1 \
        --dhcp-option=option:dns-server,10.200.1.1,10.200.1.53 \
        --dhcp-option=option:domain-name,fixture.test \
        --dhcp-option=option:domain-search,a.test,b.test \
        --dhcp-option=option:mtu,1400 \
        >"$TMP/dnsmasq.log" 2>&1 &
    local dns_pid=$!
    PIDS+=("$dns_pid")
    sleep 1
    kill -0 "$dns_pid" 2>/dev/null || { cat "$TMP/dnsmasq.log" >&2; die "dnsmasq failed to start"; }
    # -R: release the lease when udhcpc exits (on SIGTERM below).
    FX_BOUND=$TMP/udhcpc.bound ip netns exec "$B" busybox udhcpc -i vB -f -R -n -t 5 -T 1 -A 1 \
        -s "$TMP/udhcpc.script" -O search -O mtu -O hostname -x hostname:fixture \
        >"$TMP/udhcpc.log" 2>&1 &
    local dhc_pid=$!
    PIDS+=("$dhc_pid")
    local i
    for i in $(seq 1 100); do [[ -e $TMP/udhcpc.bound ]] && break; sleep 0.1; done
    [[ -e $TMP/udhcpc.bound ]] || { cat "$TMP/udhcpc.log" >&2; die "udhcpc got no lease"; }
    sleep 0.5
    kill -TERM "$dhc_pid"; wait "$dhc_pid" || true; forget_pid "$dhc_pid"
    stop_cap dhcp
    kill "$dns_pid"; wait "$dns_pid" || true; forget_pid "$dns_pid"
    del_pair
}

# ---------------------------------------------------------------------------
# ping.pcap: ARP, ping default size, -s 4000 and -s 30000 (IPv4 fragments at
# MTU 1500), and ping -R (record-route IP option).
record_ping() {
    log "ping.pcap"
    mk_pair
    ip -n "$A" addr add 10.200.2.1/24 dev vA
    ip -n "$B" addr add 10.200.2.2/24 dev vB
    start_cap "$A" vA ping
    ip netns exec "$A" ping -n -q -c 3 -i 0.2 10.200.2.2 >/dev/null
    ip netns exec "$A" ping -n -q -c 2 -i 0.2 -s 4000 10.200.2.2 >/dev/null
    ip netns exec "$A" ping -n -q -c 2 -i 0.2 -s 30000 10.200.2.2 >/dev/null
    ip netns exec "$A" ping -n -q -c 2 -i 0.2 -R 10.200.2.2 >/dev/null
    stop_cap ping
    del_pair
}

# write_tcp_client: $TMP/tcp_client.py ADDR PORT NBYTES, for either family:
# first a connection to the closed PORT+1 (refused: SYN, RST/ACK), then NBYTES
# to PORT, then reads the server's reply until it closes.
write_tcp_client() {
    cat >"$TMP/tcp_client.py" <<'EOF'
import socket, sys
addr, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pattern = bytes(range(256)) * (nbytes // 256 + 1)
# First a connection attempt to a closed port: SYN answered by the kernel's RST/ACK.
try:
    socket.create_connection((addr, port + 1), timeout=5).close()
    sys.exit("port %d unexpectedly open" % (port + 1))
except ConnectionRefusedError:
    pass
c = socket.create_connection((addr, port), timeout=30)
c.sendall(pattern[:nbytes])
c.shutdown(socket.SHUT_WR)
reply = b""
while True:
    d = c.recv(4096)
    if not d:
        break
    reply += d
c.close()
sys.stdout.write(reply.decode())
EOF
}

# ---------------------------------------------------------------------------
# tcp.pcap: SYN to a closed port (RST/ACK), then a TCP bulk transfer A -> B
# (python3 sockets) with Linux default SYN options; nftables
# in B drops a few data segments (after the capture point) so B's ACKs carry
# SACK blocks and A retransmits.
record_tcp() {
    log "tcp.pcap"
    mk_pair
    ip -n "$A" addr add 10.200.3.1/24 dev vA
    ip -n "$B" addr add 10.200.3.2/24 dev vB
    # Drop every 16th full-sized data segment from A (deterministic counter).
    ip netns exec "$B" nft -f - <<'EOF'
table ip fxloss {
    chain pre {
        type filter hook prerouting priority -300; policy accept;
        ip saddr 10.200.3.1 tcp dport 5001 ip length > 1000 numgen inc mod 16 == 5 counter drop
    }
}
EOF
    cat >"$TMP/tcp_server.py" <<'EOF'
import socket, sys
addr, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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
    write_tcp_client
    start_cap "$A" vA tcp
    ip netns exec "$B" python3 "$TMP/tcp_server.py" 10.200.3.2 5001 "$TMP/tcp.ready" &
    local srv=$!
    PIDS+=("$srv")
    local i
    for i in $(seq 1 100); do [[ -e $TMP/tcp.ready ]] && break; sleep 0.1; done
    [[ -e $TMP/tcp.ready ]] || die "tcp server did not start"
    ip netns exec "$A" python3 "$TMP/tcp_client.py" 10.200.3.2 5001 "$TCP_BYTES" >"$TMP/tcp_client.out"
    wait "$srv" || die "tcp server failed"
    forget_pid "$srv"
    log "  client got: $(cat "$TMP/tcp_client.out")"
    log "  nft drops: $(ip netns exec "$B" nft list table ip fxloss | grep -o 'packets [0-9]*')"
    stop_cap tcp
    del_pair
}

# ---------------------------------------------------------------------------
# udp.pcap: UDP to a closed port (kernel ICMP port unreachable), UDP echo with
# normal checksums, UDP sent with SO_NO_CHECK (checksum field 0), and one
# IPv6 UDP exchange (IPv6 frames appear with only the Ethernet layer).
record_udp() {
    log "udp.pcap"
    mk_pair ipv6
    ip -n "$A" addr add 10.200.4.1/24 dev vA
    ip -n "$B" addr add 10.200.4.2/24 dev vB
    ip -n "$A" addr add fd00:200:4::1/64 dev vA nodad
    ip -n "$B" addr add fd00:200:4::2/64 dev vB nodad
    sleep 3 # let the IPv6 link-local/MLD chatter die down before capturing
    cat >"$TMP/udp_server.py" <<'EOF'
import socket, sys, select
ready = sys.argv[1]
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s4.bind(("10.200.4.2", 7777))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.bind(("fd00:200:4::2", 7777))
open(ready, "w").close()
remaining = 3  # two IPv4 datagrams, one IPv6
while remaining:
    r, _, _ = select.select([s4, s6], [], [], 20)
    if not r:
        sys.exit("udp server: timeout")
    for s in r:
        d, peer = s.recvfrom(2048)
        s.sendto(b"echo:" + d, peer)
        remaining -= 1
EOF
    cat >"$TMP/udp_client.py" <<'EOF'
import socket, sys, time
SO_NO_CHECK = 11
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.bind(("10.200.4.1", 40001))
c.settimeout(5)
c.sendto(b"nobody listens here", ("10.200.4.2", 9))      # closed port -> ICMP
time.sleep(0.2)
c.sendto(b"hello with checksum", ("10.200.4.2", 7777))
print(c.recvfrom(2048)[0])
n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
n.bind(("10.200.4.1", 40002))
n.settimeout(5)
n.sendto(b"hello without checksum", ("10.200.4.2", 7777))
print(n.recvfrom(2048)[0])
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.settimeout(5)
s6.sendto(b"hello over ipv6", ("fd00:200:4::2", 7777))
print(s6.recvfrom(2048)[0])
EOF
    start_cap "$A" vA udp
    ip netns exec "$B" python3 "$TMP/udp_server.py" "$TMP/udp.ready" &
    local srv=$!
    PIDS+=("$srv")
    local i
    for i in $(seq 1 100); do [[ -e $TMP/udp.ready ]] && break; sleep 0.1; done
    [[ -e $TMP/udp.ready ]] || die "udp server did not start"
    ip netns exec "$A" python3 "$TMP/udp_client.py" >"$TMP/udp_client.out" || die "udp client failed"
    wait "$srv" || die "udp server failed"
    forget_pid "$srv"
    stop_cap udp
    del_pair
}

# ---------------------------------------------------------------------------
# vlan.pcap: ARP + ping over VLAN 5, captured on the parent veth so frames
# carry the 802.1Q tag. Uses a VLAN sub-interface when the kernel has 8021q;
# otherwise (CONFIG_VLAN_8021Q off, as on the recording machine) the kernel
# itself tags/untags through a tiny tc eBPF program (bpf_skb_vlan_push on
# egress, bpf_skb_vlan_pop on ingress) on both veth ends.
write_bpf_loader() {
    cat >"$TMP/bpf_vlan.py" <<'EOF'
# Loads a 5-instruction tc (sched_cls) eBPF program and pins it:
#   push VID: bpf_skb_vlan_push(skb, htons(0x8100), VID); return TC_ACT_OK
#   pop:      bpf_skb_vlan_pop(skb);                      return TC_ACT_OK
import ctypes, os, platform, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
NR_BPF = {"x86_64": 321, "aarch64": 280, "i686": 357, "armv7l": 386}[platform.machine()]
BPF_PROG_LOAD, BPF_OBJ_PIN, BPF_PROG_TYPE_SCHED_CLS = 5, 6, 3
def insn(op, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
MOV64_IMM, CALL, EXIT = 0xB7, 0x85, 0x95
kind, path = sys.argv[1], sys.argv[2]
if kind == "push":
    vid = int(sys.argv[3])
    proto = int.from_bytes((0x8100).to_bytes(2, "big"), sys.byteorder)  # htons
    code = (insn(MOV64_IMM, 2, imm=proto) + insn(MOV64_IMM, 3, imm=vid) +
            insn(CALL, imm=18) + insn(MOV64_IMM, 0, imm=0) + insn(EXIT))
else:
    code = insn(CALL, imm=19) + insn(MOV64_IMM, 0, imm=0) + insn(EXIT)
insns = ctypes.create_string_buffer(code, len(code))
lic = ctypes.create_string_buffer(b"GPL")
logbuf = ctypes.create_string_buffer(65536)
attr = ctypes.create_string_buffer(struct.pack(
    "<IIQQIIQII16s", BPF_PROG_TYPE_SCHED_CLS, len(code) // 8, ctypes.addressof(insns),
    ctypes.addressof(lic), 1, len(logbuf), ctypes.addressof(logbuf), 0, 0,
    ("fx_vlan_" + kind).encode()), 256)
fd = libc.syscall(NR_BPF, BPF_PROG_LOAD, attr, 256)
if fd < 0:
    err = os.strerror(ctypes.get_errno())
    sys.exit("BPF_PROG_LOAD: %s\n%s" % (err, logbuf.value.decode(errors="replace")))
cpath = ctypes.create_string_buffer(path.encode())
pattr = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(cpath), fd, 0), 256)
if libc.syscall(NR_BPF, BPF_OBJ_PIN, pattr, 256) < 0:
    sys.exit("BPF_OBJ_PIN: %s" % os.strerror(ctypes.get_errno()))
EOF
}

record_vlan() {
    log "vlan.pcap"
    mk_pair
    local ifa ifb
    if ip -n "$A" link add link vA name vA.5 type vlan id 5 2>/dev/null; then
        log "  using 802.1Q sub-interfaces vA.5/vB.5"
        ip -n "$B" link add link vB name vB.5 type vlan id 5
        ifa=vA.5 ifb=vB.5
        ip netns exec "$A" ethtool -K vA.5 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
        ip netns exec "$B" ethtool -K vB.5 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
        ip -n "$A" link set vA.5 up
        ip -n "$B" link set vB.5 up
    else
        log "  kernel has no 802.1Q sub-interfaces (CONFIG_VLAN_8021Q); tagging with tc eBPF vlan push/pop"
        BPFFS=$TMP/bpffs
        mkdir -p "$BPFFS"
        mount -t bpf fxbpf "$BPFFS" || die "cannot mount a bpf filesystem"
        write_bpf_loader
        python3 "$TMP/bpf_vlan.py" push "$BPFFS/push5" 5
        python3 "$TMP/bpf_vlan.py" pop "$BPFFS/pop"
        local pair
        for pair in "$A vA" "$B vB"; do
            set -- $pair
            tc -n "$1" qdisc add dev "$2" clsact
            tc -n "$1" filter add dev "$2" egress bpf direct-action pinned "$BPFFS/push5"
            tc -n "$1" filter add dev "$2" ingress bpf direct-action pinned "$BPFFS/pop"
        done
        ifa=vA ifb=vB
    fi
    ip -n "$A" addr add 10.200.5.1/24 dev "$ifa"
    ip -n "$B" addr add 10.200.5.2/24 dev "$ifb"
    start_cap "$A" vA vlan
    ip netns exec "$A" ping -n -q -c 3 -i 0.2 10.200.5.2 >/dev/null
    stop_cap vlan
    del_pair
    if [[ -n $BPFFS ]]; then umount "$BPFFS"; BPFFS=""; fi
}

# The IPv6 captures (ndp6, ping6, udp6, tcp6, dns).
source "$HERE/record-ipv6.sh"

mkdir -p "$OUT"
targets=("$@")
ALL=(dhcp ping tcp udp vlan ndp6 ping6 udp6 tcp6 dns)
((${#targets[@]})) || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
    case " ${ALL[*]} " in
        *" $t "*) "record_$t" ;;
        *) die "unknown capture '$t' (choose from: ${ALL[*]})" ;;
    esac
done
log "done: ${targets[*]}"
