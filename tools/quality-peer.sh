#!/usr/bin/env bash
# Reproduces docs/QUALITY.md, "Side by side with NVIDIA Model Optimizer" and "Calibration set size" (CPU).
#
#   swift build -c release --product diffuse8
#   python -m venv venv-quality && venv-quality/bin/pip install -r bench/quality/requirements.txt
#   PY=venv-quality/bin/python tools/quality-peer.sh
#
# Calibration: the first 32 and 128 prompts of training/calibration_prompts.txt and the 6 short prompts of
# bench/quality/calib-6-short.txt (partly outside the default model's caption grammar); evaluation: the first
# EVAL_N prompts of training/heldout_prompts.txt with SEEDS seeds (1000, 1001, …). Diffuse8's images are written
# with `eval --save-images`, ModelOpt's by bench/quality/modelopt_peer.py; both are scored against their own
# side's FP images by `diffuse8 eval --reference … --images …`. Everything lands in $OUT (default quality-peer/).
set -euo pipefail
D8=${D8:-.build/release/diffuse8}
PY=${PY:-python3}
MODEL=${MODEL:-models/default}
OUT=${OUT:-quality-peer}
EVAL_N=${EVAL_N:-24}
SEEDS=${SEEDS:-2}
STEPS=${STEPS:-20}
THREADS=${THREADS:-2}
E=(--prompts "$OUT/eval.txt" --seeds "$SEEDS" --steps "$STEPS" --cfg 7.5)

mkdir -p "$OUT"
first_prompts() { awk -v n="$2" 'NF && !/^[[:space:]]*#/ && c++ < n' "$1"; }
first_prompts training/heldout_prompts.txt "$EVAL_N" > "$OUT/eval.txt"
first_prompts training/calibration_prompts.txt 32 > "$OUT/calib32.txt"
first_prompts training/calibration_prompts.txt 128 > "$OUT/calib128.txt"
cp bench/quality/calib-6-short.txt "$OUT/calib6.txt"

for n in 6 32 128; do
  [ -f "$OUT/stats$n.d8s" ] || "$D8" calibrate --model "$MODEL" --calib-prompts "$OUT/calib$n.txt" --calib-steps "$STEPS" \
    --threads "$THREADS" -o "$OUT/stats$n.d8s"
done

q() {  # name, then quantize flags
  local name=$1; shift
  rm -rf "$OUT/$name"
  "$D8" quantize --model "$MODEL" --threads "$THREADS" -o "$OUT/$name" "$@"
}
# "recommended" = the default of `quantize` (mean-max + α 0.8, max ranges below 32 prompts); "full" = mean-max +
# α search, forced below 32 prompts through the nvidia preset (it has no minimum).
FULL=(--preset nvidia --collect-method mean-max --alpha search)
for n in 6 32 128; do
  q "c$n-int8-L3-max" --stats "$OUT/stats$n.d8s" --format int8 --level 3 --preset naive
  q "c$n-int8-L3-full" --stats "$OUT/stats$n.d8s" --format int8 --level 3 "${FULL[@]}"
  q "c$n-int8-L3-recommended" --stats "$OUT/stats$n.d8s" --format int8 --level 3
done
q c6-int8-L3-pct --stats "$OUT/stats6.d8s" --format int8 --level 3 --preset nvidia --collect-method mean-max --alpha none
q c6-int8-L3-max-sqsearch --stats "$OUT/stats6.d8s" --format int8 --level 3 --preset nvidia --calibration max --alpha search
q c32-int8-L3-max-sq0.8 --stats "$OUT/stats32.d8s" --format int8 --level 3 --preset nvidia --calibration max --alpha 0.8
# FP8: the default preset is max without smoothing; "int8recipe" = INT8's recommended recipe applied to FP8.
q c32-fp8-L3-recommended --stats "$OUT/stats32.d8s" --format fp8 --level 3
q c32-fp8-L3-int8recipe --stats "$OUT/stats32.d8s" --format fp8 --level 3 --preset nvidia --collect-method mean-max --alpha 0.8
q c32-fp8-L4-recommended --stats "$OUT/stats32.d8s" --format fp8 --level 4
q c32-fp8-L4-pcal --stats "$OUT/stats32.d8s" --format fp8 --level 4 --probability-amax calibrated
q c32-fp8-L4-int8recipe --stats "$OUT/stats32.d8s" --format fp8 --level 4 --preset nvidia --collect-method mean-max --alpha 0.8
q c32-fp8-L4-full --stats "$OUT/stats32.d8s" --format fp8 --level 4 "${FULL[@]}"
q int8-L3-dynamic --dynamic --format int8 --level 3

"$D8" eval --model "$MODEL" --quantized "$OUT"/c6-* "${E[@]}" --sqnr-samples 0 --threads "$THREADS" --save-images "$OUT/img6" -o "$OUT/eval6"
"$D8" eval --model "$MODEL" --quantized "$OUT"/c32-* "$OUT/int8-L3-dynamic" "${E[@]}" --sqnr-samples 0 --threads "$THREADS" \
  --save-images "$OUT/img32" -o "$OUT/eval32"
"$D8" eval --model "$MODEL" --quantized "$OUT"/c128-* "${E[@]}" --sqnr-samples 0 --threads "$THREADS" --save-images "$OUT/img128" -o "$OUT/eval128"
# Noise-prediction SQNR (teacher-forced) of the FP8 defaults on the first 4 samples.
head -n 2 "$OUT/eval.txt" > "$OUT/eval-sqnr.txt"
"$D8" eval --model "$MODEL" --quantized "$OUT/c32-fp8-L3-recommended" "$OUT/c32-fp8-L4-recommended" "$OUT/c32-fp8-L4-pcal" \
  --prompts "$OUT/eval-sqnr.txt" --seeds 2 --steps "$STEPS" --cfg 7.5 --sqnr-samples 4 --threads "$THREADS" -o "$OUT/eval-fp8-sqnr"

# ModelOpt on the 32 calibration prompts; scored against its own FP images with the same code.
"$PY" bench/quality/modelopt_peer.py --model "$MODEL" --calib-prompts "$OUT/calib32.txt" --calib-steps "$STEPS" \
  --eval-prompts "$OUT/eval.txt" --seeds "$SEEDS" --steps "$STEPS" --cfg 7.5 --threads 1 \
  --configs int8-L3,fp8-L4,fp8-L3,int8-L1,int8-L2,int8-L2.5 -o "$OUT/modelopt"
# ModelOpt's FP8 SQNR on the same 4 samples (run.json, "sqnr"); calibrates again, no images.
"$PY" bench/quality/modelopt_peer.py --model "$MODEL" --calib-prompts "$OUT/calib32.txt" --calib-steps "$STEPS" \
  --eval-prompts "$OUT/eval.txt" --seeds "$SEEDS" --steps "$STEPS" --cfg 7.5 --threads 1 \
  --configs fp8-L4,fp8-L3 --skip-fp --skip-images --sqnr-samples 4 -o "$OUT/modelopt-sqnr"
peer=()
for c in int8-L1 int8-L2 int8-L2.5 int8-L3 fp8-L3 fp8-L4; do [ -d "$OUT/modelopt/$c" ] && peer+=("$OUT/modelopt/$c"); done
"$D8" eval --reference "$OUT/modelopt/fp" --images "${peer[@]}" "${E[@]}" -o "$OUT/eval-modelopt"
# FP8 L4 on a second sample (the next EVAL_N held-out prompts); ModelOpt's images scored against Diffuse8's FP images.
first_prompts training/heldout_prompts.txt $((2 * EVAL_N)) | tail -n "$EVAL_N" > "$OUT/eval-b.txt"
"$D8" eval --model "$MODEL" --quantized "$OUT/c32-fp8-L4-recommended" --prompts "$OUT/eval-b.txt" --seeds "$SEEDS" --steps "$STEPS" \
  --cfg 7.5 --sqnr-samples 0 --threads "$THREADS" --save-images "$OUT/img-b" -o "$OUT/eval-b"
"$PY" bench/quality/modelopt_peer.py --model "$MODEL" --calib-prompts "$OUT/calib32.txt" --calib-steps "$STEPS" \
  --eval-prompts "$OUT/eval-b.txt" --seeds "$SEEDS" --steps "$STEPS" --cfg 7.5 --threads 1 --configs fp8-L4 --skip-fp -o "$OUT/modelopt-b"
"$D8" eval --reference "$OUT/img-b/fp" --images "$OUT/img-b/c32-fp8-L4-recommended" "$OUT/modelopt-b/fp8-L4" \
  --prompts "$OUT/eval-b.txt" --seeds "$SEEDS" --steps "$STEPS" --cfg 7.5 -o "$OUT/eval-b-side"
# Side-by-side grid: Diffuse8 FP | Diffuse8 INT8 L3 | ModelOpt INT8 L3 | Diffuse8 FP8 L4 | ModelOpt FP8 L4 (first 8 samples).
"$D8" eval --reference "$OUT/img32/fp" --images "$OUT/img32/c32-int8-L3-recommended" "$OUT/modelopt/int8-L3" \
  "$OUT/img32/c32-fp8-L4-recommended" "$OUT/modelopt/fp8-L4" "${E[@]}" --grid-rows 8 -o "$OUT/grid-side-by-side"
