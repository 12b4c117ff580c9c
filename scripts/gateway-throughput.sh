#!/usr/bin/env bash
# TCP throughput to the gateway's discard service over IPv4 and over IPv6, side by side: a fresh
# namespace (vpnkit run -- …) on a TAP, at MTU 1500 and 65520, RUNS runs each, interleaved so the
# machine's drift hits both families alike. Prints each run and the median with its range. Root.
# Usage: scripts/gateway-throughput.sh [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
runs="${2:-3}"
swift build -c release --product vpnkit >/dev/null
vpnkit=.build/release/vpnkit
client=$(cat <<'PY'
import socket, sys, time
family, seconds = sys.argv[1], float(sys.argv[2])
host = "fd00:65::1" if family == "6" else "192.168.65.1"
deadline = time.time() + 20
while True:  # DHCP and SLAAC may still be finishing
    try:
        s = socket.create_connection((host, 9), timeout=2)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
block = b"\0" * (1 << 20)
sent, start = 0, time.time()
while time.time() < start + seconds:
    sent += s.send(block)
s.shutdown(socket.SHUT_WR)
s.recv(1)  # the service closes once it has read everything
print(f"{sent * 8 / (time.time() - start) / 1e9:.2f}")
PY
)
declare -A results
for mtu in 1500 65520; do
    for run in $(seq 1 "$runs"); do
        for family in 4 6; do
            gbps=$("$vpnkit" run --mtu "$mtu" --diagnostic-services --log-level warning -- python3 -c "$client" "$family" "$seconds")
            echo "MTU $mtu IPv$family run $run: $gbps Gbit/s"
            results[$mtu,$family]+="$gbps "
        done
    done
done
for mtu in 1500 65520; do
    for family in 4 6; do
        python3 -c "
import statistics, sys
values = [float(v) for v in sys.argv[3:]]
print(f'MTU {sys.argv[1]} IPv{sys.argv[2]}: median {statistics.median(values):.2f} Gbit/s [{min(values):.2f}–{max(values):.2f}]')
" "$mtu" "$family" ${results[$mtu,$family]}
    done
done
