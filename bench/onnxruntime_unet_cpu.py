"""onnxruntime CPU peer for Diffuse8's CPU UNet benchmark: times an exported UNet (`diffuse8 export-onnx`, plain
or Q/DQ) on the CPU execution provider with a fixed thread count, on the same input shapes as `diffuse8 bench`
(batch 2, 4×LATENT×LATENT latents, 77 context tokens, timestep 500).

    python3 bench/onnxruntime_unet_cpu.py unet.onnx [--threads 2] [--latent 64] [--warmup 1] [--iterations 5]

Prints one JSON object: session creation seconds, median/min milliseconds per forward, the graph's
QuantizeLinear/DequantizeLinear count (whether it is a Q/DQ graph), onnxruntime's version.
"""
import argparse
import json
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()

    graph = onnx.load(args.model, load_external_data=False).graph
    qdq = sum(1 for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    created = time.perf_counter() - start

    rng = np.random.default_rng(1)
    feeds = {}
    for i in session.get_inputs():
        dtype = np.float16 if "float16" in i.type else np.float32
        if i.name == "sample":
            feeds[i.name] = rng.standard_normal((args.batch, 4, args.latent, args.latent)).astype(dtype)
        elif i.name == "timestep":
            feeds[i.name] = np.array([500.0], dtype=dtype).reshape([d if isinstance(d, int) else 1 for d in i.shape] or [])
        elif i.name == "encoder_hidden_states":
            width = i.shape[-1]
            feeds[i.name] = rng.standard_normal((args.batch, 77, width)).astype(dtype)
        else:
            raise SystemExit(f"{args.model}: input {i.name} is not timed by this script (SD1.x UNets only)")
    for _ in range(args.warmup):
        session.run(None, feeds)
    runs = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        session.run(None, feeds)
        runs.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"model": args.model, "onnxruntime": ort.__version__, "threads": args.threads,
                      "qdq_nodes": qdq, "session_s": round(created, 2), "median_ms": round(statistics.median(runs), 1),
                      "min_ms": round(min(runs), 1), "runs_ms": [round(r, 1) for r in runs]}))


if __name__ == "__main__":
    main()
