#!/usr/bin/env bash
# Reproduces the tables of docs/QUALITY.md on the embedded default model (CPU).
#
#   swift build -c release --product diffuse8 && tools/quality.sh
#
# Calibration uses the first CALIB_N prompts of "$PROMPTS_DIR/calibration_prompts.txt"; evaluation the first
# EVAL_N prompts of "$PROMPTS_DIR/heldout_prompts.txt" (never calibration prompts) with SEEDS seeds each.
# Everything lands in $OUT (default quality-run/): stats, quantized folders, eval/report.{md,json}, grid.png,
# timings.tsv (seconds per calibration / quantization).
set -euo pipefail
D8=${D8:-.build/release/diffuse8}
MODEL=${MODEL:-models/default}
OUT=${OUT:-quality-run}
CALIB_N=${CALIB_N:-32}
EVAL_N=${EVAL_N:-8}
SEEDS=${SEEDS:-1}
STEPS=${STEPS:-20}
THREADS=${THREADS:-2}
PROMPTS_DIR=${PROMPTS_DIR:-training}

mkdir -p "$OUT"
first_prompts() { awk -v n="$2" 'NF && !/^[[:space:]]*#/ && c++ < n' "$1"; }
first_prompts "$PROMPTS_DIR/calibration_prompts.txt" "$CALIB_N" > "$OUT/calib.txt"
first_prompts "$PROMPTS_DIR/heldout_prompts.txt" "$EVAL_N" > "$OUT/eval.txt"
: > "$OUT/timings.tsv"

seconds() { local s=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $s" | bc; }

if [ ! -f "$OUT/stats.d8s" ]; then
  t=$(seconds "$D8" calibrate --model "$MODEL" --calib-prompts "$OUT/calib.txt" --calib-steps "$STEPS" --threads "$THREADS" -o "$OUT/stats.d8s")
  printf 'calibrate\t%s\n' "$t" >> "$OUT/timings.tsv"
fi

MODELS=()
quantize() {  # name, then quantize flags
  local name=$1; shift
  rm -rf "$OUT/$name"
  t=$(seconds "$D8" quantize --model "$MODEL" --threads "$THREADS" -o "$OUT/$name" "$@")
  printf '%s\t%s\n' "$name" "$t" >> "$OUT/timings.tsv"
  MODELS+=("$OUT/$name")
}
S=(--stats "$OUT/stats.d8s")
# "pct" = Percentile Quant with collect method mean-max (p = 1), the best collect method on this model;
# "pctminmean" = NVIDIA's default min-mean (p = 1), shown at levels 1 and 3 / FP8 level 4.
for fmt_level in int8:1 int8:2 int8:2.5 int8:3 fp8:3 fp8:4; do
  fmt=${fmt_level%%:*}; level=${fmt_level##*:}
  F=(--format "$fmt" --level "$level")
  quantize "$fmt-L$level-max" "${S[@]}" "${F[@]}" --calibration max --alpha none
  quantize "$fmt-L$level-pct" "${S[@]}" "${F[@]}" --collect-method mean-max --alpha none
  case $fmt_level in int8:1|int8:3|fp8:4)
    quantize "$fmt-L$level-pctminmean" "${S[@]}" "${F[@]}" --collect-method min-mean --alpha none ;;
  esac
  if [ "$level" != 1 ]; then  # level 1 has no Linear layer: SmoothQuant changes nothing there
    quantize "$fmt-L$level-pct-sq0.8" "${S[@]}" "${F[@]}" --collect-method mean-max --alpha 0.8
    quantize "$fmt-L$level-pct-sqsearch" "${S[@]}" "${F[@]}" --collect-method mean-max --alpha search
  fi
done
quantize int8-L3-dynamic --dynamic --format int8 --level 3
quantize fp8-L3-dynamic --dynamic --format fp8 --level 3

"$D8" eval --model "$MODEL" --quantized "${MODELS[@]}" --prompts "$OUT/eval.txt" --seeds "$SEEDS" \
  --steps "$STEPS" --threads "$THREADS" -o "$OUT/eval"
