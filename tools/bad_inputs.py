#!/usr/bin/env python3
"""Feeds the `diffuse8` CLI many hand-made bad inputs and counts the outcomes per category: a clear error (non-zero
exit status, an `Error:`/`error:` line, no crash), accepted (exit 0: the value is valid or ignored), a crash (killed
by a signal or a Swift runtime trap) or a hang (no exit within the time limit). Standard library only.

  python3 tools/bad_inputs.py .build/debug/diffuse8            # prints a Markdown table; exit 1 on any crash or hang

Each case copies the tiny test model (Tests/Fixtures/tiny-sd15), changes one thing and runs
`diffuse8 generate --steps 1` on it (or runs a command with one bad option).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "Tests" / "Fixtures" / "tiny-sd15"
VALUES = [-1, 0, 0.5, 1e9, 1e300, "x", None, [], {}, True, 2**63]
TIMEOUT = 120


def run(binary, args, workdir):
    try:
        p = subprocess.run([binary] + args, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "hang", ""
    err = p.stderr
    if p.returncode < 0 or "Fatal error" in err or "Illegal instruction" in err or "Segmentation" in err:
        return "crash", err[-400:]
    if p.returncode == 0:
        return "accepted", ""
    return ("clear error" if ("rror" in err) else "unclear"), err[-400:]


def generate(binary, model, work):
    return run(binary, ["generate", "x", "--model", str(model), "--steps", "1", "-o", str(work / "o.png")], work)


def config_cases():
    for component, name in [("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                            ("scheduler", "scheduler_config.json"), (".", "model_index.json"),
                            ("tokenizer", "tokenizer_config.json")]:
        path = MODEL / component / name
        keys = list(json.loads(path.read_text()).keys())
        for key in keys:
            for value in VALUES:
                yield f"{component}/{name}", (component, name, key, value)


def mutate_config(model, case):
    component, name, key, value = case
    path = model / component / name
    obj = json.loads(path.read_text())
    obj[key] = value
    path.write_text(json.dumps(obj))


def vocab_cases():
    for value in [-1, 2514, 10**6, 2**31, 2**63, 1.5, "x", None]:
        yield "tokenizer/vocab.json", ("vocab", value)
    for line in ["a", "a b c", "zz qq", "", "#version: 0.2", "\u00e9 \u00e9", "a  b"]:
        yield "tokenizer/merges.txt", ("merges", line)


def mutate_vocab(model, case):
    kind, value = case
    if kind == "vocab":
        path = model / "tokenizer" / "vocab.json"
        obj = json.loads(path.read_text())
        obj[next(iter(obj))] = value
        path.write_text(json.dumps(obj))
    else:
        path = model / "tokenizer" / "merges.txt"
        path.write_text(path.read_text() + value + "\n")


def weight_cases():
    for component in ["unet", "vae", "text_encoder"]:
        name = "model.safetensors" if component == "text_encoder" else "diffusion_pytorch_model.safetensors"
        size = (MODEL / component / name).stat().st_size
        for cut in [0, 4, 8, 9, 100, size // 2, size - 1]:
            yield "safetensors (truncated)", (component, name, "cut", cut)
        for offset in [0, 3, 7, 8, 9, 20, 50, 120]:
            yield "safetensors (byte changed)", (component, name, "flip", offset)
        yield "safetensors (FIFO)", (component, name, "fifo", 0)
        yield "safetensors (folder)", (component, name, "dir", 0)


def mutate_weights(model, case):
    component, name, kind, n = case
    path = model / component / name
    data = path.read_bytes()
    path.unlink()
    if kind == "cut":
        path.write_bytes(data[:n])
    elif kind == "flip":
        data = bytearray(data)
        data[n] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


OPTIONS = [
    ["--steps", "0"], ["--steps", "-1"], ["--steps", "1000000"], ["--steps", "x"], ["--cfg", "nan"], ["--cfg", "inf"],
    ["--cfg", "1e39"], ["--seed", "-1"], ["--seed", "18446744073709551616"],
    ["--seed", "18446744073709551615", "--batch-count", "3"], ["--width", "0"], ["--width", "7"], ["--width", "100000"],
    ["--height", "-8"], ["--height", "9223372036854775807"], ["--batch-count", "0"], ["--batch-count", "100000000"],
    ["--threads", "0"], ["--threads", "100000"], ["--scheduler", "plms"], ["--device", "tpu"], ["-o", "x.jpg"],
    ["-o", "/nonexistent/x.png"], ["--scheduler", "ddim", "--steps", "1001"], ["--negative-prompt", "a\nSteps: 1"],
]


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".build" / "debug" / "diffuse8")
    results = defaultdict(Counter)
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        groups = [(config_cases(), mutate_config), (vocab_cases(), mutate_vocab), (weight_cases(), mutate_weights)]
        for cases, mutate in groups:
            for category, case in cases:
                model = tmp / "m"
                shutil.rmtree(model, ignore_errors=True)
                shutil.copytree(MODEL, model)
                mutate(model, case)
                outcome, detail = generate(binary, model, tmp)
                results[category][outcome] += 1
                if outcome in ("crash", "hang", "unclear"):
                    bad.append((category, case, outcome, detail))
        for options in OPTIONS:
            outcome, detail = run(binary, ["generate", "x", "--model", str(MODEL)] + options + ["-o", str(tmp / "o.png")]
                                  if "-o" not in options else ["generate", "x", "--model", str(MODEL)] + options, tmp)
            results["command-line options"][outcome] += 1
            if outcome in ("crash", "hang", "unclear"):
                bad.append(("options", options, outcome, detail))
    print("| category | inputs | clear error | accepted | other failure | crash | hang |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total = Counter()
    for category, c in results.items():
        total.update(c)
        print(f"| {category} | {sum(c.values())} | {c['clear error']} | {c['accepted']} | {c['unclear']} | {c['crash']} | {c['hang']} |")
    print(f"| **all** | {sum(total.values())} | {total['clear error']} | {total['accepted']} | {total['unclear']} | {total['crash']} | {total['hang']} |")
    for item in bad:
        print("PROBLEM:", item, file=sys.stderr)
    return 1 if any(o in ("crash", "hang") for _, _, o, _ in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
