#!/usr/bin/env bash
# NAT'd transfers through a faulty guest link: for each seed, `vpnkit run` with 5 % loss, 5 %
# reorder, 1 % duplication and 1 % corruption (both directions, the seed fixing the sequence) runs a
# guest that downloads and uploads MIB MiB through the NAT to a server on the host's 127.0.0.1, each
# checked by SHA-256. Root. Usage: scripts/nat-seeds.sh [SEEDS] [MIB]   (default 50 seeds, 64 MiB)
# VPNKIT=/path/to/vpnkit skips the build and uses that binary. FIRST_SEED (default 1) starts the
# seeds elsewhere; SEED_TIMEOUT (default 1800 s) bounds one seed's run, a hang counting as a failure;
# MAX_SECONDS (default none) starts no further seed once that much time has passed.
# Each seed's daemon stderr is kept, with the guest's output, under a directory printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-50}"
mib="${2:-64}"
first="${FIRST_SEED:-1}"
limit="${SEED_TIMEOUT:-1800}"
budget="${MAX_SECONDS:-0}"
bytes=$((mib << 20))
if [ -n "${VPNKIT:-}" ]; then
    vpnkit="$VPNKIT"
else
    swift build -c release --product vpnkit >/dev/null
    vpnkit=.build/release/vpnkit
fi
work=$(mktemp -d)
logs=$(mktemp -d /tmp/nat-seeds-logs.XXXXXX)
server=""
daemon=""
watchdog=""
trap 'kill $server $daemon $watchdog 2>/dev/null || true; rm -rf "$work"' EXIT

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
down_got = up_got = 0; down_ok = up_ok = False; down = up = 0.0; err = ""
try:
    s = socket.create_connection(("192.168.65.2", port), timeout=120); s.sendall(b"source %d\n" % n)
    h = hashlib.sha256()
    while True:
        d = s.recv(1 << 20)
        if not d: break
        h.update(d); down_got += len(d)
    s.close(); down = time.time() - t
    down_ok = down_got == n and h.hexdigest() == want
    t = time.time()
    s = socket.create_connection(("192.168.65.2", port), timeout=120); s.sendall(b"sink 0\n")
    for c in pattern.chunks(n): s.sendall(c)
    s.shutdown(socket.SHUT_WR); reply = s.makefile().readline().split()
    up = time.time() - t
    if len(reply) == 2:
        up_got = int(reply[0]); up_ok = up_got == n and reply[1] == want
    else:
        err = " (no digest from the server: %r)" % reply
except Exception as e:
    err = " (%s: %s after %.1f s)" % (type(e).__name__, e, time.time() - t)
ok = down_ok and up_ok
print(("ok" if ok else "FAIL") + " down %.1f s up %.1f s" % (down, up) +
      ("" if ok else " down %d of %d bytes%s, up %d bytes%s" % (down_got, n, "" if down_ok else " (bad)", up_got, "" if up_ok else " (bad)") + err), flush=True)
sys.exit(0 if ok else 1)
PY
python3 "$work/host.py" "$work" >"$work/port" &
server=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

passed=0
ran=0
leaks=0
start_all=$(date +%s)
for seed in $(seq "$first" $((first + seeds - 1))); do
    start=$(date +%s)
    if [ "$budget" -gt 0 ] && [ $((start - start_all)) -ge "$budget" ]; then
        echo "MAX_SECONDS=$budget reached: seeds $seed to $((first + seeds - 1)) not run"; break
    fi
    ran=$((ran + 1))
    status=0
    # The guest's verdict goes to stdout; the daemon's (and the guest's) stderr to their own file.
    "$vpnkit" run --log-level error --fault-drop 0.05 --fault-reorder 0.05 --fault-duplicate 0.01 --fault-corrupt 0.01 \
        --fault-seed "$seed" -- python3 "$work/guest.py" "$work" "$port" "$bytes" >"$logs/seed-$seed.out" 2>"$logs/seed-$seed.err" &
    daemon=$!
    # Watchdog: SIGTERM after SEED_TIMEOUT, SIGKILL 30 s later.
    ( sleep "$limit"; touch "$work/hung-$seed"; kill -TERM "$daemon" 2>/dev/null; sleep 30; kill -KILL "$daemon" 2>/dev/null ) >/dev/null 2>&1 &
    watchdog=$!
    wait "$daemon" || status=$?
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    watchdog=""
    line=$(grep -E '^(ok|FAIL)' "$logs/seed-$seed.out" | tail -1 || true)
    [ -e "$work/hung-$seed" ] && line="HANG: vpnkit run still running after $limit s (killed) ${line}"
    [ -n "$line" ] || line="FAIL: no verdict from the guest (vpnkit run exit status $status)"
    # The daemon names its namespace vpnkit-PID: only its own is checked (other daemons have theirs).
    leftover=""
    if [ -e "/var/run/netns/vpnkit-$daemon" ]; then leftover=" namespace vpnkit-$daemon"; fi
    daemon=""
    echo "seed $seed: $line [$(( $(date +%s) - start )) s, exit $status]"
    case "$line" in
        ok*) passed=$((passed + 1)) ;;
        *) echo "  the daemon's stderr (last 20 lines of $logs/seed-$seed.err):"; tail -20 "$logs/seed-$seed.err" | sed 's/^/    /' ;;
    esac
    if [ -n "$leftover" ]; then echo "  left behind by the daemon:$leftover"; leaks=$((leaks + 1)); fi
done
echo "$passed of $ran seeds byte-exact both ways ($mib MiB each way, 5 % loss, 5 % reorder, 1 % duplication, 1 % corruption) in $(( $(date +%s) - start_all )) s; $leaks left a namespace behind; logs in $logs"
[ "$passed" = "$ran" ] && [ "$ran" = "$seeds" ] && [ "$leaks" = 0 ]
