#!/usr/bin/env bash
# Throughput through the NAT: iperf3 in a fresh namespace (vpnkit run -- …) against an iperf3
# server on the host's 127.0.0.1, guest→host and host→guest, at MTU 1500 and 65520. Root.
# Usage: scripts/nat-throughput.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
swift build -c release --product vpnkit >/dev/null
vpnkit=.build/release/vpnkit
port=$((20000 + RANDOM % 20000))
iperf3 -s -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
for mtu in 1500 65520; do
    "$vpnkit" run --mtu "$mtu" --log-level warning -- sh -c "
        up=\$(iperf3 -c 192.168.65.2 -p $port -t $seconds -f m | awk '/receiver/ {print \$7}')
        down=\$(iperf3 -c 192.168.65.2 -p $port -t $seconds -R -f m | awk '/receiver/ {print \$7}')
        echo \"MTU $mtu: guest→host \$up Mbit/s, host→guest \$down Mbit/s\""
done
