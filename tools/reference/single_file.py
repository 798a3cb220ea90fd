"""Single-file checkpoints in the original LDM/SGM key layout, written from the tiny fixture pipelines, and the
images diffusers' `from_single_file` makes from them.

  Tests/Fixtures/single-file/tiny-sd15.safetensors       SD1.x layout (`model.diffusion_model.*`,
                                                         `first_stage_model.*`, `cond_stage_model.transformer.*`),
                                                         FP16, with the DDPM buffers real checkpoints carry
  Tests/Fixtures/single-file/tiny-sd15-fp8.safetensors   the same with the UNet stored as F8_E4M3 (as ComfyUI's
                                                         fp8 checkpoints store it) and everything else FP16
  Tests/Fixtures/single-file/tiny-sdxl.safetensors       SGM layout (`conditioner.embedders.0.transformer.*`,
                                                         OpenCLIP `conditioner.embedders.1.model.*`), BF16

The writer inverts diffusers' converters; every file is checked by loading it back with `from_single_file`
and comparing each weight with the source folder (after the same storage rounding). The reference images
(Tests/Fixtures/reference/single_file.safetensors, `<name>.latents` F32 and `<name>.image` U8 HWC) come from
`StableDiffusionPipeline.from_single_file(file, config=<tiny folder>)` in FP32 on the CPU.
"""
import os
import re

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")
OUT = os.path.join(FIXTURES, "single-file")

SETTINGS = dict(prompt="a small red circle above a large blue square", negative_prompt="blurry", steps=4,
                guidance=5.0, seed=77, width=64, height=64)

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def unet_prefix_map(config):
    """diffusers module prefix → LDM module prefix, for every block of the UNet described by `config`."""
    lpb = config["layers_per_block"]
    n = len(config["block_out_channels"])
    m = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
         "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
         "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
         "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
         "mid_block.resnets.1.": "middle_block.2."}
    for b in range(n):
        for l in range(lpb):
            i = b * (lpb + 1) + l + 1
            m[f"down_blocks.{b}.resnets.{l}."] = f"input_blocks.{i}.0."
            m[f"down_blocks.{b}.attentions.{l}."] = f"input_blocks.{i}.1."
        if b < n - 1:
            m[f"down_blocks.{b}.downsamplers.0.conv."] = f"input_blocks.{b * (lpb + 1) + lpb + 1}.0.op."
        has_attention = config["up_block_types"][b].startswith("CrossAttn")
        for l in range(lpb + 1):
            i = b * (lpb + 1) + l
            m[f"up_blocks.{b}.resnets.{l}."] = f"output_blocks.{i}.0."
            m[f"up_blocks.{b}.attentions.{l}."] = f"output_blocks.{i}.1."
        if b < n - 1:
            m[f"up_blocks.{b}.upsamplers.0."] = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if has_attention else 1}."
    return m


def unet_to_ldm(sd, config):
    prefixes = sorted(unet_prefix_map(config).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in sd.items():
        for d, l in prefixes:
            if key.startswith(d):
                rest = key[len(d):]
                if ".resnets." in d or d.startswith("mid_block.resnets"):
                    for a, b in RESNET:
                        if rest.startswith(a + "."):
                            rest = b + rest[len(a):]
                            break
                out["model.diffusion_model." + l + rest] = value
                break
        else:
            raise SystemExit(f"unmapped UNet key {key}")
    return out


def vae_to_ldm(sd, config):
    n = len(config["block_out_channels"])
    out = {}
    for key, value in sd.items():
        k = key
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.down.\1.downsample.conv.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                   lambda mt: f"decoder.up.{n - 1 - int(mt.group(1))}.block.{mt.group(2)}.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.",
                   lambda mt: f"decoder.up.{n - 1 - int(mt.group(1))}.upsample.conv.", k)
        k = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1.", k)
        k = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2.", k)
        k = k.replace(".conv_norm_out.", ".norm_out.").replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid_block.attentions.0." in k:
            k = k.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for a, b in [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]:
                k = k.replace(f".attn_1.{a}.", f".attn_1.{b}.")
            if k.endswith("weight") and value.dim() == 2:
                value = value[:, :, None, None]  # LDM stores the attention projections as 1x1 convolutions
        out["first_stage_model." + k] = value
    return out


def open_clip_to_ldm(sd, prefix):
    out = {}
    layers = {}
    for key, value in sd.items():
        if not key.startswith("text_model.") and key != "text_projection.weight":
            key = "text_model." + key
        if key == "text_model.embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            parts = key.split(".")
            i, rest = parts[3], ".".join(parts[4:])
            base = f"{prefix}transformer.resblocks.{i}."
            m = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if m:
                layers.setdefault((i, m.group(2)), {})[m.group(1)] = value
                continue
            for a, b in [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]:
                if rest.startswith(a + "."):
                    out[base + b + rest[len(a):]] = value
                    break
            else:
                raise SystemExit(f"unmapped OpenCLIP key {key}")
        else:
            raise SystemExit(f"unmapped OpenCLIP key {key}")
    for (i, kind), qkv in layers.items():
        out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], 0)
    out[prefix + "logit_scale"] = torch.tensor(4.6052)
    return out


def ddpm_buffers():
    """The schedule buffers LDM checkpoints carry (readers must skip them)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return {"betas": betas.float(), "alphas_cumprod": alphas_cumprod.float(),
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt().float()}


def checkpoint(pipe, xl):
    sd = {}
    sd.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    sd.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    # transformers' newer CLIPTextModel drops the `text_model.` level from its state dict; checkpoints have it
    te = {(k if k.startswith("text_model.") else "text_model." + k): v
          for k, v in pipe.text_encoder.state_dict().items() if not k.endswith("position_ids")}
    if xl:
        sd.update({"conditioner.embedders.0.transformer." + k: v for k, v in te.items()})
        sd.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    else:
        sd.update({"cond_stage_model.transformer." + k: v for k, v in te.items()})
        sd.update(ddpm_buffers())
    return sd


def write(sd, path, dtype, unet_dtype=None):
    stored = {}
    for k, v in sd.items():
        target = unet_dtype if unet_dtype is not None and k.startswith("model.diffusion_model.") else dtype
        stored[k] = v.to(target).contiguous() if v.is_floating_point() and k not in ddpm_buffers() else v.contiguous()
    save_file(stored, path)


def check_round_trip(source, loaded, name, dtype, unet_dtype):
    """Every weight diffusers read back equals the source weight after the file's storage rounding."""
    for component in ["unet", "vae", "text_encoder", "text_encoder_2"]:
        a = getattr(source, component, None)
        if a is None:
            continue
        sa, sb = a.state_dict(), getattr(loaded, component).state_dict()
        for key, value in sa.items():
            if key.endswith("position_ids"):
                continue
            assert key in sb, f"{name}: {component}.{key} not loaded back"
            assert sb[key].shape == value.shape, f"{name}: {component}.{key} shape {sb[key].shape} vs {value.shape}"
            stored = unet_dtype if component == "unet" and unet_dtype is not None else dtype
            assert torch.equal(sb[key], value.to(stored).float()), f"{name}: {component}.{key} differs"


def open_clip_from_file(path, folder):
    """The SDXL OpenCLIP encoder converted by diffusers' own `convert_open_clip_checkpoint`. `from_single_file` picks
    its CLIP converter by comparing widths, and the tiny fixture's two encoders are equally wide, so it would load the
    first encoder's weights into the second; real SDXL (768 vs 1280) never hits that."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from safetensors.torch import load_file
    from transformers import CLIPTextModelWithProjection
    model = CLIPTextModelWithProjection.from_pretrained(os.path.join(folder, "text_encoder_2"), torch_dtype=torch.float32)
    converted = convert_open_clip_checkpoint(model, load_file(path), prefix="conditioner.embedders.1.model.")
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    return model


def images(pipe, settings=SETTINGS):
    """Final latents and the 8-bit HWC image of one Euler generation with `settings` (the tests' request)."""
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    common = dict(prompt=settings["prompt"], negative_prompt=settings["negative_prompt"],
                  num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                  width=settings["width"], height=settings["height"])
    latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(settings["seed"]), output_type="latent").images
    image = pipe(**common, generator=torch.Generator("cpu").manual_seed(settings["seed"]), output_type="np").images[0]
    return np.ascontiguousarray(latents.float().numpy()), np.ascontiguousarray((image * 255).round().astype(np.uint8))


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(OUT, exist_ok=True)
    cases = [("tiny-sd15", "tiny-sd15", StableDiffusionPipeline, torch.float16, None),
             ("tiny-sd15-fp8", "tiny-sd15", StableDiffusionPipeline, torch.float16, torch.float8_e4m3fn),
             ("tiny-sdxl", "tiny-sdxl", StableDiffusionXLPipeline, torch.bfloat16, None)]
    tensors = {}
    for name, folder, cls, dtype, unet_dtype in cases:
        source = cls.from_pretrained(os.path.join(FIXTURES, folder), torch_dtype=torch.float32)
        path = os.path.join(OUT, name + ".safetensors")
        write(checkpoint(source, cls is StableDiffusionXLPipeline), path, dtype, unet_dtype)
        extra = {}
        if cls is StableDiffusionXLPipeline:
            extra["text_encoder_2"] = open_clip_from_file(path, os.path.join(FIXTURES, folder))
        loaded = cls.from_single_file(path, config=os.path.join(FIXTURES, folder), torch_dtype=torch.float32,
                                      local_files_only=True, **extra)
        check_round_trip(source, loaded, name, dtype, unet_dtype)
        latents, image = images(loaded)
        tensors[f"{name}.latents"] = latents
        tensors[f"{name}.image"] = image
        print(f"{name}: {os.path.getsize(path)} bytes, image mean {image.mean():.2f}")
    metadata = {k: str(v) for k, v in SETTINGS.items()}
    save_numpy(tensors, os.path.join(FIXTURES, "reference", "single_file.safetensors"), metadata=metadata)


if __name__ == "__main__":
    main()
