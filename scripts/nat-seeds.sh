#!/usr/bin/env bash
# NAT'd transfers through a faulty guest link: for each seed, `vpnkit run` with 5 % loss, 5 %
# reorder, 1 % duplication and 1 % corruption (both directions, the seed fixing the sequence) runs a
# guest that downloads and uploads MIB MiB through the NAT to a server on the host's 127.0.0.1, each
# checked by SHA-256. Root. Usage: scripts/nat-seeds.sh [SEEDS] [MIB]   (default 50 seeds, 64 MiB)
# VPNKIT=/path/to/vpnkit skips the build and uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-50}"
mib="${2:-64}"
bytes=$((mib << 20))
# VPNKIT=/path/to/vpnkit uses that binary instead of building one.
if [ -n "${VPNKIT:-}" ]; then
    vpnkit="$VPNKIT"
else
    swift build -c release --product vpnkit >/dev/null
    vpnkit=.build/release/vpnkit
fi
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/pattern.py" <<'PY'
import hashlib, random
BLOCK = random.Random(7).randbytes(1048573)
def chunks(n):
    while n > 0:
        c = BLOCK[:n] if n < len(BLOCK) else BLOCK
        yield c
        n -= len(c)
def digest(n):
    h = hashlib.sha256()
    for c in chunks(n): h.update(c)
    return h.hexdigest()
PY
cat >"$work/host.py" <<'PY'
import hashlib, socket, socketserver, sys
sys.path.insert(0, sys.argv[1]); import pattern
class H(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request; line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c: return
            line += c
        cmd, n = line.split()
        if cmd == b"source":
            for c in pattern.chunks(int(n)): s.sendall(c)
            s.shutdown(socket.SHUT_WR); s.recv(1)
        else:
            h = hashlib.sha256(); got = 0
            while True:
                d = s.recv(1 << 20)
                if not d: break
                h.update(d); got += len(d)
            s.sendall(f"{got} {h.hexdigest()}\n".encode()); s.shutdown(socket.SHUT_WR)
class T(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True; allow_reuse_address = True
t = T(("127.0.0.1", 0), H); print(t.server_address[1], flush=True); t.serve_forever()
PY
cat >"$work/guest.py" <<'PY'
import hashlib, socket, sys, time
sys.path.insert(0, sys.argv[1]); import pattern
port, n = int(sys.argv[2]), int(sys.argv[3]); want = pattern.digest(n); t = time.time()
s = socket.create_connection(("192.168.65.2", port), timeout=120); s.sendall(b"source %d\n" % n)
h = hashlib.sha256(); got = 0
while True:
    d = s.recv(1 << 20)
    if not d: break
    h.update(d); got += len(d)
s.close(); down = time.time() - t
s = socket.create_connection(("192.168.65.2", port), timeout=120); s.sendall(b"sink 0\n")
for c in pattern.chunks(n): s.sendall(c)
s.shutdown(socket.SHUT_WR); reply = s.makefile().readline().split()
ok = got == n and h.hexdigest() == want and int(reply[0]) == n and reply[1] == want
print(("ok" if ok else "FAIL") + " down %.1f s up %.1f s" % (down, time.time() - t - down))
sys.exit(0 if ok else 1)
PY
python3 "$work/host.py" "$work" >"$work/port" &
server=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

passed=0
for seed in $(seq 1 "$seeds"); do
    line=$("$vpnkit" run --log-level error --fault-drop 0.05 --fault-reorder 0.05 --fault-duplicate 0.01 --fault-corrupt 0.01 \
        --fault-seed "$seed" -- python3 "$work/guest.py" "$work" "$port" "$bytes" 2>&1 | tail -1) || true
    echo "seed $seed: $line"
    case "$line" in ok*) passed=$((passed + 1)) ;; esac
done
echo "$passed of $seeds seeds byte-exact both ways ($mib MiB each way, 5 % loss, 5 % reorder, 1 % duplication, 1 % corruption)"
[ "$passed" = "$seeds" ]
