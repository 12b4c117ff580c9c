#!/usr/bin/env bash
# Builds the examples (programs written against `import VPNKit` only) and runs each, checking what it
# prints. tcp-echo-server needs root (a TAP device in a namespace of its own); it is skipped without.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build --target tcp-echo-server --target replay-capture --target dhcp-lease --target custom-transport >/dev/null
bin=$(swift build --show-bin-path)
fail=0
check() { # name, expected text, output
    if grep -q -- "$2" <<<"$3"; then echo "ok   $1"; else echo "FAIL $1: expected '$2' in:"; echo "$3"; fail=1; fi
}

out=$(timeout 60 "$bin/replay-capture" 2>&1) || true
check replay-capture "0 differ" "$out"

out=$(timeout 60 "$bin/dhcp-lease" 2>&1) || true
check dhcp-lease "address   10.77.0.3/24" "$out"

out=$(timeout 60 "$bin/custom-transport" "hello from CI" 2>&1) || true
check custom-transport "echoed: hello from CI" "$out"

if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    ns="vk-example-$$"
    ip netns add "$ns"
    trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
    timeout 60 "$bin/tcp-echo-server" --tap tap0 --netns "$ns" --address 10.0.0.1/24 --connections 1 >/tmp/$ns.out 2>&1 &
    server=$!
    for _ in $(seq 50); do ip -n "$ns" link show tap0 >/dev/null 2>&1 && break; sleep 0.1; done
    ip -n "$ns" addr add 10.0.0.2/24 dev tap0
    ip -n "$ns" link set tap0 up
    reply=$(ip netns exec "$ns" python3 -c "
import socket
s = socket.create_connection(('10.0.0.1', 7), timeout=10)
s.sendall(b'echo me' * 1000); s.shutdown(socket.SHUT_WR)
data = b''
while True:
    b = s.recv(65536)
    if not b: break
    data += b
print('echo ok' if data == b'echo me' * 1000 else 'echo wrong: %d bytes' % len(data))
" 2>&1) || true
    wait "$server" || true
    check tcp-echo-server "echo ok" "$reply"
    check tcp-echo-server "echoed 7000 bytes" "$(cat /tmp/$ns.out)"
    rm -f /tmp/$ns.out
else
    echo "skip tcp-echo-server: needs root and iproute2 (a TAP device in a network namespace)"
fi
exit $fail
