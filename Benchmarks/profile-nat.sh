#!/usr/bin/env bash
# Where the daemon's time goes per NAT'd TCP connection and per UDP round trip: `vpnkit run -- CMD`
# (release build) with a guest that opens short connections (connect, 1 byte each way, close) or
# sends datagrams, sequentially, to a host server on 127.0.0.1 through the host alias. perf counts
# the daemon's CPU time (task-clock: user and kernel, the guest kernel's receive work that runs in
# our TAP writes included) and its malloc calls (a uprobe on libc's malloc) over the workload only,
# and records a profile of the connections. Needs root, perf and python3.
#
# Usage: Benchmarks/profile-nat.sh [CONNECTIONS] [DATAGRAMS] [RUNS] [ENGINE]
#   ENGINE: reactor (default) or nio, the daemon's --io-engine.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-3000} datagrams=${2:-10000} runs=${3:-3} engine=${4:-reactor}
vpnkit=.build/release/vpnkit
[[ -x $vpnkit ]] || swift build -c release --product vpnkit
libc=$(ldd "$vpnkit" | awk '/libc.so.6/ {print $3}')
perf probe -q -x "$libc" malloc 2>/dev/null || true
work=$(mktemp -d /tmp/vpnkit-profile.XXXXXX)
trap 'kill $host 2>/dev/null; perf probe -q -d probe_libc:malloc 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/host.py" <<'PY'
import socket, sys, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("127.0.0.1", 0)); t.listen(512)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", t.getsockname()[1]))
def tcp():
    while True:
        c, _ = t.accept()
        try: c.recv(1); c.sendall(b"x")
        except OSError: pass
        c.close()
def udp():
    while True:
        d, a = u.recvfrom(2048); u.sendto(d, a)
threading.Thread(target=tcp, daemon=True).start(); threading.Thread(target=udp, daemon=True).start()
print(t.getsockname()[1], flush=True); threading.Event().wait()
PY
cat > "$work/guest.py" <<'PY'
import socket, sys, time
work, mode, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
open(f"{work}/ready", "w").close(); time.sleep(1.0)
start = time.time()
if mode == "tcp":
    for _ in range(n):
        s = socket.create_connection(("192.168.65.2", port)); s.sendall(b"x"); s.recv(1); s.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    for _ in range(n):
        s.sendto(b"x" * 32, ("192.168.65.2", port)); s.recvfrom(2048)
print(f"{mode} {n} in {time.time() - start:.3f} s", flush=True)
open(f"{work}/done", "w").close(); time.sleep(0.5)
PY

python3 "$work/host.py" < /dev/null > "$work/port" & host=$!
while [[ ! -s $work/port ]]; do sleep 0.05; done
port=$(cat "$work/port")

measure() {  # mode count [record]
    rm -f "$work/ready" "$work/done"
    "$vpnkit" run --configure --no-seccomp --io-engine "$engine" -- python3 "$work/guest.py" "$work" "$1" "$port" "$2" > "$work/out" 2> "$work/err" &
    local run=$!
    while [[ ! -e $work/ready ]]; do sleep 0.05; done
    local daemon; daemon=$(pgrep -P "$run" -f "vpnkit run" || echo "$run")
    sleep 0.8
    local wait_done="while [ ! -e $work/done ]; do sleep 0.05; done"
    if [[ ${3:-} == record ]]; then
        perf record -q -F 2000 -g -p "$daemon" -o "$work/perf.data" -- sh -c "$wait_done" 2>/dev/null
    else
        perf stat -x, -e task-clock,probe_libc:malloc -p "$daemon" -o "$work/stat" -- sh -c "$wait_done"
    fi
    wait "$run"
    if [[ ${3:-} != record ]]; then
        local ms mallocs
        ms=$(awk -F, '/task-clock/ {print $1}' "$work/stat"); mallocs=$(awk -F, '/malloc/ {print $1}' "$work/stat")
        echo "$(cat "$work/out"): daemon CPU $(python3 -c "print(f'{$ms * 1000 / $2:.1f}')") µs and $(python3 -c "print(f'{$mallocs / $2:.1f}')") mallocs each"
    fi
}

for run in $(seq 1 "$runs"); do
    echo "run $run:"
    measure tcp "$connections"
    measure udp "$datagrams"
done
measure tcp "$connections" record
echo "profile of the connections (share of the daemon's samples by library, then the hottest symbols):"
{ perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6; } || true
{ perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 | cut -c1-140; } || true
