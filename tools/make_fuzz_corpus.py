#!/usr/bin/env python3
"""Makes the small seed inputs of the `statistics` and `quantized` fuzz targets (Tests/Fuzz/) from files that
`diffuse8 calibrate` and `diffuse8 quantize` wrote for the tiny test model, keeping a few layers so that each
seed stays a few kilobytes. Standard library only.

  diffuse8 calibrate --model Tests/Fixtures/tiny-sd15 --calib-prompts P --calib-steps 2 --reservoir-rows 2 -o s.d8s
  diffuse8 quantize --model Tests/Fixtures/tiny-sd15 --stats s.d8s --format fp8 --level 4 -o q8
  diffuse8 quantize --model Tests/Fixtures/tiny-sd15 --stats s.d8s --format int8 --level 3 -o qi
  python3 tools/make_fuzz_corpus.py s.d8s q8 qi
"""
import json
import struct
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "Tests" / "Fuzz"


def read(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


def write(header, tensors):
    """tensors: name -> (dtype, shape, bytes); metadata from header['__metadata__']."""
    out, body = {}, b""
    if "__metadata__" in header:
        out["__metadata__"] = header["__metadata__"]
    for name, (dtype, shape, raw) in tensors.items():
        out[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    text = json.dumps(out, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def tensor(header, body, name):
    e = header[name]
    a, b = e["data_offsets"]
    return e["dtype"], e["shape"], body[a:b]


def statistics(path, keep=3):
    header, body = read(path)
    meta = header["__metadata__"]
    layers = json.loads(meta["layers"])
    # keep the first `keep` layers plus the first Linear (which has channel_amax and sampled rows)
    chosen = list(range(keep))
    linear = next(i for i, l in enumerate(layers) if l["kind"] == "linear")
    if linear not in chosen:
        chosen.append(linear)
    tensors = {}
    for new, old in enumerate(chosen):
        for name in header:
            if name.startswith(f"L{old}."):
                tensors[f"L{new}." + name.split(".", 1)[1]] = tensor(header, body, name)
    header["__metadata__"] = dict(meta, layers=json.dumps([layers[i] for i in chosen], separators=(",", ":")))
    (OUT / "statistics" / "tiny.d8s").write_bytes(write(header, tensors))


def quantized(folder, label):
    unet = Path(folder) / "unet"
    manifest = json.loads((unet / "quantization.json").read_text())
    header, body = read(unet / "diffusion_pytorch_model.safetensors")
    layers = manifest["quantized_layers"]
    pick = [layers[0]] + [l for l in layers if l.endswith("to_q")][:1] + [l for l in layers if l.endswith("ff.net.2")][:1]
    manifest["quantized_layers"] = pick
    manifest["alpha_per_layer"] = {k: v for k, v in manifest["alpha_per_layer"].items() if k in pick}
    tensors = {n: tensor(header, body, n) for n in header if n != "__metadata__" and any(n.startswith(p + ".") for p in pick)}
    data = json.dumps(manifest, separators=(",", ":")).encode()
    (OUT / "quantized" / label).write_bytes(struct.pack("<I", len(data)) + data + write(header, tensors))


if __name__ == "__main__":
    statistics(sys.argv[1])
    quantized(sys.argv[2], "fp8-level4")
    quantized(sys.argv[3], "int8-level3")
