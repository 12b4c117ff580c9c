#!/usr/bin/env bash
# Soak: CONNS concurrent guest TCP connections through the NAT (default 10,000), held for SECONDS
# (default 60) with traffic on a sample of them every second, then closed. Reports the daemon's
# open files and resident memory before, while held and after, and the memory per connection.
# Root. Usage: scripts/soak.sh [CONNS] [SECONDS]
# VPNKIT=/path/to/vpnkit skips the build and uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
conns="${1:-10000}"
hold="${2:-60}"
# VPNKIT=/path/to/vpnkit uses that binary instead of building one.
if [ -n "${VPNKIT:-}" ]; then
    vpnkit="$VPNKIT"
else
    swift build -c release --product vpnkit >/dev/null
    vpnkit=.build/release/vpnkit
fi
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $server $daemon 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/host.py" <<'PY'
import selectors, socket
sel = selectors.DefaultSelector()
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(4096); l.setblocking(False)
sel.register(l, selectors.EVENT_READ)
print(l.getsockname()[1], flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is l:
            try:
                c, _ = l.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            except BlockingIOError: pass
        else:
            c = key.fileobj
            try: d = c.recv(65536)
            except (ConnectionResetError, BlockingIOError): d = b""
            if d:
                try: c.send(d)
                except OSError: pass
            else:
                sel.unregister(c); c.close()
PY
cat >"$work/guest.py" <<'PY'
import os, random, socket, sys, time
port, n, hold, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def phase(name): open(os.path.join(work, name), "w").close()
socks = []; t = time.time()
for i in range(n):
    s = socket.create_connection(("192.168.65.2", port), timeout=30); socks.append(s)
for s in socks: s.sendall(b"hello")
for s in socks:
    assert s.recv(5) == b"hello"
print("connected %d in %.1f s" % (n, time.time() - t), flush=True)
phase("held")
sample = random.Random(5).sample(socks, min(100, n)); rounds = 0; end = time.time() + hold
while time.time() < end:
    for s in sample: s.sendall(b"x" * 1000)
    for s in sample:
        got = 0
        while got < 1000: got += len(s.recv(1000 - got))
    rounds += 1
    time.sleep(1)
for s in socks: s.close()
print("ok %d connections held %d s, %d rounds of traffic on %d of them" % (n, hold, rounds, len(sample)), flush=True)
phase("closed")
time.sleep(8)
PY
python3 "$work/host.py" >"$work/port" &
server=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
"$vpnkit" run --log-level error --max-connections $((conns + 100)) -- python3 "$work/guest.py" "$port" "$conns" "$hold" "$work" &
daemon=$!
sleep 2
pid=$(pgrep -P $daemon -x vpnkit || echo $daemon)
base_rss=$(rss $pid); base_fds=$(fds $pid)
while [ ! -e "$work/held" ]; do sleep 0.5; kill -0 $daemon 2>/dev/null || { echo "the daemon exited early"; exit 1; }; done
sleep 2
held_rss=$(rss $pid); held_fds=$(fds $pid)
while [ ! -e "$work/closed" ]; do sleep 0.5; done
sleep 5
after_rss=$(rss $pid); after_fds=$(fds $pid)
wait $daemon
echo "open files: $base_fds before, $held_fds held, $after_fds after closing"
echo "resident memory: $base_rss KiB before, $held_rss KiB held, $after_rss KiB after"
echo "memory per connection (held − before) / $conns: $(( (held_rss - base_rss) * 1024 / conns )) bytes"
[ "$after_fds" -le "$base_fds" ]
