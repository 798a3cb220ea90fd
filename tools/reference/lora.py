"""LoRA references: kohya-layout LoRA files for the tiny fixtures, and the images diffusers makes after
`load_lora_weights` + `fuse_lora(lora_scale=WEIGHT)` (needs `peft`).

  Tests/Fixtures/lora/tiny-sd15-kohya.safetensors  `lora_unet_<diffusers module>` (attention, feed-forward, the
                                                   1×1 proj_in conv, a 3×3 LoCon resnet conv) + `lora_te_…`, alpha
  Tests/Fixtures/lora/tiny-sdxl-kohya.safetensors  SDXL trainers' LDM numbering (`lora_unet_input_blocks_4_1_…`,
                                                   `output_blocks`, `middle_block`) + `lora_te1_…` / `lora_te2_…`
  Tests/Fixtures/lora/tiny-sd15-peft.safetensors   the diffusers/PEFT layout (`unet.<module>.lora_A/lora_B.weight`),
                                                   no alpha

Reference: Tests/Fixtures/reference/lora.safetensors, `<name>.latents` / `<name>.image` (Euler), settings in metadata.
"""
import os

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from single_file import images as euler_images, unet_prefix_map

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")
SETTINGS = dict(prompt="a small red circle above a large blue square", negative_prompt="blurry", steps=4, guidance=5.0,
                seed=99, width=64, height=64, weight=0.8)
RANK, ALPHA = 4, 2.0


def lora_pair(g, out_features, in_shape):
    """down [r, in, (kh, kw)] and up [out, r, (1, 1)], large enough to change the image visibly."""
    down = 0.3 * torch.randn((RANK,) + tuple(in_shape), generator=g)
    up = 0.3 * torch.randn((out_features, RANK) + ((1, 1) if len(in_shape) == 3 else ()), generator=g)
    return down.half(), up.half()


def add(sd, g, stem, weight):
    down, up = lora_pair(g, weight.shape[0], weight.shape[1:])
    sd[stem + ".lora_down.weight"], sd[stem + ".lora_up.weight"] = down, up
    sd[stem + ".alpha"] = torch.tensor(ALPHA)


def ldm_module(name, config):
    """diffusers UNet module path → LDM path (as SDXL kohya files name modules)."""
    for d, l in sorted(unet_prefix_map(config).items(), key=lambda kv: -len(kv[0])):
        if (name + ".").startswith(d):
            rest = (name + ".")[len(d):].rstrip(".")
            for a, b in [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                         ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]:
                if ".resnets." in d and rest.startswith(a):
                    rest = b + rest[len(a):]
            return (l + rest).rstrip(".")
    raise SystemExit(f"no LDM name for {name}")


def make_lora(pipe, xl, path):
    g = torch.Generator().manual_seed(7)
    sd = {}
    unet = dict(pipe.unet.named_modules())
    picks = [n for n in unet if n.endswith(("attn1.to_q", "attn2.to_k", "attn1.to_out.0", "ff.net.0.proj", "proj_in"))]
    picks += [n for n in unet if n.endswith("resnets.0.conv1")][:2]
    for name in picks:
        module_name = ldm_module(name, pipe.unet.config) if xl else name
        add(sd, g, "lora_unet_" + module_name.replace(".", "_"), unet[name].weight)
    encoders = [("lora_te1_" if xl else "lora_te_", pipe.text_encoder)] + ([("lora_te2_", pipe.text_encoder_2)] if xl else [])
    for prefix, encoder in encoders:
        for name, module in encoder.named_modules():
            # attention projections are left out: this diffusers/transformers pair drops text-encoder LoRA on them
            if name.endswith(("mlp.fc1", "mlp.fc2")):
                full = name if name.startswith("text_model.") else "text_model." + name
                add(sd, g, prefix + full.replace(".", "_"), module.weight)
    save_file(sd, path)


def make_peft_lora(pipe, path):
    """The diffusers/PEFT layout: `unet.<module>.lora_A.weight` / `.lora_B.weight`, no alpha."""
    g = torch.Generator().manual_seed(8)
    sd = {}
    unet = dict(pipe.unet.named_modules())
    for name in [n for n in unet if n.endswith(("attn2.to_v", "ff.net.2", "proj_out"))]:
        down, up = lora_pair(g, unet[name].weight.shape[0], unet[name].weight.shape[1:])
        sd[f"unet.{name}.lora_A.weight"], sd[f"unet.{name}.lora_B.weight"] = down, up
    # (text-encoder modules are left out: this diffusers/transformers pair cannot load PEFT-layout text-encoder LoRA)
    save_file(sd, path)


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(os.path.join(FIXTURES, "lora"), exist_ok=True)
    tensors = {}
    for name, folder, cls in [("tiny-sd15-kohya", "tiny-sd15", StableDiffusionPipeline),
                              ("tiny-sdxl-kohya", "tiny-sdxl", StableDiffusionXLPipeline),
                              ("tiny-sd15-peft", "tiny-sd15", StableDiffusionPipeline)]:
        pipe = cls.from_pretrained(os.path.join(FIXTURES, folder), torch_dtype=torch.float32)
        path = os.path.join(FIXTURES, "lora", name + ".safetensors")
        if name.endswith("peft"):
            make_peft_lora(pipe, path)
        else:
            make_lora(pipe, cls is StableDiffusionXLPipeline, path)
        before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if cls is StableDiffusionXLPipeline else [])
        text_before = [{k: v.clone() for k, v in e.state_dict().items()} for e in encoders]
        pipe.load_lora_weights(path, adapter_name="test")
        pipe.fuse_lora(lora_scale=SETTINGS["weight"])
        pipe.unload_lora_weights()
        changed = sum(not torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items() if k in before)
        print(f"{name}: {changed} UNet tensors changed by the fused LoRA")
        assert changed > 0
        for e, b in zip(encoders, text_before):
            text_changed = sum(not torch.equal(b[k], v) for k, v in e.state_dict().items() if k in b)
            print(f"{name}: {text_changed} text encoder tensors changed")
            assert text_changed == (0 if name.endswith("peft") else 6), "every LoRA module of the text encoder must be fused"
        tensors[f"{name}.latents"], tensors[f"{name}.image"] = euler_images(pipe, SETTINGS)
    save_numpy(tensors, os.path.join(FIXTURES, "reference", "lora.safetensors"), metadata={k: str(v) for k, v in SETTINGS.items()})


if __name__ == "__main__":
    main()
