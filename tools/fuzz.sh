#!/usr/bin/env bash
# Fuzzes every reader of untrusted input with libFuzzer and the address sanitizer.
#
#   tools/fuzz.sh [RUNS] [TARGET ...]
#
# RUNS: executions per target (default 1000000). TARGETs (default: all): safetensors configs tokenizer
# statistics png quantized checkpoint prompt. Builds `diffuse8-fuzz` into .build-fuzz (Swift's -sanitize=fuzzer,address), then runs
# each target over its committed seed corpus in Tests/Fuzz/<target>/ (read only; new inputs go to a temporary
# folder) and prints the executions done. A crash, leak, timeout (10 s per input) or out-of-memory (2 GiB) stops
# with the reproducer in ./crash-* or ./timeout-*; rerun one input with
#   DIFFUSE8_FUZZ_TARGET=<target> .build-fuzz/debug/diffuse8-fuzz <file>
# FUZZ_SECONDS=N also stops each target after N seconds (the CI smoke run uses this). For long runs,
# ASAN_OPTIONS=malloc_context_size=0 is ~15 % faster (reports then lack allocation stacks).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
shift || true
targets=${*:-safetensors configs tokenizer statistics png quantized checkpoint prompt}

swift build --product diffuse8-fuzz --build-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DDIFFUSE8_FUZZ >&2
binary=.build-fuzz/debug/diffuse8-fuzz
status=0
for target in $targets; do
    work=$(mktemp -d)
    log=$(mktemp)
    if DIFFUSE8_FUZZ_TARGET=$target "$binary" -runs="$runs" -max_total_time="${FUZZ_SECONDS:-0}" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$work" "Tests/Fuzz/$target" >"$log" 2>&1; then
        executions=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
        echo "$target: $executions executions, no crash"
    else
        echo "$target: FAILED"; tail -n 40 "$log"; status=1
    fi
    rm -rf "$work" "$log"
done
exit $status
