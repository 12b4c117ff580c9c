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
# The guest, the daemon and the host server each hold one socket per connection (the usual default
# of 1,024 is far too few): raise the soft open-files limit to CONNS + 1,024, and the hard one too if
# it is lower (which needs CAP_SYS_RESOURCE).
want_files=$((conns + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want_files" ]; then
    ulimit -Hn "$want_files" 2>/dev/null || { echo "the hard open-files limit is $hard; $conns connections need $want_files"; exit 1; }
fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_files" ]; then ulimit -Sn "$want_files"; fi
work=$(mktemp -d)
chmod 755 "$work"
server=""
daemon=""
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
            # Drain the accept queue: one accept per wake-up let it overflow (somaxconn 4096) while
            # thousands of connections arrived at once, and an overflow drops the handshake's last
            # ACK, so a connection the daemon holds as open waits for retransmissions here.
            while True:
                try: c, _ = l.accept()
                except BlockingIOError: break
                c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        else:
            c = key.fileobj
            try: d = c.recv(65536)
            except (ConnectionResetError, BlockingIOError): d = b""
            if d:
                # Echo all of it (a non-blocking send may take only part).
                try: c.setblocking(True); c.sendall(d); c.setblocking(False)
                except OSError: pass
            else:
                sel.unregister(c); c.close()
PY
cat >"$work/guest.py" <<'PY'
import os, random, socket, sys, time
port, n, hold, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def phase(name): open(os.path.join(work, name), "w").close()
def wait_for(name, limit):
    end = time.time() + limit
    while not os.path.exists(os.path.join(work, name)):
        if time.time() > end: sys.exit("guest: no %s from the script in %d s" % (name, limit))
        time.sleep(0.1)
def recv_exactly(s, k):
    got = b""
    while len(got) < k:
        d = s.recv(k - len(got))
        if not d: raise EOFError("EOF after %d of %d bytes" % (len(got), k))
        got += d
    return got
# The script samples the daemon's baseline before the first connection.
phase("ready"); wait_for("go", 60)
socks = []; t = time.time()
for i in range(n):
    s = socket.create_connection(("192.168.65.2", port), timeout=30); socks.append(s)
for s in socks: s.sendall(b"hello")
for s in socks:
    assert recv_exactly(s, 5) == b"hello"
print("connected %d in %.1f s" % (n, time.time() - t), flush=True)
phase("held"); wait_for("sampled", 60)
sample = random.Random(5).sample(socks, min(100, n)); rounds = 0; end = time.time() + hold
while time.time() < end:
    for s in sample: s.sendall(b"x" * 1000)
    for s in sample: recv_exactly(s, 1000)
    rounds += 1
    time.sleep(1)
for s in socks: s.close()
print("ok %d connections held %d s, %d rounds of traffic on %d of them" % (n, hold, rounds, len(sample)), flush=True)
# Stay (and so keep the daemon running) until the script has sampled it after the close.
phase("closed"); wait_for("done", 120)
PY
python3 "$work/host.py" >"$work/port" &
server=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
alive() { kill -0 "$daemon" 2>/dev/null || { echo "the daemon exited early; its stderr:"; cat "$work/daemon.err"; exit 1; }; }
await_phase() { while [ ! -e "$work/$1" ]; do sleep 0.2; alive; done; }
"$vpnkit" run --log-level error --max-connections $((conns + 100)) -- python3 "$work/guest.py" "$port" "$conns" "$hold" "$work" 2>"$work/daemon.err" &
daemon=$!
pid=$daemon
await_phase ready
sleep 1
base_rss=$(rss $pid); base_fds=$(fds $pid)
touch "$work/go"
await_phase held
sleep 2
held_rss=$(rss $pid); held_fds=$(fds $pid)
touch "$work/sampled"
await_phase closed
# The daemon closes its host sockets as the guest's FINs arrive: wait up to 30 s for them to return.
waited=0
while [ "$(fds $pid)" -gt "$base_fds" ] && [ "$waited" -lt 60 ]; do sleep 0.5; waited=$((waited + 1)); alive; done
sleep 2
after_rss=$(rss $pid); after_fds=$(fds $pid)
touch "$work/done"
status=0
wait $daemon || status=$?
daemon=""
echo "open files: $base_fds before, $held_fds held, $after_fds after closing ($((waited / 2)) s for them to return)"
echo "resident memory: $base_rss KiB before, $held_rss KiB held, $after_rss KiB after"
echo "memory per connection (held − before) / $conns: $(( (held_rss - base_rss) * 1024 / conns )) bytes"
if [ -s "$work/daemon.err" ]; then echo "the daemon's stderr:"; cat "$work/daemon.err"; fi
[ "$status" = 0 ] || { echo "vpnkit run exited with status $status"; exit 1; }
# The baseline can include a few files the daemon closes soon after (29 before, 26 after, 10,026 held
# with 10,000 connections): count the held connections' files from the lower of the two.
floor=$(( base_fds < after_fds ? base_fds : after_fds ))
[ "$held_fds" -ge "$((floor + conns))" ] || { echo "$((held_fds - floor)) open files held for $conns connections"; exit 1; }
[ "$after_fds" -le "$base_fds" ] || { echo "$((after_fds - base_fds)) open files did not come back"; exit 1; }
