#!/usr/bin/env bash
# Fuzzes every parser and the whole stack with libFuzzer (AddressSanitizer on).
#
#   scripts/fuzz.sh                      60 s per target
#   scripts/fuzz.sh --seconds 600 tcp    10 min on one target
#   scripts/fuzz.sh --smoke              5 s per target (CI)
#   scripts/fuzz.sh --runs 10000000 dns  until 10 million executions (no time limit)
#   scripts/fuzz.sh --jobs 2 --runs 10000000 stack
#                                        libFuzzer's fork mode: 2 worker processes share one corpus,
#                                        and the executions are counted over all of them (a crash,
#                                        hang, leak or out-of-memory in any worker still fails the run)
#   scripts/fuzz.sh --timeout 60 ...     seconds one input may take before it counts as a hang
#                                        (10 by default, 60 with --runs: libFuzzer measures wall
#                                        time, so a long run beside other work needs room)
#
# Seeds are cut from Fixtures/ and, when VPNKIT_TCPDUMP_CORPUS names it, tcpdump's capture corpus. A crash leaves its input in
# .build-fuzz/crashes/TARGET-*; copy it to Fuzz/Regressions/TARGET/ so `swift test` replays it for
# good. Prints executions per target and exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
runs=-1
timeout=
jobs=0
configuration=release
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) seconds=5; configuration=debug ;;  # a debug build compiles faster; speed hardly matters for 5 s
        --seconds) seconds="$2"; shift ;;
        --runs) runs="$2"; seconds=0; shift ;;
        --timeout) timeout="$2"; shift ;;
        --jobs) jobs="$2"; shift ;;
        *) targets+=("$1") ;;
    esac
    shift
done
[ -n "$timeout" ] || { [ "$runs" = -1 ] && timeout=10 || timeout=60; }
[ ${#targets[@]} -gt 0 ] || targets=(ethernet arp ipv4 ipv6 icmp icmpv6 ndp udp tcp dhcp dns decode qemu vmnet stack)

scratch=.build-fuzz
echo "== building vpnkit-fuzz with libFuzzer and AddressSanitizer ($configuration, $scratch)"
swift build -c "$configuration" --scratch-path "$scratch" --product vpnkit-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING >/dev/null
fuzzer="$scratch/$configuration/vpnkit-fuzz"

echo "== seeds"
swift build --product vpnkit-fuzz >/dev/null
replayer="$(swift build --show-bin-path)/vpnkit-fuzz"
rm -rf "$scratch/seeds"
shopt -s nullglob
corpus="${VPNKIT_TCPDUMP_CORPUS:-}"
"$replayer" --seeds "$scratch/seeds" Fixtures/*.pcap ${corpus:+"$corpus"/*.pcap "$corpus"/*.pcapng}
mkdir -p "$scratch/crashes"

# The longest input worth trying, per target: well past the largest thing each parser accepts, so
# the executions go to inputs that can reach new code, not to megabytes the first check rejects.
#   dhcp: a DHCP (or DHCPv6) message in one Ethernet frame; dns: EDNS's largest UDP answer;
#   ndp: a neighbour discovery message in one frame of the largest MTU we serve;
#   qemu, vmnet: several maximum frames with their prefixes (and vmnet's handshake);
#   stack: about ten maximum frames each way (the stack drops anything above the MTU);
#   the rest: a 64 KiB IP datagram and its Ethernet header.
max_len() {
    case "$1" in
        dhcp) echo 2048 ;;
        dns) echo 4096 ;;
        ndp) echo 9000 ;;
        qemu | vmnet) echo 8192 ;;
        stack) echo 16384 ;;
        *) echo 70000 ;;
    esac
}

status=0
printf '%-10s %14s %10s %8s\n' target executions exec/s result
for target in "${targets[@]}"; do
    corpus="$scratch/corpus/$target"
    mkdir -p "$corpus" "$scratch/seeds/$target"
    log="$scratch/$target.log"
    fork=()
    # Fork mode ignores crashes, hangs and out-of-memory by default: not here.
    [ "$jobs" -gt 0 ] && fork=(-fork="$jobs" -ignore_crashes=0 -ignore_timeouts=0 -ignore_ooms=0)
    if VPNKIT_FUZZ_TARGET="$target" ASAN_OPTIONS=detect_leaks=1 "$fuzzer" "$corpus" "$scratch/seeds/$target" "${fork[@]}" \
        -max_total_time="$seconds" -runs="$runs" -max_len="$(max_len "$target")" -rss_limit_mb=4096 -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$scratch/crashes/$target-" >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    if [ "$jobs" -gt 0 ]; then
        # Fork mode counts over every worker: "fuzzed for N iterations" at the end, "#N: ..." before.
        executed=$(grep -o 'fuzzed for [0-9]* iterations' "$log" | tail -1 | tr -dc 0-9 || true)
        [ -n "$executed" ] || executed=$(grep -o '^#[0-9]*:' "$log" | tail -1 | tr -dc 0-9 || true)
        [ -n "$executed" ] || executed=0
        last=$(grep -o 'oom/timeout/crash: [0-9/]*' "$log" | tail -1 || true)
        if [ -n "$last" ] && [ "$last" != "oom/timeout/crash: 0/0/0" ]; then result=CRASH; status=1; fi
    else
        executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    fi
    rate=$(grep -o 'exec/s: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    printf '%-10s %14s %10s %8s\n' "$target" "$executed" "$rate" "$result"
    if [ "$result" = CRASH ]; then grep -m5 -E 'ERROR|Fatal error|panic|deadly' "$log" || true; fi
done
[ $status = 0 ] || echo "crash inputs: $(ls $scratch/crashes)"
exit $status
