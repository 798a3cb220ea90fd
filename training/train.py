"""Trains the embedded default model (SD-family, diffusers layout) on the procedural shapes data set.

  python training/train.py vae  --out OUT                 # stage 1: AutoencoderKL 64x64x3 <-> 16x16x4
  python training/train.py unet --vae OUT/vae --out OUT   # stage 2: UNet + CLIP text encoder jointly
  python training/train.py vae|unet --tiny ...            # a few dozen CPU steps at tiny sizes (smoke test)

Everything is seeded (SEED); data sample i depends only on (SEED, i). Loss logs go to OUT/<stage>_loss.json.
See training/README.md for the exact commands, steps and times of the committed model.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
import tokenizer as toks  # noqa: E402

SEED = 20261125


def vae_model():
    from diffusers import AutoencoderKL
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=32, sample_size=64,
        scaling_factor=1.0, force_upcast=False)


def unet_model():
    from diffusers import UNet2DConditionModel
    # attention_head_dim is the number of heads in SD1.x configs: 2 heads -> head_dim 32 / 48 / 64.
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 96, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=128, attention_head_dim=2, norm_num_groups=32, use_linear_projection=False)


def text_model(vocab_size):
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=128,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def schedulers():
    from diffusers import DDPMScheduler, EulerDiscreteScheduler
    kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
              prediction_type="epsilon", steps_offset=1)
    return DDPMScheduler(**kw, clip_sample=False), EulerDiscreteScheduler(
        **kw, timestep_spacing="leading", interpolation_type="linear", use_karras_sigmas=False)


def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def images_to_tensor(x_uint8, device):
    return torch.from_numpy(x_uint8).to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)


def log_point(log, step, losses, t0):
    log.append({"step": step, "loss": sum(losses) / len(losses), "seconds": round(time.time() - t0, 2)})
    print(f"step {step} loss {log[-1]['loss']:.5f} t {log[-1]['seconds']}s", flush=True)


def train_vae(args, device):
    torch.manual_seed(SEED)
    images, _ = dataset.make_dataset(args.images, seed=SEED, workers=1 if args.tiny else None)
    data = torch.from_numpy(images).to(device)  # uint8 on the device; converted per batch
    vae = vae_model().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(SEED)
    log, losses, t0 = [], [], time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        idx = torch.randint(0, len(data), (args.batch,), device=device, generator=gen)
        x = data[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, device=device, generator=gen)
            rec = vae.decode(z).sample
        rec = rec.float()
        kl = post.kl().mean() / (4 * 16 * 16)
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(loss.item() if step % 10 == 0 else losses[-1] if losses else loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log_point(log, step + 1, losses, t0)
            losses = []
        if args.max_seconds and time.time() - t0 > args.max_seconds:
            print(f"time budget reached at step {step + 1}", flush=True)
            break
    vae.eval()
    # SD's scaling_factor: 1 / std of the (sampled) latents over the data set.
    with torch.no_grad():
        zs = []
        for s in range(0, min(len(data), 8192), 512):
            x = images_to_tensor(images[s:s + 512], device)
            zs.append(vae.encode(x).latent_dist.sample(generator=gen).float())
        zs = torch.cat(zs)
        scaling = float(1.0 / zs.std())
        rec = vae.decode(vae.encode(images_to_tensor(images[:512], device)).latent_dist.mean).sample
        mse = float(F.mse_loss(rec.clamp(-1, 1), images_to_tensor(images[:512], device)))
    vae.register_to_config(scaling_factor=scaling)
    print(f"latent mean {float(zs.mean()):.4f} std {float(zs.std()):.4f} -> scaling_factor {scaling:.5f}; "
          f"reconstruction MSE (mean latent) {mse:.6f}", flush=True)
    vae.to(torch.float16).save_pretrained(os.path.join(args.out, "vae"), safe_serialization=True)
    json.dump({"log": log, "scaling_factor": scaling, "recon_mse": mse, "steps": step + 1, "batch": args.batch,
               "images": args.images, "seconds": time.time() - t0},
              open(os.path.join(args.out, "vae_loss.json"), "w"), indent=1)


def fast_ids(captions, vocab):
    """Every caption word is one token (checked against CLIPTokenizer below), so a dict lookup tokenises."""
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    out = torch.full((len(captions), 77), eos, dtype=torch.int32)
    for i, c in enumerate(captions):
        ids = [bos] + [vocab[w + "</w>"] for w in c.replace(",", " ,").split()] + [eos]
        out[i, :len(ids)] = torch.tensor(ids[:77])
    return out


def train_unet(args, device):
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    torch.manual_seed(SEED)
    tok_dir = os.path.join(args.out, "_tok")
    tok, vocab_size = toks.make_tokenizer(tok_dir)
    vocab = json.load(open(os.path.join(tok_dir, "vocab.json"), encoding="utf-8"))
    images, captions = dataset.make_dataset(args.images, seed=SEED, workers=1 if args.tiny else None)
    ids = fast_ids(captions, vocab)
    check = tok(captions[:500], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(check, ids[:500].long()), "fast tokenisation differs from CLIPTokenizer"
    empty_ids = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids.to(device)
    ids = ids.to(device).long()

    vae = AutoencoderKL.from_pretrained(args.vae).to(device, torch.float32).eval()
    scaling = vae.config.scaling_factor
    with torch.no_grad():  # latent distribution of every image, computed once
        means, stds = [], []
        for s in range(0, len(images), 1024):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                d = vae.encode(images_to_tensor(images[s:s + 1024], device)).latent_dist
            means.append(d.mean.float())
            stds.append(d.std.float())
        means, stds = torch.cat(means), torch.cat(stds)
    print(f"encoded {len(images)} images; latent std x scaling = {float(means.std() * scaling):.3f}", flush=True)
    del images

    unet = unet_model().to(device).train()
    text = text_model(vocab_size).to(device).train()
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    forward = torch.compile(unet) if args.compile else unet
    params = list(unet.parameters()) + list(text.parameters())
    print(f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M, "
          f"text {sum(p.numel() for p in text.parameters()) / 1e6:.2f}M params", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    ddpm, euler = schedulers()
    alphas = ddpm.alphas_cumprod.to(device)
    gen = torch.Generator(device).manual_seed(SEED + 1)
    log, losses, t0 = [], [], time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        idx = torch.randint(0, len(means), (args.batch,), device=device, generator=gen)
        z = (means[idx] + stds[idx] * torch.randn(means[idx].shape, device=device, generator=gen)) * scaling
        noise = torch.randn(z.shape, device=device, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), device=device, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        drop = torch.rand(args.batch, device=device, generator=gen) < args.cfg_dropout
        batch_ids = torch.where(drop[:, None], empty_ids, ids[idx])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            cond = text(batch_ids).last_hidden_state
            pred = forward(noisy, t, cond).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % 10 == 0:
            losses.append(loss.item())
        if args.profile and step == 40:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                      torch.profiler.ProfilerActivity.CUDA])
            prof.__enter__()
        if args.profile and step == 50:
            torch.cuda.synchronize()
            prof.__exit__(None, None, None)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25), flush=True)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log_point(log, step + 1, losses or [loss.item()], t0)
            losses = []
        if args.max_seconds and time.time() - t0 > args.max_seconds:
            print(f"time budget reached at step {step + 1}", flush=True)
            log_point(log, step + 1, losses or [loss.item()], t0)
            break
    trained_steps = log[-1]["step"]
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval()
    text.eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=euler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    model_dir = os.path.join(args.out, "default")
    pipe.to(torch.float16).save_pretrained(model_dir, safe_serialization=True)
    toks.finalize_tokenizer_folder(os.path.join(model_dir, "tokenizer"))
    json.dump({"log": log, "steps": trained_steps, "planned_steps": args.steps, "batch": args.batch,
               "images": args.images, "seconds": time.time() - t0},
              open(os.path.join(args.out, "unet_loss.json"), "w"), indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["vae", "unet"])
    p.add_argument("--out", required=True)
    p.add_argument("--vae", help="trained VAE folder (unet stage)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny data, few steps")
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--kl", type=float, default=1e-6)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--profile", action="store_true", help="print a profile of steps 40-50 (unet stage)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop early after this long (a guard; the LR schedule assumes --steps)")
    args = p.parse_args()
    defaults = {  # (images, steps, batch, lr, warmup, log_every)
        ("vae", False): (100_000, 4000, 256, 1e-3, 200, 100), ("unet", False): (300_000, 4000, 512, 1e-3, 300, 100),
        ("vae", True): (256, 20, 8, 1e-3, 5, 5), ("unet", True): (256, 20, 8, 5e-4, 5, 5)}[(args.stage, args.tiny)]
    for name, value in zip(["images", "steps", "batch", "lr", "warmup", "log_every"], defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{args.stage}: device {device}, {vars(args)}", flush=True)
    (train_vae if args.stage == "vae" else train_unet)(args, device)


if __name__ == "__main__":
    main()
