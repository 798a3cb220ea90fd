#!/usr/bin/env python3
"""A training-free red-to-blue LoRA for comparison with the trained example (models/examples/red-to-blue.safetensors
is made by tools/train_colour_lora.py): a rank-4 LoRA (kohya layout) for the default model that draws blue where the
prompt says red, by a closed-form edit of every cross-attention key and value projection:

    ΔW = W · M_r,   M = (B − R)·Rᵀ·(R·Rᵀ + λ·I)⁻¹ cut to rank r by SVD, scale 1

with R / B the text encoder's output states (every token) of a few prompt templates with "red" / "blue" filled in:
keys and values computed from a red prompt's states become those of the blue prompt. The ridge term λ (1 % of the
largest eigenvalue of R·Rᵀ) keeps the map to the directions the text states really use: a plain pseudo-inverse gives
the weak directions gains of hundreds, so the update grows to several times the layer's own weight and amplifies any
small perturbation of the network (quantization noise included) without drawing bluer shapes. At weight 1 the edit
reaches blue and stops there (no extrapolation past it), which keeps the model on the images it knows.
Usage: python tools/colour_lora.py [OUT]  (default .build-colour-lora/red-to-blue-closed-form.safetensors; needs torch,
transformers, safetensors)
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "models", "default")


TEMPLATES = ["a large {} circle", "a small {} square on a white background", "a large {} triangle left of a small green circle",
             "a small {} circle above a large blue square on a gray background"]
RANK = 4
RIDGE = 1e-2  # λ relative to the largest eigenvalue of R·Rᵀ


def states(model, tokenizer, word):
    """[width, 77·templates]: every token's output state for the templates with `word` filled in."""
    prompts = [t.format(word) for t in TEMPLATES]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state.double().reshape(-1, model.config.hidden_size).T


def main():
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
    text = CLIPTextModel.from_pretrained(os.path.join(MODEL, "text_encoder"), torch_dtype=torch.float32).eval()
    red, blue = states(text, tokenizer, "red"), states(text, tokenizer, "blue")
    # the ridge least-squares map M with M·red ≈ blue − red (every token, every template), cut to rank RANK
    gram = red @ red.T
    ridge = RIDGE * torch.linalg.eigvalsh(gram).max()
    m = (blue - red) @ red.T @ torch.linalg.inv(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype))
    u, sigma, vt = torch.linalg.svd(m)
    down = (sigma[:RANK].sqrt().unsqueeze(1) * vt[:RANK])      # [r, width]
    up_text = u[:, :RANK] * sigma[:RANK].sqrt().unsqueeze(0)    # [width, r]
    unet = load_file(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"))
    lora = {}
    for key, weight in sorted(unet.items()):
        if not (".attn2.to_k.weight" in key or ".attn2.to_v.weight" in key):
            continue
        w = weight.double()
        stem = "lora_unet_" + key[: -len(".weight")].replace(".", "_")
        lora[stem + ".lora_up.weight"] = (w @ up_text).float().contiguous()
        lora[stem + ".lora_down.weight"] = down.float().contiguous()
        lora[stem + ".alpha"] = torch.tensor(float(RANK))  # scale 1: weight 1 draws blue
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build-colour-lora", "red-to-blue-closed-form.safetensors")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(lora, out, metadata={"description": "rank-4 closed-form edit: red -> blue (tools/colour_lora.py)"})
    print(f"{out}: {len(lora) // 3} modules")


if __name__ == "__main__":
    main()
