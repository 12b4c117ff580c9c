#!/usr/bin/env bash
# The main job, end to end: builds vpnkit, gives a fresh network namespace a TAP link to the stack
# (`vpnkit run`), pings the gateway from the namespace's kernel (small and fragmented pings), stops
# the daemon and shows its counters and the first frames of the capture it wrote.
# Needs root for the namespace; without root it decodes a recorded capture instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build -c release --product vpnkit
vpnkit=.build/release/vpnkit

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: not root, so no network namespace; decoding Fixtures/tcp.pcap instead" >&2
    exec "$vpnkit" decode Fixtures/tcp.pcap
fi

ns="vpnkit-demo-$$"
capture="$(mktemp -d)/guest.pcap"
daemon=""
cleanup() {
    [[ -n "$daemon" ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add 192.168.65.3/24 dev tap0
ip -n "$ns" link set tap0 up

"$vpnkit" run --netns "$ns" --tap tap0 --pcap "$capture" &
daemon=$!
for _ in $(seq 100); do ip -n "$ns" link show tap0 | grep -q NO-CARRIER || break; sleep 0.05; done

echo "== ping 192.168.65.1 from namespace $ns"
ip netns exec "$ns" ping -c 3 -i 0.2 192.168.65.1
echo "== ping -s 30000 (fragments both ways)"
ip netns exec "$ns" ping -c 2 -i 0.2 -s 30000 192.168.65.1
echo "== the kernel's neighbour entry for the gateway"
ip -n "$ns" neigh show 192.168.65.1

kill -TERM "$daemon"
wait "$daemon" || true
daemon=""
echo "== the first frames of the capture ($capture)"
"$vpnkit" decode "$capture" | head -12
