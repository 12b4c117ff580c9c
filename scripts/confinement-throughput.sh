#!/usr/bin/env bash
# What confinement costs: guest→host and host→guest TCP (iperf3) through `vpnkit slirp4netns --mtu
# 65520` unconfined, with --enable-seccomp, and with both --enable-seccomp and --enable-sandbox, the
# settings interleaved round after round so that a machine's drift hits all of them. Root.
# Usage: scripts/confinement-throughput.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-4}"
swift build -c release --product vpnkit >/dev/null
vpnkit=.build/release/vpnkit
port=$((20000 + RANDOM % 20000))
iperf3 -s -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
server=$!
ns=vpnkit-confine-bench-$$
trap 'kill $server 2>/dev/null || true; ip netns del $ns 2>/dev/null || true' EXIT
sleep 0.5
for round in $(seq 1 "$rounds"); do
    for flags in "" "--enable-seccomp" "--enable-seccomp --enable-sandbox"; do
        ip netns add "$ns"
        # shellcheck disable=SC2086 # $flags is a list of flags
        "$vpnkit" slirp4netns $flags --mtu 65520 -c --netns-type=path "/var/run/netns/$ns" tap0 >/dev/null 2>&1 &
        daemon=$!
        for _ in $(seq 1 50); do ip netns exec "$ns" ip -4 addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
        sleep 0.3
        up=$(ip netns exec "$ns" iperf3 -c 10.0.2.2 -p "$port" -t "$seconds" -f m | awk '/receiver/ {print $7}')
        down=$(ip netns exec "$ns" iperf3 -c 10.0.2.2 -p "$port" -t "$seconds" -R -f m | awk '/receiver/ {print $7}')
        echo "round $round [${flags:-unconfined}] guest→host $up Mbit/s, host→guest $down Mbit/s"
        kill -TERM "$daemon"; sleep 0.3; kill -KILL "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true
        ip netns del "$ns"
    done
done
