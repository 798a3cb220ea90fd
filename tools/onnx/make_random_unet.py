#!/usr/bin/env python3
"""Writes a UNet folder (config.json + diffusion_pytorch_model.safetensors) with random weights for a diffusers
UNet2DConditionModel config, e.g. the SDXL architecture, without torch or diffusers: the state-dict names and
shapes follow diffusers' module layout (down/mid/up blocks, resnets, Transformer2DModel, SDXL add_embedding).

    make_random_unet.py CONFIG.json OUT_FOLDER [--dtype f16|f32] [--seed N]

Tensors are generated and written one at a time (bounded memory). Weights ~ N(0, 1/fan_in), norms γ = 1, β = 0,
biases N(0, 0.01²): activations stay in range through the network, which is all an export/size measurement needs.
"""
import json
import os
import struct
import sys

import numpy as np


def state_dict_shapes(c):
    s = {}
    boc = c["block_out_channels"]
    layers = c["layers_per_block"]
    tlpb = c.get("transformer_layers_per_block", 1)
    n = len(boc)
    tlpb = tlpb if isinstance(tlpb, list) else [tlpb] * n
    cross = c["cross_attention_dim"]
    linear_proj = c.get("use_linear_projection", False)
    temb = c.get("time_embedding_dim") or boc[0] * 4

    def lin(p, o, i, bias=True):
        s[p + ".weight"] = (o, i)
        if bias:
            s[p + ".bias"] = (o,)

    def conv(p, o, i, k):
        s[p + ".weight"] = (o, i, k, k)
        s[p + ".bias"] = (o,)

    def norm(p, ch):
        s[p + ".weight"] = (ch,)
        s[p + ".bias"] = (ch,)

    def resnet(p, i, o):
        norm(p + ".norm1", i)
        conv(p + ".conv1", o, i, 3)
        lin(p + ".time_emb_proj", o, temb)
        norm(p + ".norm2", o)
        conv(p + ".conv2", o, o, 3)
        if i != o:
            conv(p + ".conv_shortcut", o, i, 1)

    def transformer(p, ch, depth):
        norm(p + ".norm", ch)
        (lin if linear_proj else (lambda q, o, i: conv(q, o, i, 1)))(p + ".proj_in", ch, ch)
        for d in range(depth):
            b = f"{p}.transformer_blocks.{d}"
            for k in ("norm1", "norm2", "norm3"):
                norm(f"{b}.{k}", ch)
            for a, ctx in (("attn1", ch), ("attn2", cross)):
                lin(f"{b}.{a}.to_q", ch, ch, bias=False)
                lin(f"{b}.{a}.to_k", ch, ctx, bias=False)
                lin(f"{b}.{a}.to_v", ch, ctx, bias=False)
                lin(f"{b}.{a}.to_out.0", ch, ch)
            lin(f"{b}.ff.net.0.proj", 8 * ch, ch)
            lin(f"{b}.ff.net.2", ch, 4 * ch)
        (lin if linear_proj else (lambda q, o, i: conv(q, o, i, 1)))(p + ".proj_out", ch, ch)

    lin("time_embedding.linear_1", temb, boc[0])
    lin("time_embedding.linear_2", temb, temb)
    if c.get("addition_embed_type") == "text_time":
        lin("add_embedding.linear_1", temb, c["projection_class_embeddings_input_dim"])
        lin("add_embedding.linear_2", temb, temb)
    conv("conv_in", boc[0], c["in_channels"], 3)
    out = boc[0]
    for i, kind in enumerate(c["down_block_types"]):
        inp, out = out, boc[i]
        for j in range(layers):
            resnet(f"down_blocks.{i}.resnets.{j}", inp if j == 0 else out, out)
            if kind.startswith("CrossAttn"):
                transformer(f"down_blocks.{i}.attentions.{j}", out, tlpb[i])
        if i < n - 1:
            conv(f"down_blocks.{i}.downsamplers.0.conv", out, out, 3)
    resnet("mid_block.resnets.0", boc[-1], boc[-1])
    transformer("mid_block.attentions.0", boc[-1], tlpb[-1])
    resnet("mid_block.resnets.1", boc[-1], boc[-1])
    rev, rev_t = list(reversed(boc)), list(reversed(tlpb))
    out = rev[0]
    for i, kind in enumerate(c["up_block_types"]):
        prev, out, inp = out, rev[i], rev[min(i + 1, n - 1)]
        for j in range(layers + 1):
            skip = inp if j == layers else out
            resnet(f"up_blocks.{i}.resnets.{j}", (prev if j == 0 else out) + skip, out)
            if kind.startswith("CrossAttn"):
                transformer(f"up_blocks.{i}.attentions.{j}", out, rev_t[i])
        if i < n - 1:
            conv(f"up_blocks.{i}.upsamplers.0.conv", out, out, 3)
    norm("conv_norm_out", boc[0])
    conv("conv_out", c["out_channels"], boc[0], 3)
    return s


def main(argv):
    config_path, out = argv[1], argv[2]
    dtype = argv[argv.index("--dtype") + 1] if "--dtype" in argv else "f16"
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    config = json.load(open(config_path))
    shapes = state_dict_shapes(config)
    np_type, st_type = (np.float16, "F16") if dtype == "f16" else (np.float32, "F32")
    size = np.dtype(np_type).itemsize
    header, offset = {}, 0
    for name in sorted(shapes):
        count = int(np.prod(shapes[name]))
        header[name] = {"dtype": st_type, "shape": list(shapes[name]), "data_offsets": [offset, offset + count * size]}
        offset += count * size
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = os.path.join(out, "diffusion_pytorch_model.safetensors")
    with open(path + ".partial", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name in sorted(shapes):
            shape = shapes[name]
            if name.endswith(".weight") and len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                t = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)
            elif name.endswith(".weight"):
                t = np.ones(shape, np.float32)
            elif ".norm" in name or "norm_out" in name:
                t = np.zeros(shape, np.float32)
            else:
                t = rng.standard_normal(shape, dtype=np.float32) * 0.01
            f.write(t.astype(np_type).tobytes())
    os.replace(path + ".partial", path)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{out}: {len(shapes)} tensors, {sum(int(np.prod(v)) for v in shapes.values()) / 1e9:.3f} G parameters ({dtype})")


if __name__ == "__main__":
    main(sys.argv)
