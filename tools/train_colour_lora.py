#!/usr/bin/env python3
"""Trains models/examples/red-to-blue.safetensors: a rank-4 LoRA (kohya layout) for the default model that draws
blue where the prompt says red, learnt from the model's own pictures.

Data. Captions come from the default model's caption grammar (training/dataset.py; a third of them shortened the
way people type them, "a large red circle"). For every caption with "red", the base model draws the same caption
with "red" replaced by "blue" (Euler, 20 steps, CFG 7.5, as `diffuse8 generate` does); the LoRA learns to draw that
picture from the red caption. Captions without "red" (and the empty caption that classifier-free guidance runs) are
paired with the base model's own pictures of them, so every other colour — and the unconditional prediction that
CFG amplifies — stays as it was.

Objective (`--objective`). `teacher` (default): at a random timestep t the LoRA UNet, given the red caption, must
predict the noise the base UNet predicts for the blue caption at the same noisy latent (for the preservation
captions: the base UNet's own prediction) — the exact target, with far less variance than the plain noise. `eps`:
the standard diffusion loss, the LoRA UNet's prediction against the true noise of the generated latents.

LoRA: rank 4 (alpha = rank, so scale 1) on the to_q / to_k / to_v / to_out.0 projections of every self- (attn1)
and cross-attention (attn2), `--ff` adds the feed-forward projections; lora_up starts at zero.

Three phases; only --prepare needs transformers, so the training machine needs just torch, diffusers, safetensors:

  python tools/train_colour_lora.py --prepare                # CPU: text embeddings of every caption
  python tools/train_colour_lora.py --train --device cuda    # draws the latents, trains, writes the LoRA
  python tools/train_colour_lora.py --check --lora FILE      # red/blue pixel shares with and without it (any device)

(tools/train_colour_lora.sh runs --train and --check on a CUDA machine.)

`--prepare` writes PROMPTS (default .build-colour-lora/prompts.safetensors, ~25 MB); `--train` reads it and writes
OUT (default .build-colour-lora/red-to-blue.safetensors) and LOG_DIR/train_colour_lora.json (what it ran: steps,
learning rate, rank, seed, loss curve, times, versions, size of every update beside its weight). Everything is
seeded; random numbers are drawn on the CPU, so the data and the batch order do not depend on the device.
`--steps 5 --limit-prompts 8 --sample-steps 4` makes a CPU smoke test of `--train`.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_MODEL = os.path.join(ROOT, "models", "default")
WORK = os.path.join(ROOT, ".build-colour-lora")
SEED = 20261130
ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
FF_TARGETS = ["ff.net.0.proj", "ff.net.2"]
# The prompts docs/QUALITY.md measures the example LoRA with: held out of training, used by --check.
CHECK_RED_PROMPTS = [
    "a large red circle above a small green square on a white background",
    "a small red square left of a large yellow triangle",
    "a large red triangle on a gray background",
    "a small red circle, a small cyan square and a small pink triangle from left to right on a white background",
    "a large red square below a small blue circle",
    "a small red triangle right of a large green circle on a gray background",
    "a large red circle",
    "a small red square above a small red circle on a white background",
]
CHECK_OTHER_PROMPTS = [
    "a large blue circle above a small green square on a white background",
    "a small purple square left of a large yellow triangle",
    "a large orange triangle on a gray background",
    "a small pink circle, a small cyan square and a small blue triangle from left to right on a white background",
    "a large green square below a small blue circle",
    "a small yellow triangle right of a large blue circle on a black background",
    "a large blue square",
    "a small orange square above a small purple circle on a brown background",
]
RED_WORD = re.compile(r"\bred\b")


def has_red(caption):
    return RED_WORD.search(caption) is not None


def to_blue(caption):
    return RED_WORD.sub("blue", caption)


# ---------------------------------------------------------------------------------------------------------------
# --prepare: captions and their text embeddings (needs transformers)


def shortened(caption, rng):
    """A third of the captions lose their background (and single shapes their position), as people type them."""
    if rng.random() < 1 / 3:
        caption = re.sub(r" on a \w+ background$", "", caption)
        if rng.random() < 0.5:
            caption = re.sub(r" (on the left|on the right|at the top|at the bottom|in the centre)$", "", caption)
    return caption


def make_captions(red_count, keep_count, seed):
    sys.path.insert(0, os.path.join(ROOT, "training"))
    import dataset  # the default model's caption grammar
    rng = random.Random(seed)
    excluded = set(CHECK_RED_PROMPTS) | set(CHECK_OTHER_PROMPTS)
    red, keep, seen = [], [], set(excluded)
    while len(red) < red_count or len(keep) < keep_count:
        caption = shortened(dataset.random_scene(rng, allow_heldout=True)["caption"], rng)
        if caption in seen:
            continue
        seen.add(caption)
        if has_red(caption) and len(red) < red_count:
            red.append(caption)
        elif not has_red(caption) and len(keep) < keep_count:
            keep.append(caption)
    return red, keep


def prepare(args):
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer
    red, keep = make_captions(args.red_prompts, args.keep_prompts, args.seed)
    blue = [to_blue(c) for c in red]
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(args.model, "tokenizer"))
    text = CLIPTextModel.from_pretrained(os.path.join(args.model, "text_encoder"), torch_dtype=torch.float32).eval()

    def encode(captions):  # what StableDiffusionPipeline feeds the UNet: last hidden state, 77 tokens
        out = []
        for s in range(0, len(captions), 256):
            ids = tokenizer(captions[s:s + 256], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            with torch.no_grad():
                out.append(text(input_ids=ids).last_hidden_state)
        return torch.cat(out).to(torch.float16).contiguous()

    tensors = {"red": encode(red), "blue": encode(blue), "keep": encode(keep), "empty": encode([""]),
               "check_red": encode(CHECK_RED_PROMPTS), "check_other": encode(CHECK_OTHER_PROMPTS)}
    metadata = {"red": json.dumps(red), "blue": json.dumps(blue), "keep": json.dumps(keep), "seed": str(args.seed),
                "text_encoder_sha256": sha256(os.path.join(args.model, "text_encoder", "model.safetensors"))}
    os.makedirs(os.path.dirname(os.path.abspath(args.prompts)), exist_ok=True)
    atomic_save(lambda path: save_file(tensors, path, metadata=metadata), args.prompts)
    print(f"{args.prompts}: {len(red)} red captions (+ their blue twins), {len(keep)} others, the empty caption; "
          f"e.g. '{red[0]}' -> '{blue[0]}'", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# LoRA by hand


class LoRALinear(torch.nn.Module):
    """y = base(x) + scale · up(down(x)); `enabled` off gives the base layer exactly (the teacher)."""

    def __init__(self, base, rank, alpha, generator):
        super().__init__()
        self.base = base
        self.rank, self.alpha, self.enabled = rank, alpha, True
        down = torch.empty(rank, base.in_features)
        # kohya's initialisation: kaiming-uniform down (a = √5, as nn.Linear), zero up, so training starts at the base
        bound = 1 / math.sqrt(base.in_features)
        down.uniform_(-bound, bound, generator=generator)
        self.down = torch.nn.Parameter(down.to(base.weight.device))
        self.up = torch.nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    @property
    def scale(self):
        return self.alpha / self.rank

    def forward(self, x):
        y = self.base(x)
        if self.enabled:
            y = y + self.scale * F.linear(F.linear(x, self.down), self.up)
        return y


def add_lora(unet, rank, alpha, ff, generator):
    """Wraps the targeted nn.Linear layers of every transformer block; returns {diffusers module name: LoRALinear}."""
    suffixes = [f".{attn}.{t}" for attn in ("attn1", "attn2") for t in ATTENTION_TARGETS] + \
               ([f".{t}" for t in FF_TARGETS] if ff else [])
    names = [n for n, m in unet.named_modules()
             if isinstance(m, torch.nn.Linear) and ".transformer_blocks." in n and any(n.endswith(s) for s in suffixes)]
    wrapped = {}
    for name in names:  # sorted order from named_modules: the same initialisation on every machine
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        wrapped[name] = LoRALinear(getattr(parent, child) if not child.isdigit() else parent[int(child)], rank, alpha, generator)
        if child.isdigit():
            parent[int(child)] = wrapped[name]
        else:
            setattr(parent, child, wrapped[name])
    return wrapped


def kohya_stem(name):
    return "lora_unet_" + name.replace(".", "_")


def lora_tensors(wrapped):
    out = {}
    for name, m in wrapped.items():
        stem = kohya_stem(name)
        out[stem + ".lora_down.weight"] = m.down.detach().float().cpu().contiguous()
        out[stem + ".lora_up.weight"] = m.up.detach().float().cpu().contiguous()
        out[stem + ".alpha"] = torch.tensor(float(m.alpha))
    return out


def update_ratios(wrapped):
    """|scale · up · down|_F / |W|_F per module (docs: an update beside a weight, not instead of it)."""
    ratios = {}
    with torch.no_grad():
        for name, m in wrapped.items():
            delta = m.scale * (m.up.float() @ m.down.float())
            ratios[name] = float(delta.norm() / m.base.weight.float().norm())
    return ratios


# ---------------------------------------------------------------------------------------------------------------
# --train (torch + diffusers + safetensors only)


def load_unet(model, device):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_pretrained(os.path.join(model, "unet")).to(device, torch.float32).eval()


def load_scheduler(model):
    from diffusers import EulerDiscreteScheduler
    return EulerDiscreteScheduler.from_pretrained(os.path.join(model, "scheduler"))


@torch.no_grad()
def draw_latents(unet, scheduler_config, cond, uncond, noise, steps, cfg, batch, device):
    """The base model's pictures (latents, UNet space) of `cond`: Euler with classifier-free guidance, like the
    diffusers pipeline (initial latents = noise · init_noise_sigma)."""
    from diffusers import EulerDiscreteScheduler
    out = []
    for s in range(0, len(cond), batch):
        c = cond[s:s + batch].to(device, torch.float32)
        sched = EulerDiscreteScheduler.from_config(scheduler_config)
        sched.set_timesteps(steps, device=device)
        x = noise[s:s + batch].to(device) * sched.init_noise_sigma
        text = torch.cat([uncond.to(device, torch.float32).expand(len(c), -1, -1), c])
        for t in sched.timesteps:
            e_uncond, e_cond = unet(sched.scale_model_input(torch.cat([x, x]), t), t, text).sample.chunk(2)
            x = sched.step(e_uncond + cfg * (e_cond - e_uncond), t, x).prev_sample
        out.append(x.float())
    return torch.cat(out)


def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def train(args):
    import diffusers
    from safetensors import safe_open
    from safetensors.torch import save_file
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    # fp32 throughout: the losses reach ~1e-4, where bf16 rounding of both predictions (~4e-3 each) is no longer small,
    # and a step of this small UNet costs about the same either way (kernel launches, not arithmetic)
    torch.manual_seed(args.seed)
    cpu = torch.Generator("cpu").manual_seed(args.seed)
    t_start = time.time()

    with safe_open(args.prompts, "pt") as f:
        emb = {k: f.get_tensor(k).float() for k in ("red", "blue", "keep", "empty")}
        example = (json.loads(f.metadata()["red"])[0], json.loads(f.metadata()["blue"])[0])
    if args.limit_prompts:
        for k in ("red", "blue", "keep"):
            emb[k] = emb[k][:args.limit_prompts]
    n_red, n_keep = len(emb["red"]), len(emb["keep"])
    print(f"{n_red} red captions (e.g. '{example[0]}' drawn as '{example[1]}'), {n_keep} others; device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}", flush=True)

    unet = load_unet(args.model, device)
    for p in unet.parameters():
        p.requires_grad_(False)
    scheduler = load_scheduler(args.model)
    alphas = scheduler.alphas_cumprod.to(device, torch.float32)

    # 1. the base model's pictures: blue twins of the red captions, and the other captions themselves
    S = args.seeds_per_prompt
    red_pid = torch.arange(n_red).repeat(S)       # latent i belongs to caption red_pid[i]
    keep_pid = torch.arange(n_keep).repeat(S)
    noise_blue = torch.randn(len(red_pid), 4, 16, 16, generator=cpu)
    noise_keep = torch.randn(len(keep_pid), 4, 16, 16, generator=cpu)
    t0 = time.time()
    blue_latents = draw_latents(unet, scheduler.config, emb["blue"][red_pid], emb["empty"], noise_blue,
                                args.sample_steps, args.cfg, args.sample_batch, device)
    keep_latents = draw_latents(unet, scheduler.config, emb["keep"][keep_pid], emb["empty"], noise_keep,
                                args.sample_steps, args.cfg, args.sample_batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sample_seconds = time.time() - t0
    print(f"drew {len(blue_latents)} + {len(keep_latents)} latents ({args.sample_steps} Euler steps, CFG {args.cfg}) "
          f"in {sample_seconds:.1f}s; latent std {float(blue_latents.std()):.3f} / {float(keep_latents.std()):.3f}",
          flush=True)
    all_latents = torch.cat([blue_latents, keep_latents])
    emb = {k: v.to(device) for k, v in emb.items()}
    red_pid_d, keep_pid_d = red_pid.to(device), keep_pid.to(device)

    # 2. LoRA training
    wrapped = add_lora(unet, args.rank, args.alpha or args.rank, args.ff, cpu)
    params = [p for m in wrapped.values() for p in (m.down, m.up)]
    print(f"LoRA rank {args.rank} on {len(wrapped)} layers, {sum(p.numel() for p in params)} parameters", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    n_r = round(args.batch * args.red_fraction)
    n_e = round(args.batch * args.empty_fraction)
    n_k = args.batch - n_r - n_e
    if min(n_r, n_k) <= 0 or n_e < 0:
        sys.exit(f"--batch {args.batch} with --red-fraction {args.red_fraction} / --empty-fraction "
                 f"{args.empty_fraction} leaves no red or no other captions in a batch")
    empty = emb["empty"].expand(n_e, -1, -1)
    log, window, t0 = [], [], time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        i_r = torch.randint(0, len(blue_latents), (n_r,), generator=cpu).to(device)
        i_k = torch.randint(0, len(keep_latents), (n_k,), generator=cpu).to(device)
        i_e = torch.randint(0, len(all_latents), (n_e,), generator=cpu).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=cpu).to(device)
        noise = torch.randn(args.batch, 4, 16, 16, generator=cpu).to(device)
        x0 = torch.cat([blue_latents[i_r], keep_latents[i_k], all_latents[i_e]])
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        student = torch.cat([emb["red"][red_pid_d[i_r]], emb["keep"][keep_pid_d[i_k]], empty])
        if args.objective == "teacher":
            teacher = torch.cat([emb["blue"][red_pid_d[i_r]], student[n_r:]])
            for m in wrapped.values():
                m.enabled = False
            with torch.no_grad():
                target = unet(noisy, t, teacher).sample
            for m in wrapped.values():
                m.enabled = True
        else:
            target = noise
        pred = unet(noisy, t, student).sample
        per_sample = (pred - target).pow(2).mean(dim=(1, 2, 3))
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        window.append(torch.stack([loss.detach(), per_sample[:n_r].detach().mean(), per_sample[n_r:].detach().mean()]))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            total, red, other = (float(v) for v in torch.stack(window).mean(0))
            window = []
            log.append({"step": step + 1, "loss": total, "loss_red": red, "loss_other": other,
                        "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)})
            print(f"step {step + 1}/{args.steps} loss {total:.5f} (red {red:.5f}, other {other:.5f}) "
                  f"lr {log[-1]['lr']:.2e} {log[-1]['seconds']}s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.time() - t0

    # 3. the LoRA file and what was run
    ratios = update_ratios(wrapped)
    worst = max(ratios, key=ratios.get)
    print(f"largest update beside its weight: {ratios[worst]:.3f} ({worst})", flush=True)
    record = {
        "objective": args.objective, "steps": args.steps, "batch": args.batch, "lr": args.lr, "warmup": args.warmup,
        "schedule": "linear warm-up, cosine to 10 %", "optimizer": "AdamW (0.9, 0.99), no weight decay, grad-norm clip 1",
        "rank": args.rank, "alpha": args.alpha or args.rank, "ff": args.ff, "layers": len(wrapped), "seed": args.seed,
        "red_fraction": args.red_fraction, "empty_fraction": args.empty_fraction, "red_captions": n_red,
        "other_captions": n_keep, "seeds_per_prompt": S, "sample_steps": args.sample_steps, "cfg": args.cfg,
        "precision": "fp32 (TF32 matmuls on CUDA)", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
        "sample_seconds": round(sample_seconds, 2), "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.time() - t_start, 2), "prompts_sha256": sha256(args.prompts),
        "update_ratio_max": ratios[worst], "update_ratio_max_layer": worst,
        "update_ratios": {kohya_stem(k): v for k, v in ratios.items()}, "log": log,
    }
    description = (f"rank-{args.rank} LoRA for the default model: red -> blue, trained by tools/train_colour_lora.py "
                   f"({args.objective} objective, {args.steps} steps x {args.batch})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_save(lambda path: save_file(lora_tensors(wrapped), path, metadata={
        "description": description, "training": json.dumps({k: v for k, v in record.items()
                                                            if k not in ("log", "update_ratios")})}), args.out)
    os.makedirs(args.log_dir, exist_ok=True)
    log_path = os.path.join(args.log_dir, "train_colour_lora.json")
    atomic_save(lambda path: json.dump(record, open(path, "w"), indent=1), log_path)
    print(f"{args.out}: {len(wrapped)} modules; {log_path}; sampling {sample_seconds:.1f}s, training "
          f"{train_seconds:.1f}s, total {record['total_seconds']:.1f}s", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# --check: how much red turns blue, and how much else moves (torch + diffusers)


def merge_lora(unet, path, weight):
    """W ← W + weight · (alpha / rank) · up · down for every module of a kohya file; every key must match."""
    from safetensors.torch import load_file
    lora = load_file(path)
    layers = {kohya_stem(n): m for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    stems = sorted({k.rsplit(".", 2)[0] for k in lora if k.endswith(".lora_down.weight")})
    unknown = [s for s in stems if s not in layers]
    if unknown or not stems:
        sys.exit(f"{path}: {len(unknown)} of {len(stems)} modules match no UNet layer (e.g. {unknown[:3]})")
    with torch.no_grad():
        for stem in stems:
            down, up = lora[stem + ".lora_down.weight"].float(), lora[stem + ".lora_up.weight"].float()
            alpha = float(lora[stem + ".alpha"]) if stem + ".alpha" in lora else down.shape[0]
            layer = layers[stem]
            delta = weight * alpha / down.shape[0] * (up @ down)
            layer.weight += delta.to(layer.weight.device, layer.weight.dtype).view_as(layer.weight)
    return len(stems)


def colour_masks(images):
    """images uint8 [n, h, w, 3] → (red, blue) boolean masks, with the thresholds of the Swift example test."""
    r, g, b = (images[..., i].astype("int32") for i in range(3))
    return (r > 150) & (g < 90) & (b < 90), (b > 150) & (r < 120) & (g < 150)


def check(args):
    """The check prompts (embedded by --prepare) drawn with and without the LoRA: the same Euler sampler as the
    training data (equal to diffusers' StableDiffusionPipeline for the same seeds), decoded by the VAE."""
    import numpy as np
    from diffusers import AutoencoderKL
    from safetensors import safe_open
    device = torch.device(args.device)
    with safe_open(args.prompts, "pt") as f:
        if "check_red" not in f.keys():
            sys.exit(f"{args.prompts} holds no check prompts; run --prepare again")
        emb = {k: f.get_tensor(k).float() for k in ("check_red", "check_other", "empty")}
    unet = load_unet(args.model, device)
    scheduler = load_scheduler(args.model)
    vae = AutoencoderKL.from_pretrained(os.path.join(args.model, "vae")).to(device, torch.float32).eval()
    seeds = list(range(args.seeds))
    # one generator per image, seeded like `diffuse8 generate --seed S` and diffusers' generator=[...]
    noise = torch.cat([torch.randn(1, 4, 16, 16, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])

    def draw(cond):
        cond = cond.repeat_interleave(len(seeds), dim=0)
        latents = draw_latents(unet, scheduler.config, cond, emb["empty"], noise.repeat(len(cond) // len(seeds), 1, 1, 1),
                               args.check_steps, args.cfg, args.sample_batch, device)
        with torch.no_grad():
            pixels = vae.decode(latents / vae.config.scaling_factor).sample
        return ((pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()

    t0 = time.time()
    plain_red, plain_other = draw(emb["check_red"]), draw(emb["check_other"])
    modules = merge_lora(unet, args.lora, args.lora_weight)
    lora_red, lora_other = draw(emb["check_red"]), draw(emb["check_other"])
    red0, blue0 = colour_masks(plain_red)
    red1, blue1 = colour_masks(lora_red)
    turned = float((red0 & blue1).sum() / max(1, red0.sum()))
    mse = ((lora_other.astype("float64") - plain_other.astype("float64")) ** 2).reshape(len(lora_other), -1).mean(1)
    other_psnr = [10 * math.log10(255 ** 2 / m) if m > 0 else 99.0 for m in mse]  # 99 dB: identical
    report = {
        "lora": args.lora, "lora_weight": args.lora_weight, "modules": modules, "steps": args.check_steps,
        "cfg": args.cfg, "seeds": seeds, "red_prompts": CHECK_RED_PROMPTS, "other_prompts": CHECK_OTHER_PROMPTS,
        "red_prompts_red_share": {"without": float(red0.mean()), "with": float(red1.mean())},
        "red_prompts_blue_share": {"without": float(blue0.mean()), "with": float(blue1.mean())},
        "red_pixels_turned_blue": turned,
        "other_prompts_psnr_with_vs_without_db": {"mean": float(np.mean(other_psnr)), "min": float(np.min(other_psnr))},
        "other_prompts_mean_abs_difference": float(np.abs(lora_other.astype("int32") - plain_other.astype("int32")).mean()),
        "device": str(device), "seconds": round(time.time() - t0, 1), "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
    }
    psnr = report["other_prompts_psnr_with_vs_without_db"]
    print(f"{len(CHECK_RED_PROMPTS)} red prompts x {len(seeds)} seeds, {args.check_steps} Euler steps, CFG {args.cfg}:\n"
          f"  red pixel share   without {red0.mean():.4f}  with {red1.mean():.4f}\n"
          f"  blue pixel share  without {blue0.mean():.4f}  with {blue1.mean():.4f}\n"
          f"  red pixels (without) that are blue with the LoRA: {turned:.3f}\n"
          f"{len(CHECK_OTHER_PROMPTS)} prompts without red: PSNR with vs without the LoRA mean {psnr['mean']:.2f} dB, "
          f"min {psnr['min']:.2f} dB; mean |difference| {report['other_prompts_mean_abs_difference']:.2f} grey levels",
          flush=True)
    if args.report:
        atomic_save(lambda path: json.dump(report, open(path, "w"), indent=1), args.report)
        print(args.report)
    if args.images:
        from PIL import Image
        rows = [np.concatenate(list(x), axis=1) for x in (plain_red, lora_red, plain_other, lora_other)]
        atomic_save(lambda path: Image.fromarray(np.concatenate(rows, axis=0)).save(path, format="PNG"), args.images)
        print(f"{args.images}: rows = red prompts without / with the LoRA, other prompts without / with")


# ---------------------------------------------------------------------------------------------------------------


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_save(write, path):
    """Writes through a temporary file beside `path` and renames it: a crash leaves no half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors writes 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", action="store_true", help="text embeddings of the captions (needs transformers)")
    mode.add_argument("--train", action="store_true", help="draw the latents and train the LoRA (torch + diffusers)")
    mode.add_argument("--check", action="store_true", help="red/blue shares with and without --lora")
    p.add_argument("--model", default=DEFAULT_MODEL, help="diffusers folder of the default model")
    p.add_argument("--prompts", default=os.path.join(WORK, "prompts.safetensors"), help="captions + embeddings file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=SEED)
    g = p.add_argument_group("--prepare")
    g.add_argument("--red-prompts", type=int, default=512, help="captions with 'red'")
    g.add_argument("--keep-prompts", type=int, default=256, help="captions without 'red' (preservation)")
    g = p.add_argument_group("--train")
    g.add_argument("--out", default=os.path.join(WORK, "red-to-blue.safetensors"), help="the LoRA file")
    g.add_argument("--log-dir", default=os.path.join(WORK, "log"))
    g.add_argument("--objective", choices=["teacher", "eps"], default="teacher")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch", type=int, default=128, help="a step costs about the same at 64 or 128 on a GPU")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--rank", type=int, default=4)
    g.add_argument("--alpha", type=float, default=None, help="kohya alpha (default: the rank, scale 1)")
    g.add_argument("--ff", action="store_true", help="also adapt the feed-forward projections")
    g.add_argument("--red-fraction", type=float, default=0.5, help="share of each batch from red captions")
    g.add_argument("--empty-fraction", type=float, default=0.1, help="share of each batch with the empty caption")
    g.add_argument("--seeds-per-prompt", type=int, default=2, help="pictures drawn per caption")
    g.add_argument("--sample-steps", type=int, default=20, help="Euler steps for the base model's pictures")
    g.add_argument("--sample-batch", type=int, default=512)
    g.add_argument("--limit-prompts", type=int, default=None, help="use only the first N captions of each kind")
    g.add_argument("--log-every", type=int, default=50)
    g.add_argument("--cfg", type=float, default=7.5, help="guidance scale (drawing and --check)")
    g = p.add_argument_group("--check")
    g.add_argument("--lora", help="the LoRA file to check")
    g.add_argument("--lora-weight", type=float, default=1.0)
    g.add_argument("--check-steps", type=int, default=20)
    g.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per prompt")
    g.add_argument("--report", help="write the numbers as JSON here")
    g.add_argument("--images", help="write a PNG grid of the pictures here")
    args = p.parse_args()
    if args.train and not os.path.exists(args.prompts):
        p.error(f"--prompts {args.prompts} does not exist; run --prepare first")
    if args.check and not args.lora:
        p.error("--check needs --lora FILE")
    if args.check and not os.path.exists(args.lora):
        p.error(f"--lora {args.lora} does not exist")
    if args.rank < 1 or args.steps < 1 or args.batch < 2:
        p.error("--rank, --steps must be ≥ 1 and --batch ≥ 2")
    print(f"{'prepare' if args.prepare else 'train' if args.train else 'check'}: {vars(args)}", flush=True)
    (prepare if args.prepare else train if args.train else check)(args)


if __name__ == "__main__":
    main()
