#!/bin/bash
# Runs the SD1.5 UNet comparison (PyTorch CPU FP32 vs Diffuse8) back to back, each run started only
# when the 1-minute load average is below $MAX_LOAD (default 1.0), and prints every result with the
# load at its start. Usage: bench/compare_sd15.sh [threads] [iterations]   (run from the repository root,
# after building bench/ as in bench/README.md and making the model with torch_unet_cpu.py --make-only).
set -euo pipefail
THREADS=${1:-$(nproc)}
ITERATIONS=${2:-5}
MAX_LOAD=${MAX_LOAD:-1.0}
MODEL=${MODEL:-/tmp/d8-bench/sd15-unet}
PY=${PY:-python3}
D8BENCH=${D8BENCH:-bench/.build/release/d8bench}

wait_quiet() {
  while awk -v m="$MAX_LOAD" '{exit !($1 >= m)}' /proc/loadavg; do sleep 10; done
  echo "# $(date -u +%FT%TZ) start, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "# $(lscpu | grep 'Model name' | sed 's/ \+/ /g'), $(nproc) cores, threads $THREADS"
for batch in 2 1; do
  wait_quiet
  "$PY" bench/torch_unet_cpu.py --folder "$MODEL" --threads "$THREADS" --iterations "$ITERATIONS" --batches "$batch" --skip-tiny
  wait_quiet
  "$D8BENCH" unet "$MODEL" --batch "$batch" --latent 64 --warmup 1 --iterations "$ITERATIONS" --threads "$THREADS"
done
wait_quiet
"$PY" bench/torch_unet_cpu.py --folder "$MODEL" --threads "$THREADS" --skip-sd15
for tiny in tiny-sd15 tiny-sdxl; do
  "$D8BENCH" unet "Tests/Fixtures/$tiny/unet" --warmup 2 --iterations 10 --threads "$THREADS"
done
echo "# $(date -u +%FT%TZ) done, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
