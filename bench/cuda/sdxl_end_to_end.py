"""End-to-end text-to-image time, SDXL architecture, 1024×1024, 30 Euler steps, CFG 5, FP16: diffusers
(eager, then with `torch.compile` on the UNet) vs. Diffuse8 (`diffuse8 bench --device cuda --generate`), on the
same random weights. Optionally Diffuse8 with other samplers (--schedulers: every step on the GPU) and with its UNet
quantized (--d8-quantized int8:3,fp8:4: ranges from a short GPU calibration, `diffuse8 calibrate --device cuda`,
then `diffuse8 quantize`; random weights are fine for speed).

It builds a complete SDXL-architecture pipeline with random weights (fixed seed) from the published configs
(UNet: --configs/sdxl-unet-config.json; CLIP ViT-L and OpenCLIP bigG text encoders; the SDXL VAE; Euler with
SDXL's scheduler config; CLIP BPE tokenizer files from --vocab), saves it once as a diffusers folder (FP16
safetensors), times `pipe(prompt, num_inference_steps=30, guidance_scale=5, output_type="np")` (wall clock with
torch.cuda.synchronize, median of --repeats after warm-up), then runs the Diffuse8 binary on the same folder.
The VAE config has `force_upcast: false` so both decode in FP16 (diffusers would otherwise decode in FP32).

Writes sdxl_end_to_end.json and .md into --out. Run on the GPU machine, e.g.
  python3 bench/cuda/sdxl_end_to_end.py --binary gpu/diffuse8 --configs Tests/Fixtures/configs --vocab gpu/clip-vocab --out $OUT
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

PROMPT = "a photo of an astronaut riding a horse"

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
              bos_token_id=0, eos_token_id=2, pad_token_id=1)
CLIP_BIG_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1280,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
           down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, act_fn="silu",
           norm_num_groups=32, sample_size=1024, scaling_factor=0.13025, force_upcast=False)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="epsilon", timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
                 use_karras_sigmas=False)


def build(args, folder, log):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if os.path.exists(os.path.join(folder, "model_index.json")):
        return
    t0 = time.time()
    with open(os.path.join(args.configs, "sdxl-unet-config.json")) as f:
        unet_config = json.load(f)
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel(**{k: v for k, v in unet_config.items() if not k.startswith("_")}).half()
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L)).half()
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIG_G)).half()
        vae = AutoencoderKL(**VAE).half()
    vocab, merges = os.path.join(args.vocab, "vocab.json"), os.path.join(args.vocab, "merges.txt")
    tokenizer = CLIPTokenizer(vocab, merges, pad_token="<|endoftext|>", model_max_length=77)
    tokenizer_2 = CLIPTokenizer(vocab, merges, pad_token="!", model_max_length=77)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER))
    pipe.save_pretrained(folder)
    for name in ("tokenizer", "tokenizer_2"):  # transformers 5 writes tokenizer.json only; keep the classic files too
        shutil.copy(vocab, os.path.join(folder, name, "vocab.json"))
        shutil.copy(merges, os.path.join(folder, name, "merges.txt"))
    log(f"random SDXL pipeline written to {folder} in {time.time() - t0:.0f} s")
    del pipe, unet, text_encoder, text_encoder_2, vae
    torch.cuda.empty_cache()


def time_diffusers(args, folder, log):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)

    def generate():
        generator = torch.Generator("cuda").manual_seed(0)
        pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=5.0, height=args.size, width=args.size,
             generator=generator, output_type="np")

    def timed(warmup, repeats):
        for _ in range(warmup):
            generate()
        runs = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            generate()
            torch.cuda.synchronize()
            runs.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs,
                "max_reserved_bytes": torch.cuda.max_memory_reserved()}

    results = {}
    torch.cuda.reset_peak_memory_stats()
    results["diffusers_eager"] = timed(1, args.repeats)
    log(f"diffusers eager: {results['diffusers_eager']['median_s']:.3f} s")
    t0 = time.time()
    pipe.unet = torch.compile(pipe.unet)
    generate()
    compile_s = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    results["diffusers_compile"] = timed(1, args.repeats)
    results["diffusers_compile"]["compile_s"] = compile_s
    log(f"diffusers torch.compile: {results['diffusers_compile']['median_s']:.3f} s (compile {compile_s:.0f} s)")
    del pipe
    torch.cuda.empty_cache()
    return results


def time_diffuse8(args, folder, log, scheduler="euler"):
    command = [args.binary, "bench", "--model", folder, "--device", "cuda", "--generate", "--steps", str(args.steps),
               "--size", str(args.size), "--warmup", "1", "--iterations", str(args.repeats), "--scheduler", scheduler]
    log(" ".join(command))
    run = subprocess.run(command, capture_output=True, text=True)
    log(run.stderr[-3000:])
    if run.returncode != 0:
        raise RuntimeError(f"diffuse8 exited {run.returncode}: {run.stdout[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def quantize_diffuse8(args, folder, specs, log):
    """A short GPU calibration (2 prompts, 4 steps, no sampled rows), then one quantized folder per FORMAT:LEVEL."""
    stats, prompts = os.path.join(args.workdir, "sdxl-random.d8s"), os.path.join(args.workdir, "calibration.txt")
    with open(prompts, "w") as f:
        f.write(PROMPT + "\na red sports car parked on a city street at night\n")
    t0 = time.time()
    steps = [args.binary, "calibrate", "--model", folder, "--device", "cuda", "--calib-prompts", prompts, "--calib-steps", "4",
             "--cfg", "5", "--reservoir-rows", "0", "-o", stats]
    log(" ".join(steps))
    subprocess.run(steps, check=True, capture_output=True, text=True)
    log(f"GPU calibration: {time.time() - t0:.0f} s")
    folders = {}
    for spec in specs:
        fmt, level = spec.split(":")
        out = os.path.join(args.workdir, f"sdxl-random-{fmt}-L{level}")
        if not os.path.exists(out):
            t0 = time.time()
            command = [args.binary, "quantize", "--model", folder, "--stats", stats, "--format", fmt, "--level", level,
                       "--min-calib-prompts", "0", "-o", out]
            log(" ".join(command))
            subprocess.run(command, check=True, capture_output=True, text=True)
            log(f"quantized {spec} in {time.time() - t0:.0f} s")
        folders[spec] = out
    return folders


def markdown(result):
    rows = ["| pipeline | median s | min s | notes |", "|---|---|---|---|"]
    e, c, d = result["diffusers_eager"], result["diffusers_compile"], result["diffuse8"]
    rows.append(f"| diffusers FP16 eager | {e['median_s']:.3f} | {e['min_s']:.3f} | reserved {e['max_reserved_bytes'] / 2**30:.2f} GiB |")
    rows.append(f"| diffusers FP16 + torch.compile(unet) | {c['median_s']:.3f} | {c['min_s']:.3f} | compile {c['compile_s']:.0f} s; "
                f"reserved {c['max_reserved_bytes'] / 2**30:.2f} GiB |")
    rows.append(f"| Diffuse8 FP16 (CUDA) | {d['median_s']:.3f} | {d['min_s']:.3f} | text {d['median_encode_s']:.3f} s, "
                f"denoise {d['median_denoise_s']:.3f} s, decode {d['median_decode_s']:.3f} s; peak {d['peak_bytes'] / 2**30:.2f} GiB "
                f"({d.get('warmup_peak_bytes', 0) / 2**30:.2f} GiB with the autotuning warm-up); "
                f"load {d['load_s']:.0f} s |")
    for key, other in result.items():
        if key.startswith("diffuse8_"):
            rows.append(f"| Diffuse8 {key[len('diffuse8_'):]} (CUDA) | {other['median_s']:.3f} | {other['min_s']:.3f} | "
                        f"denoise {other['median_denoise_s']:.3f} s; peak {other['peak_bytes'] / 2**30:.2f} GiB; "
                        f"{c['median_s'] / other['median_s']:.2f}× torch.compile |")
    rows.append("")
    rows.append(f"Diffuse8 vs torch.compile: **{c['median_s'] / d['median_s']:.2f}×** (ratio of medians, same run)")
    return result["header"] + "\n\n" + "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="gpu/diffuse8")
    parser.add_argument("--configs", default="Tests/Fixtures/configs")
    parser.add_argument("--vocab", default="gpu/clip-vocab")
    parser.add_argument("--workdir", default="/tmp/d8e2e")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-diffusers", action="store_true")
    parser.add_argument("--schedulers", default="euler", help="Diffuse8 samplers to time, e.g. euler,euler-a,ddim,dpm++2m,dpm++2m-karras")
    parser.add_argument("--d8-quantized", default="", help="also time Diffuse8 with its UNet quantized, e.g. int8:3,fp8:4 (Euler)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    folder = os.path.join(args.workdir, "sdxl-random")

    def log(message):
        print(message, flush=True)

    card = torch.cuda.get_device_name(0)
    header = (f"{card}, torch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; SDXL "
              f"architecture (random weights), {args.size}×{args.size}, {args.steps} Euler steps, CFG 5, FP16, "
              f"median of {args.repeats} generations after warm-up (wall clock, models loaded)")
    log(header)
    build(args, folder, log)
    result = {"card": card, "torch": torch.__version__, "header": header}
    if not args.skip_diffusers:
        result.update(time_diffusers(args, folder, log))

    def save():
        with open(os.path.join(args.out, "sdxl_end_to_end.json"), "w") as f:
            json.dump(result, f, indent=1)

    save()
    result["diffuse8"] = time_diffuse8(args, folder, log)
    save()
    for scheduler in filter(None, args.schedulers.split(",")):
        if scheduler != "euler":
            result[f"diffuse8_{scheduler}"] = time_diffuse8(args, folder, log, scheduler)
            save()
    specs = list(filter(None, args.d8_quantized.split(",")))
    if specs:
        for spec, quantized in quantize_diffuse8(args, folder, specs, log).items():
            result[f"diffuse8_{spec}"] = time_diffuse8(args, quantized, log)
            save()
    if not args.skip_diffusers:
        table = markdown(result)
        with open(os.path.join(args.out, "sdxl_end_to_end.md"), "w") as f:
            f.write(table)
        print(table)
    else:
        print(json.dumps({k: v for k, v in result.items() if k.startswith("diffuse8")}))


if __name__ == "__main__":
    sys.exit(main())
