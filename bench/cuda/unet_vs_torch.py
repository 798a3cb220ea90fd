"""UNet timing: diffusers FP16 eager vs. diffusers + torch.compile (vs. torchao float8) vs. Diffuse8's CUDAUNet in FP16 and
(--d8-quantized) in INT8/FP8, same weights.

For each model (SD1.5, SDXL) it builds diffusers' UNet2DConditionModel with random weights (fixed seed) from
the reference config, saves it once as a diffusers unet folder with FP16 safetensors, times diffusers FP16
eager and torch.compile (default mode; --compile-modes adds others, e.g. reduce-overhead) with CUDA events (median of --repeats runs after warm-up), writes the
inputs and diffusers' eager output to a safetensors file, and runs `diffuse8-cuda-selftest --unet-bench` on the
same folder and inputs (which also reports its output's relative L2 vs. diffusers'). Peak GPU memory:
torch.cuda.max_memory_allocated / max_memory_reserved; Diffuse8: its allocator's peak (live + cached).

Writes unet_vs_torch.json and unet_vs_torch.md into --out. Run on the GPU machine, e.g.
  python3 bench/cuda/unet_vs_torch.py --models sd15 --binary gpu/diffuse8-cuda-selftest --out $OUT
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {
    # name: (config file, latent H, W, context length, context width)
    "sd15": ("sd15-unet-config.json", 64, 64, 77),
    "sdxl": ("sdxl-unet-config.json", 128, 128, 77),
}


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times)


def memory():
    return {"max_allocated_bytes": torch.cuda.max_memory_allocated(), "max_reserved_bytes": torch.cuda.max_memory_reserved()}


def bench_model(name, result, args, log, save):
    """Times every implementation of one model into `result`, calling `save` after each (a run cut short keeps them)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    config_file, height, width, context_length = SHAPES[name]
    with open(os.path.join(args.configs, config_file)) as f:
        config = json.load(f)
    folder = os.path.join(args.workdir, name + "-unet")
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(config)
    unet = unet.half().eval()
    unet.save_pretrained(folder, safe_serialization=True)
    log(f"{name}: random weights built and saved in {time.time() - t0:.1f} s ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f} M params)")

    g = torch.Generator(device="cuda").manual_seed(1)
    batch = 2
    sample = torch.randn(batch, unet.config.in_channels, height, width, generator=g, device="cuda", dtype=torch.float16)
    states = torch.randn(batch, context_length, unet.config.cross_attention_dim, generator=g, device="cuda", dtype=torch.float16)
    timestep = torch.tensor([501.0], device="cuda")
    kwargs = {}
    tensors = {"sample": sample, "encoder_hidden_states": states, "timestep": timestep}
    if unet.config.addition_embed_type == "text_time":
        width_text = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        text_embeds = torch.randn(batch, width_text, generator=g, device="cuda", dtype=torch.float16)
        time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * batch, device="cuda", dtype=torch.float16)
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        tensors.update(text_embeds=text_embeds, time_ids=time_ids)

    def run(model):
        with torch.inference_mode():
            return model(sample, 501, encoder_hidden_states=states, **kwargs).sample

    result.update(latent=[batch, unet.config.in_channels, height, width], context=[batch, context_length, unet.config.cross_attention_dim])
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    output = run(unet)
    median, minimum = timed(lambda: run(unet), args.warmup, args.repeats)
    result["diffusers_eager"] = {"median_ms": median, "min_ms": minimum, **memory()}
    log(f"{name}: diffusers eager {median:.2f} ms")
    save()
    reference = os.path.join(args.workdir, name + "-reference.safetensors")
    save_file({k: v.float().contiguous().cpu() for k, v in {**tensors, "output": output}.items()}, reference)

    for mode in ([] if args.skip_compile else args.compile_modes.split(",")):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch._dynamo.reset()  # a second model in this process would otherwise recompile with dynamic shapes
        compiled = torch.compile(unet, mode=None if mode == "default" else mode)
        t0 = time.time()
        compiled_output = run(compiled).clone()  # reduce-overhead's graph outputs are overwritten by the next replay
        torch.cuda.synchronize()
        compile_s = time.time() - t0
        median, minimum = timed(lambda: run(compiled), args.warmup, args.repeats)
        diff = (compiled_output.float() - output.float()).norm() / output.float().norm()
        result[compile_key(mode)] = {"median_ms": median, "min_ms": minimum, "compile_s": compile_s, "compile_mode": mode,
                                     "rel_l2_vs_eager": diff.item(), **memory()}
        log(f"{name}: torch.compile ({mode}) {median:.2f} ms (compile {compile_s:.0f} s)")
        save()
        del compiled, compiled_output
    if args.torchao:
        bench_torchao(name, unet, sample, states, kwargs, args, log, result, save)
    del unet, output
    torch.cuda.empty_cache()

    # FORMAT:LEVEL, or FORMAT:LEVEL:separate for 8-bit inputs quantized in their own pass (not by LayerNorm/GEGLU)
    runs = [("diffuse8", [])] + [(f"diffuse8_{spec}", ["--quantize", ":".join(spec.split(":")[:2])]
                                  + (["--separate-quantize"] if spec.endswith(":separate") else []))
                                 for spec in filter(None, args.d8_quantized.split(","))]
    for key, extra in runs:
        command = [args.binary, "--unet-bench", folder, "--size", f"{height}x{width}", "--reference", reference,
                   "--repeats", str(args.repeats)] + extra + args.d8_extra.split()
        t0 = time.time()
        proc = subprocess.run(command, capture_output=True, text=True)
        with open(os.path.join(args.out, f"{name}-{key.replace(':', '-')}.log"), "w") as f:
            f.write(proc.stdout + proc.stderr)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("UNET_BENCH ")), None)
        if line:
            d8 = json.loads(line[len("UNET_BENCH "):])
            result[key] = d8
            log(f"{name}: {key} {d8['median_ms']:.2f} ms, CUDA graph {d8.get('graph_median_ms') or float('nan'):.2f} ms "
                f"(process {time.time() - t0:.0f} s) {line}")
        else:
            log(proc.stdout[-3000:] + proc.stderr[-3000:])
            result[key] = {"error": proc.stdout[-2000:] + proc.stderr[-2000:]}
        save()


def bench_torchao(name, unet, sample, states, kwargs, args, log, out, save):
    """torchao's float8 dynamic quantization (activations and weights per tensor, FP8 E4M3) of a BF16 copy of the
    UNet, the PyTorch 8-bit peer: uncompiled, then (with --torchao-compile) under torch.compile."""
    import copy
    import torchao
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

    model = copy.deepcopy(unet).to(torch.bfloat16)
    quantize_(model, Float8DynamicActivationFloat8WeightConfig())
    bf16 = lambda t: t.to(torch.bfloat16)
    extra = {}
    if "added_cond_kwargs" in kwargs:
        extra["added_cond_kwargs"] = {k: bf16(v) for k, v in kwargs["added_cond_kwargs"].items()}

    def run(m):
        with torch.inference_mode():
            return m(bf16(sample), 501, encoder_hidden_states=bf16(states), **extra).sample

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    median, minimum = timed(lambda: run(model), 1, max(3, args.repeats // 4))
    out["torchao_fp8"] = {"median_ms": median, "min_ms": minimum, "torchao": torchao.__version__, **memory()}
    log(f"{name}: torchao float8 dynamic (BF16, uncompiled) {median:.2f} ms")
    save()
    if args.torchao_compile:
        torch._dynamo.reset()
        if args.torchao_compile == "regional":
            # diffusers' regional compilation: each BasicTransformerBlock (every Linear layer but the ResNets' time
            # projections) compiled on its own, the rest eager; it compiles in a fraction of the whole model's time.
            compiled = model
            compiled.compile_repeated_blocks()
        else:
            compiled = torch.compile(model)
        t0 = time.time()
        run(compiled)
        torch.cuda.synchronize()
        compile_s = time.time() - t0
        torch.cuda.reset_peak_memory_stats()
        median, minimum = timed(lambda: run(compiled), args.warmup, args.repeats)
        out["torchao_fp8_compile"] = {"median_ms": median, "min_ms": minimum, "compile_s": compile_s, "torchao": torchao.__version__,
                                      "compile_mode": args.torchao_compile, **memory()}
        log(f"{name}: torchao float8 dynamic + torch.compile ({args.torchao_compile}) {median:.2f} ms (compile {compile_s:.0f} s)")
        save()
        del compiled
    del model
    torch.cuda.empty_cache()


def compile_key(mode):
    """The results key of diffusers' UNet under torch.compile in `mode` ("default": torch.compile's own default)."""
    return "diffusers_compile" if mode == "default" else "diffusers_compile_" + mode


def markdown(results, header, d8_type="FP16"):
    lines = [header, "", "| model | implementation | median ms | min ms | peak GPU memory | notes |", "|---|---|---:|---:|---:|---|"]
    for r in results:
        labels = [("diffusers_eager", "diffusers FP16 eager"), ("diffusers_compile", "diffusers FP16 torch.compile")]
        labels += [(k, f"diffusers FP16 torch.compile (mode {k[len('diffusers_compile_'):]})")
                   for k in r if k.startswith("diffusers_compile_")]
        labels += [("torchao_fp8", "torchao float8 dynamic (BF16), eager"), ("torchao_fp8_compile", "torchao float8 dynamic (BF16) + torch.compile"),
                  ("diffuse8", f"Diffuse8 CUDAUNet {d8_type}")]
        labels += [(k, "Diffuse8 CUDAUNet " + k[len("diffuse8_"):].replace(":", " level ").upper().replace("LEVEL", "level"))
                   for k in r if k.startswith("diffuse8_")]
        for key, label in labels:
            e = r.get(key)
            if not e:
                continue
            if "error" in e:
                lines.append(f"| {r['model']} | {label} | – | – | – | error |")
                continue
            peak = e.get("max_allocated_bytes", e.get("peak_bytes", 0)) / 2**30
            note = ""
            if key.startswith("diffusers_compile") or key == "torchao_fp8_compile":
                note = (f"compile {e['compile_s']:.0f} s{' (regional)' if e.get('compile_mode') == 'regional' else ''}; "
                        f"reserved {e['max_reserved_bytes'] / 2**30:.2f} GiB")
            elif key in ("diffusers_eager", "torchao_fp8"):
                note = f"reserved {e['max_reserved_bytes'] / 2**30:.2f} GiB"
            else:
                rel = e.get("rel_l2_vs_reference")
                note = (f"allocator peak (live + cached); weights {e.get('weight_bytes', 0) / 2**30:.2f} GiB; load {e['load_s']:.0f} s"
                        + (f"; output rel. L2 vs eager {rel:.2e}" if rel is not None else "")
                        + (f"; {e['eight_bit_layers']} layers in 8 bit, simulated: {e['simulated_layers']}" if e.get("eight_bit_layers") else ""))
            lines.append(f"| {r['model']} | {label} | {e['median_ms']:.2f} | {e['min_ms']:.2f} | {peak:.2f} GiB | {note} |")
            if key.startswith("diffuse8") and e.get("graph_median_ms") is not None:
                lines.append(f"| {r['model']} | {label}, CUDA graph | {e['graph_median_ms']:.2f} | {e['graph_min_ms']:.2f} | "
                             f"{e['graph_peak_bytes'] / 2**30:.2f} GiB | output rel. L2 vs eager Diffuse8 {e['graph_rel_l2_vs_eager']:.1e} |")
            elif key.startswith("diffuse8") and e.get("graph_error"):
                lines.append(f"| {r['model']} | Diffuse8 CUDA graph | – | – | – | capture failed: {e['graph_error'][:200]} |")
        if "error" in r:
            lines.append(f"| {r['model']} | (stopped) | – | – | – | {r['error'][:200]} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument("--binary", default="gpu/diffuse8-cuda-selftest")
    parser.add_argument("--configs", default="Tests/Fixtures/configs")
    parser.add_argument("--workdir", default="/tmp/d8bench")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--compile-modes", default="default",
                        help="torch.compile modes to time, comma-separated: default (torch.compile's default), "
                             "reduce-overhead (CUDA graphs, so the host's launch time drops out), max-autotune, ...")
    parser.add_argument("--d8-extra", default="", help="extra arguments for diffuse8-cuda-selftest, e.g. --d8-extra=--profile "
                                                         "(or --d8-extra \"--profile --explain\")")
    parser.add_argument("--d8-quantized", default="", help="also time Diffuse8 quantized UNets, e.g. int8:3,fp8:4 (scales from a short GPU calibration on random inputs)")
    parser.add_argument("--torchao", action="store_true", help="time torchao's float8 dynamic quantization (uncompiled) as the PyTorch 8-bit peer")
    parser.add_argument("--torchao-compile", nargs="?", const="full", choices=["full", "regional"],
                        help="also torchao float8 under torch.compile: the whole UNet (full, the default; compiles for many minutes) "
                             "or diffusers' regional compilation of its transformer blocks (regional)")
    # argparse reads a value that starts with "--" as an option: the value after --d8-extra is taken whole
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "--d8-extra":
            argv[i:i + 2] = ["--d8-extra=" + argv[i + 1]]
            break
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    def log(message):
        print(message, flush=True)

    d8_type = "BF16" if "--bf16" in args.d8_extra.split() else "FP16"
    card = torch.cuda.get_device_name(0)
    header = (f"{card}, torch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
              f"batch 2, FP16, median of {args.repeats} runs after {args.warmup} warm-up (CUDA events)")
    log(header)
    results = []
    suffix = "" if args.models == "sd15,sdxl" else "-" + args.models.replace(",", "-")

    def save():
        with open(os.path.join(args.out, f"unet_vs_torch{suffix}.json"), "w") as f:
            json.dump({"card": card, "torch": torch.__version__, "header": header, "results": results}, f, indent=1)
        with open(os.path.join(args.out, f"unet_vs_torch{suffix}.md"), "w") as f:
            f.write(markdown(results, header, d8_type))

    for name in args.models.split(","):
        result = {"model": name}
        results.append(result)
        try:
            bench_model(name, result, args, log, save)
        except Exception as error:  # keep the other model's numbers
            log(f"{name}: FAILED {error!r}")
            result["error"] = repr(error)
        save()
    print(markdown(results, header, d8_type))


if __name__ == "__main__":
    sys.exit(main())
