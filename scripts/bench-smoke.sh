#!/usr/bin/env bash
# Builds the package-benchmark suite (Benchmarks/, release mode) and runs every benchmark briefly.
# Proves the benchmarks build and run; the figures from a smoke run mean nothing.
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"
VPNKIT_BENCH_SMOKE=1 swift package benchmark --no-progress --format markdown
