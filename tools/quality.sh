#!/usr/bin/env bash
# Reproduces the tables of docs/QUALITY.md on the embedded default model (CPU).
#
#   swift build -c release --product diffuse8 && tools/quality.sh
#
# Calibration uses the first CALIB_N prompts of training/calibration_prompts.txt; evaluation the first
# EVAL_N prompts of training/heldout_prompts.txt (never calibration prompts) with SEEDS seeds each.
# Everything lands in $OUT (default quality-run/): stats, quantized folders, eval/report.{md,json}, grid.png,
# timings.tsv (seconds per calibration / quantization). On the 2 shared cores used for docs/QUALITY.md the
# evaluation of 13 models on 6 prompts takes about half an hour.
set -euo pipefail
D8=${D8:-.build/release/diffuse8}
MODEL=${MODEL:-models/default}
OUT=${OUT:-quality-run}
CALIB_N=${CALIB_N:-32}
EVAL_N=${EVAL_N:-6}
SQNR_N=${SQNR_N:-2}
SEEDS=${SEEDS:-1}
STEPS=${STEPS:-20}
THREADS=${THREADS:-2}
PROMPTS_DIR=${PROMPTS_DIR:-training}

mkdir -p "$OUT"
first_prompts() { awk -v n="$2" 'NF && !/^[[:space:]]*#/ && c++ < n' "$1"; }
first_prompts "$PROMPTS_DIR/calibration_prompts.txt" "$CALIB_N" > "$OUT/calib.txt"
first_prompts "$PROMPTS_DIR/heldout_prompts.txt" "$EVAL_N" > "$OUT/eval.txt"

seconds() { local s=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $s" | bc; }

if [ ! -f "$OUT/stats.d8s" ]; then
  : > "$OUT/timings.tsv"
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
# --min-calib-prompts 0: each row is the recipe named, whatever CALIB_N (the default preset falls back to max
# ranges below 32 calibration prompts; see docs/QUALITY.md, "Calibration set size").
S=(--stats "$OUT/stats.d8s" --min-calib-prompts 0)
# "pct" = Percentile Quant with collect method mean-max (p = 1), the best collect method on this model;
# "pctminmean" = NVIDIA's default min-mean (p = 1). "sq0.8" / "sqsearch" = + SmoothQuant α 0.8 / per-layer α search.
quantize int8-L1-max            "${S[@]}" --format int8 --level 1 --calibration max --alpha none
quantize int8-L1-pct            "${S[@]}" --format int8 --level 1 --collect-method mean-max --alpha none
quantize int8-L2-pct-sqsearch   "${S[@]}" --format int8 --level 2 --collect-method mean-max --alpha search
quantize int8-L2.5-pct-sqsearch "${S[@]}" --format int8 --level 2.5 --collect-method mean-max --alpha search
quantize int8-L3-max            "${S[@]}" --format int8 --level 3 --calibration max --alpha none
quantize int8-L3-pctminmean     "${S[@]}" --format int8 --level 3 --collect-method min-mean --alpha none
quantize int8-L3-pct            "${S[@]}" --format int8 --level 3 --collect-method mean-max --alpha none
quantize int8-L3-pct-sq0.8      "${S[@]}" --format int8 --level 3 --collect-method mean-max --alpha 0.8
quantize int8-L3-pct-sqsearch   "${S[@]}" --format int8 --level 3 --collect-method mean-max --alpha search
quantize fp8-L3-pct-sqsearch    "${S[@]}" --format fp8 --level 3 --collect-method mean-max --alpha search
quantize fp8-L4-max             "${S[@]}" --format fp8 --level 4 --calibration max --alpha none
quantize fp8-L4-pct-sqsearch    "${S[@]}" --format fp8 --level 4 --collect-method mean-max --alpha search
quantize int8-L3-dynamic --dynamic --format int8 --level 3
if [ "${FULL_MATRIX:-0}" = 1 ]; then  # the rest of the level × recipe matrix (docs/QUALITY.md, "More rows")
  quantize int8-L1-pctminmean     "${S[@]}" --format int8 --level 1 --collect-method min-mean --alpha none
  quantize int8-L2-max            "${S[@]}" --format int8 --level 2 --calibration max --alpha none
  quantize int8-L2-pct            "${S[@]}" --format int8 --level 2 --collect-method mean-max --alpha none
  quantize int8-L2-pct-sq0.8      "${S[@]}" --format int8 --level 2 --collect-method mean-max --alpha 0.8
  quantize int8-L2.5-max          "${S[@]}" --format int8 --level 2.5 --calibration max --alpha none
  quantize int8-L2.5-pct          "${S[@]}" --format int8 --level 2.5 --collect-method mean-max --alpha none
  quantize int8-L2.5-pct-sq0.8    "${S[@]}" --format int8 --level 2.5 --collect-method mean-max --alpha 0.8
  quantize fp8-L3-max             "${S[@]}" --format fp8 --level 3 --calibration max --alpha none
  quantize fp8-L3-pct             "${S[@]}" --format fp8 --level 3 --collect-method mean-max --alpha none
  quantize fp8-L3-pct-sq0.8       "${S[@]}" --format fp8 --level 3 --collect-method mean-max --alpha 0.8
  quantize fp8-L4-pct             "${S[@]}" --format fp8 --level 4 --collect-method mean-max --alpha none
  quantize fp8-L4-pct-sq0.8       "${S[@]}" --format fp8 --level 4 --collect-method mean-max --alpha 0.8
  quantize fp8-L3-dynamic --dynamic --format fp8 --level 3
fi

"$D8" eval --model "$MODEL" --quantized "${MODELS[@]}" --prompts "$OUT/eval.txt" --seeds "$SEEDS" \
  --steps "$STEPS" --sqnr-samples "$SQNR_N" --threads "$THREADS" -o "$OUT/eval"
