#!/usr/bin/env bash
# Trains the example LoRA (red -> blue) on a CUDA machine and measures it there:
#
#   tools/train_colour_lora.sh OUT.safetensors LOG_DIR [more --train options, e.g. --steps 3000]
#
# Needs the captions file from `python tools/train_colour_lora.py --prepare` (PROMPTS, default
# .build-colour-lora/prompts.safetensors) and a Python with torch, diffusers and safetensors (PYTHON, default python3;
# transformers is not needed). Writes OUT, LOG_DIR/train.log (console), LOG_DIR/train_colour_lora.json (what ran,
# loss curve, times), LOG_DIR/check.json and LOG_DIR/check.png (red/blue pixel shares and pictures with and
# without the LoRA). DEVICE (default cuda) picks the torch device; CHECK_OPTIONS adds --check options.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 OUT.safetensors LOG_DIR [--train options]" >&2
    exit 2
fi
out=$1 log=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
prompts=${PROMPTS:-$here/../.build-colour-lora/prompts.safetensors}
device=${DEVICE:-cuda}
if [ ! -f "$prompts" ]; then
    echo "$0: $prompts does not exist; run 'python tools/train_colour_lora.py --prepare' first (needs transformers)" >&2
    exit 2
fi
mkdir -p "$log"
"$python" "$here/train_colour_lora.py" --train --device "$device" --prompts "$prompts" --out "$out" --log-dir "$log" "$@" \
    2>&1 | tee "$log/train.log"
"$python" "$here/train_colour_lora.py" --check --device "$device" --prompts "$prompts" --lora "$out" \
    --report "$log/check.json" --images "$log/check.png" ${CHECK_OPTIONS:-} 2>&1 | tee "$log/check.log"
