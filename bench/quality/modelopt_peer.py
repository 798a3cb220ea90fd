"""Peer for docs/QUALITY.md: the same model, prompts, seeds, scheduler and CFG quantized by NVIDIA Model Optimizer
(ModelOpt, fake quantization in PyTorch on the CPU), so that its images can be scored against its own FP images by
`diffuse8 eval --reference DIR --images DIR ...` with exactly the code that scores Diffuse8's images.

    python bench/quality/modelopt_peer.py --calib-prompts calib.txt --eval-prompts eval.txt --seeds 2 -o peer/

What it runs (see bench/quality/README.md):
- INT8 at levels 1/2/2.5/3: ModelOpt's INT8 SmoothQuant recipe (`mtq.INT8_SMOOTHQUANT_CFG`'s quantizer settings:
  per-output-channel weights, per-channel Linear inputs turned into per-tensor after smoothing, α = 0.8), with the
  quantizers of every layer outside the level and of the fixed exclusions disabled by name, as NVIDIA's diffusers
  example does (its `filter_func` and `quantize_lvl`; input quantizers on other module types are switched off). Conv2d inputs use ModelOpt's own calibrator (max): the
  example's Percentile Quant calibrator is a file of the example, not part of the `nvidia-modelopt` package.
- FP8 (E4M3) at level 3 and level 4 (level 4 adds ModelOpt's FP8 attention quantizers: Q, K, V and the softmax
  output), per-tensor max calibration, as the example's FP8 config.
Calibration: each calibration prompt k is one full pipeline call (T steps, CFG, seed calib_seed + k, batch 1), like
`diffuse8 calibrate`. Evaluation: prompt i, seed s -> `<config>/<i:03d>-s<s>.png`; FP images in `fp/`; the calibrated
amax of every enabled input, weight and attention (Q/K/V, softmax) quantizer in `<config>/amax.json` (to compare
with a quantized folder's ranges).
Where ModelOpt cannot run a configuration on this machine, the exception text is recorded in run.json.
"""
import argparse
import copy
import json
import os
import platform
import re
import sys
import time
import traceback

import torch

EXCLUDED = re.compile(r".*(time_emb_proj|time_embedding|conv_in|conv_out|conv_shortcut|add_embedding).*")


def read_prompts(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def linear_in_level(name, level):
    """NVIDIA's level rule for Linear layers (the diffusers example's `quantize_lvl`)."""
    return ((level >= 2 and "ff.net" in name)
            or (level >= 2.5 and ("to_q" in name or "to_k" in name or "to_v" in name))
            or level >= 3)


def int8_config(unet, level, alpha):
    """The example's `get_int8_config`, with ModelOpt's default (max) calibrator for Conv2d inputs."""
    cfg = {"quant_cfg": {"default": {"enable": False}, "*output_quantizer": {"enable": False}},
           "algorithm": {"method": "smoothquant", "alpha": alpha}}
    for name, module in unet.named_modules():
        if EXCLUDED.match(name):
            continue
        if isinstance(module, torch.nn.Linear) and linear_in_level(name, level):
            cfg["quant_cfg"][f"{name}.weight_quantizer"] = {"num_bits": 8, "axis": 0}
            cfg["quant_cfg"][f"{name}.input_quantizer"] = {"num_bits": 8, "axis": -1}
        elif isinstance(module, torch.nn.Conv2d):
            cfg["quant_cfg"][f"{name}.weight_quantizer"] = {"num_bits": 8, "axis": 0}
            cfg["quant_cfg"][f"{name}.input_quantizer"] = {"num_bits": 8, "axis": None}
    return cfg


def fp8_config():
    """The example's FP8 config (per-tensor E4M3 weights, inputs and attention BMM/softmax quantizers, max)."""
    e4m3 = {"num_bits": (4, 3), "axis": None}
    # "default" first: ModelOpt applies the entries in order (later ones win), so a trailing catch-all would
    # switch every quantizer off again.
    return {"quant_cfg": {"default": {"enable": False},
                          "*weight_quantizer": dict(e4m3), "*input_quantizer": dict(e4m3),
                          "*output_quantizer": {"enable": False},
                          "*q_bmm_quantizer": dict(e4m3), "*k_bmm_quantizer": dict(e4m3),
                          "*v_bmm_quantizer": dict(e4m3), "*softmax_quantizer": dict(e4m3)},
            "algorithm": "max"}


def disable_outside_level(unet, level, mtq):
    """The example's `filter_func` (fixed exclusions) and `quantize_lvl` (level), applied after calibration.
    Input quantizers ModelOpt puts on other module types (this version also wraps LayerNorm) are switched off
    too: no level quantizes them, in the example's intent or in Diffuse8."""
    mtq.disable_quantizer(unet, lambda name: EXCLUDED.match(name) is not None)
    for name, module in unet.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            for q in ("input_quantizer", "weight_quantizer", "output_quantizer"):
                if hasattr(module, q):
                    getattr(module, q).disable()
        if isinstance(module, torch.nn.Linear) and hasattr(module, "input_quantizer"):
            if not linear_in_level(name, level):
                module.input_quantizer.disable()
                module.weight_quantizer.disable()
        for q in ("q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "softmax_quantizer", "bmm2_output_quantizer"):
            if hasattr(module, q) and (level < 4 or q == "bmm2_output_quantizer"):
                getattr(module, q).disable()


def quantizer_summary(unet):
    """Enabled quantizers by kind, with their calibrator class and number format."""
    out = {}
    for name, module in unet.named_modules():
        cls = type(module).__name__
        if "Quantizer" not in cls:
            continue
        kind = name.rsplit(".", 1)[-1]
        enabled = bool(getattr(module, "is_enabled", False))
        calib = type(getattr(module, "_calibrator", None)).__name__
        key = f"{kind} ({'enabled' if enabled else 'disabled'}, bits {getattr(module, 'num_bits', '?')}, axis {getattr(module, 'axis', '?')}, calibrator {calib})"
        out[key] = out.get(key, 0) + 1
        if hasattr(module, "pre_quant_scale") and getattr(module, "pre_quant_scale", None) is not None and enabled:
            out["inputs with SmoothQuant pre_quant_scale"] = out.get("inputs with SmoothQuant pre_quant_scale", 0) + 1
    return dict(sorted(out.items()))


def quantizer_amax(unet):
    """Per quantized layer: the calibrated amax (max over channels) of its enabled input and weight quantizers,
    and per attention module of its enabled Q/K/V (bmm input) and softmax-output quantizers."""
    out = {}
    for name, module in unet.named_modules():
        for kind in ("input_quantizer", "weight_quantizer", "q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer",
                     "softmax_quantizer"):
            q = getattr(module, kind, None)
            amax = getattr(q, "amax", None) if q is not None and getattr(q, "is_enabled", False) else None
            if amax is not None:
                out.setdefault(name, {})[kind] = float(amax.detach().float().max())
    return out


def step_sqnr(pipe, fp_unet, q_unet, prompts, seeds, first_seed, steps, cfg, samples):
    """`diffuse8 eval`'s noise-prediction SQNR: on the first `samples` samples (prompt-major, seeds inner) the FP
    pipeline runs and, at every step, the quantized UNet sees the FP UNet's exact inputs (teacher forcing);
    SQNR = 10·log10(Σ fp² / Σ (fp − q)²) over the UNet output (both CFG halves). Returns per sample, per step."""
    per_sample, current = [], []

    def hook(module, args, kwargs, output):
        q = q_unet(*args, **kwargs)
        fp = (output[0] if isinstance(output, tuple) else output.sample).double()
        q = (q[0] if isinstance(q, tuple) else q.sample).double()
        current.append(float(10 * torch.log10((fp * fp).sum() / ((fp - q) ** 2).sum())))

    pipe.unet = fp_unet
    handle = fp_unet.register_forward_hook(hook, with_kwargs=True)
    try:
        order = [(i, s) for i in range(len(prompts)) for s in range(seeds)][:samples]
        for i, s in order:
            current = []
            g = torch.Generator("cpu").manual_seed(first_seed + s)
            pipe(prompts[i], num_inference_steps=steps, guidance_scale=cfg, generator=g, output_type="latent")
            per_sample.append(current)
    finally:
        handle.remove()
    return per_sample


def generate(pipe, prompts, seeds, first_seed, steps, cfg, folder):
    os.makedirs(folder, exist_ok=True)
    for i, prompt in enumerate(prompts):
        for s in range(seeds):
            g = torch.Generator("cpu").manual_seed(first_seed + s)
            image = pipe(prompt, num_inference_steps=steps, guidance_scale=cfg, generator=g).images[0]
            tmp = os.path.join(folder, f".{i:03d}-s{first_seed + s}.png")
            image.save(tmp, format="PNG")
            os.replace(tmp, os.path.join(folder, f"{i:03d}-s{first_seed + s}.png"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "default"))
    p.add_argument("--calib-prompts", required=True)
    p.add_argument("--calib-steps", type=int, default=20)
    p.add_argument("--calib-seed", type=int, default=0)
    p.add_argument("--calib-cfg", type=float, default=7.5)
    p.add_argument("--eval-prompts", required=True)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--alpha", type=float, default=0.8)
    p.add_argument("--configs", default="int8-L1,int8-L2,int8-L2.5,int8-L3,fp8-L3,fp8-L4",
                   help="comma-separated: int8-L1, int8-L2, int8-L2.5, int8-L3, fp8-L3, fp8-L4")
    p.add_argument("--skip-fp", action="store_true", help="do not regenerate fp/ (already there)")
    p.add_argument("--sqnr-samples", type=int, default=0,
                   help="teacher-forced noise-prediction SQNR on the first N samples, as `diffuse8 eval` measures it")
    p.add_argument("--skip-images", action="store_true", help="calibrate (and measure SQNR) only; no evaluation images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    import diffusers
    import transformers
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    try:
        import modelopt
        import modelopt.torch.quantization as mtq
        modelopt_version, import_error = modelopt.__version__, None
    except Exception as e:  # noqa: BLE001 - recorded verbatim
        mtq, modelopt_version, import_error = None, None, f"{type(e).__name__}: {e}"

    os.makedirs(args.output, exist_ok=True)
    calib = read_prompts(args.calib_prompts)
    prompts = read_prompts(args.eval_prompts)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    fp_unet = pipe.unet

    run = {"tool": "bench/quality/modelopt_peer.py", "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "versions": {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__, "nvidia-modelopt": modelopt_version},
           "cuda_available": torch.cuda.is_available(), "modelopt_import_error": import_error,
           "model": os.path.abspath(args.model), "scheduler": type(pipe.scheduler).__name__,
           "calibration": {"prompts_file": args.calib_prompts, "prompts": len(calib), "steps": args.calib_steps,
                           "cfg": args.calib_cfg, "seeds": f"{args.calib_seed} + prompt index", "batch": 1},
           "evaluation": {"prompts_file": args.eval_prompts, "prompts": len(prompts), "seeds": args.seeds,
                          "first_seed": args.seed, "steps": args.steps, "cfg": args.cfg,
                          "names": "<prompt index:03d>-s<seed>.png"},
           "configs": {}}

    def save_run():
        tmp = os.path.join(args.output, ".run.json")
        with open(tmp, "w") as f:
            json.dump(run, f, indent=2, default=str)
        os.replace(tmp, os.path.join(args.output, "run.json"))

    if not args.skip_fp:
        t = time.time()
        generate(pipe, prompts, args.seeds, args.seed, args.steps, args.cfg, os.path.join(args.output, "fp"))
        run["fp_seconds"] = round(time.time() - t, 1)
        save_run()

    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        fmt, level = name.split("-L")
        level = float(level)
        entry = {"format": fmt, "level": level}
        run["configs"][name] = entry
        if mtq is None:
            entry["error"] = import_error
            save_run()
            continue
        unet = copy.deepcopy(fp_unet)
        if level >= 4:
            # The bmm attention processor (NVIDIA's example sets it too): with it ModelOpt's fake quantization
            # covers Q, K, V and the softmax output; its SDPA path quantizes the softmax only in TensorRT.
            from diffusers.models.attention_processor import AttnProcessor
            unet.set_attn_processor(AttnProcessor())
            entry["attention_processor"] = "AttnProcessor (bmm)"
        pipe.unet = unet
        try:
            cfg = int8_config(unet, level, args.alpha) if fmt == "int8" else fp8_config()
            entry["algorithm"] = cfg["algorithm"]
            entry["quant_cfg_patterns"] = len(cfg["quant_cfg"])
            entry["quant_cfg_example"] = {k: v for k, v in list(cfg["quant_cfg"].items())[:6]}

            def forward_loop(model):
                for k, prompt in enumerate(calib):
                    g = torch.Generator("cpu").manual_seed(args.calib_seed + k)
                    pipe(prompt, num_inference_steps=args.calib_steps, guidance_scale=args.calib_cfg, generator=g,
                         output_type="latent")

            t = time.time()
            with torch.no_grad():
                mtq.quantize(unet, cfg, forward_loop)
            disable_outside_level(unet, level, mtq)
            entry["calibration_seconds"] = round(time.time() - t, 1)
            entry["quantizers"] = quantizer_summary(unet)
            os.makedirs(os.path.join(args.output, name), exist_ok=True)
            with open(os.path.join(args.output, name, "amax.json"), "w") as f:
                json.dump(quantizer_amax(unet), f, indent=1, sort_keys=True)
            save_run()
            if not args.skip_images:
                t = time.time()
                with torch.no_grad():
                    generate(pipe, prompts, args.seeds, args.seed, args.steps, args.cfg, os.path.join(args.output, name))
                entry["generation_seconds"] = round(time.time() - t, 1)
            if args.sqnr_samples > 0:
                with torch.no_grad():
                    s = step_sqnr(pipe, fp_unet, unet, prompts, args.seeds, args.seed, args.steps, args.cfg, args.sqnr_samples)
                per_step = [sum(v[k] for v in s) / len(s) for k in range(len(s[0]))]
                entry["sqnr"] = {"samples": len(s), "mean_db": sum(per_step) / len(per_step), "per_step_db": per_step}
                print(f"{name}: SQNR {entry['sqnr']['mean_db']:.2f} dB on {len(s)} samples", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - a configuration ModelOpt cannot run here is recorded, not hidden
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback_tail"] = traceback.format_exc().strip().splitlines()[-8:]
            print(f"{name}: {entry['error']}", file=sys.stderr)
        finally:
            pipe.unet = fp_unet
        save_run()
    print(json.dumps(run, indent=2, default=str))


if __name__ == "__main__":
    main()
