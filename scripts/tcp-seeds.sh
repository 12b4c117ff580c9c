#!/usr/bin/env bash
# The TCP seed sweep at full size: 50 seeds × NewReno and CUBIC × IPv4 and IPv6, 4 MiB each way at once under 5 %
# loss, 5 % reorder, 1 % duplication and 1 % corruption, built in release mode (the debug run of
# `swift test` uses 256 KiB per seed to stay quick).
set -euo pipefail
cd "$(dirname "$0")/.."
VPNKIT_SIM_BYTES="${VPNKIT_SIM_BYTES:-4194304}" swift test -c release -Xswiftc -enable-testing --filter "TCPManySeedsTests"
