#!/usr/bin/env bash
# The main job, end to end: builds vpnkit and gives a command a network of its own. A web server
# on the host's 127.0.0.1:8000 is fetched from inside a fresh namespace as http://host.internal:8000/
# (DHCP from our server, DNS from our gateway, TCP through our stack and NAT), the gateway and the
# host alias are pinged, and the daemon's counters are printed when the command ends.
# Needs root for the namespace; without root it decodes a recorded capture instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --demo
swift build -c release --product vpnkit
vpnkit=.build/release/vpnkit

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: not root, so no network namespace; decoding Fixtures/tcp.pcap instead" >&2
    exec "$vpnkit" decode Fixtures/tcp.pcap
fi

site="$(mktemp -d)"
echo "hello from the host, through SwiftVPNKit" > "$site/index.html"
python3 -m http.server 8000 --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$site"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8000/ && break; sleep 0.1; done

echo "== vpnkit run -- sh -c 'curl http://host.internal:8000/; ping …'"
"$vpnkit" run -- sh -c '
    ip -brief addr show tap0
    echo "-- curl http://host.internal:8000/"; curl -sS http://host.internal:8000/
    echo "-- ping the gateway and the host alias"; ping -c 2 -i 0.2 gateway.internal | tail -2; ping -c 2 -i 0.2 192.168.65.2 | tail -1
'
