"""Reference outputs for the optimised CPU kernels (Tests/Diffuse8Tests/CPUKernelReferenceTests.swift).

Inputs are not stored: both sides build them from the same integer formula (`pattern`), evaluated in
float64 and rounded to float32, so they are bit-identical in Python and Swift. Only the PyTorch FP32
outputs (computed in float64 and rounded, so the reference itself carries no float32 GEMM error) are
written to Tests/Fixtures/reference/cpu_kernels.safetensors. Sizes are chosen to hit every edge of the
SGEMM tiling (M, N, K not multiples of the 6×16 micro-tile, more than one 96-row / 384-column tile and
more than one 256-deep K slice), strided convolutions with padding, 3×3 convolutions with edge tiles for
the Winograd kernel, and attention with Lq ≠ Lk.
"""
import os
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "reference", "cpu_kernels.safetensors")


def pattern(shape, seed, scale=1.0, offset=0.0):
    """value[i] = float32(((i·7919 + seed·104729) mod 2003) / 1001.5 − 1) · scale + offset (float64 math)."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    v = ((i * 7919 + seed * 104729) % 2003).astype(np.float64) / 1001.5 - 1.0
    v = v * scale + offset
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def d(t):
    return t.double()


def main():
    torch.manual_seed(0)
    out = {}
    # Linear (x·wᵀ + b): small odd sizes, then one spanning several tiles and K slices.
    x, w, b = pattern([3, 5, 37], 1), pattern([29, 37], 2, 0.2), pattern([29], 3)
    out["linear_small"] = F.linear(d(x), d(w), d(b))
    x, w, b = pattern([101, 300], 4), pattern([390, 300], 5, 0.1), pattern([390], 6)
    out["linear_tiled"] = F.linear(d(x), d(w), d(b))
    # Convolutions: (name, N, C, O, H, W, k, stride, padding, seed)
    convs = [("conv1x1", 2, 13, 17, 19, 23, 1, 1, 0, 10), ("conv1x1_s2_p1", 2, 13, 17, 9, 11, 1, 2, 1, 11),
             ("conv3x3_s2_p1", 2, 5, 7, 9, 11, 3, 2, 1, 12), ("conv3x3_p0", 1, 6, 5, 8, 7, 3, 1, 0, 13),
             ("conv3x3_tiled", 1, 30, 98, 20, 20, 3, 1, 1, 14)]
    for name, n, c, o, h, wd, k, s, p, seed in convs:
        x = pattern([n, c, h, wd], seed)
        w = pattern([o, c, k, k], seed + 100, 0.3)
        b = pattern([o], seed + 200)
        out[name] = F.conv2d(d(x), d(w), d(b), stride=s, padding=p)
    # 3×3 stride-1 padding-1 convolutions for the Winograd kernel (4×4 output tiles): H, W not multiples of 4,
    # more than 16 tiles per tile row, batch 2, with and without bias. (name, N, C, O, H, W, bias, seed)
    for name, n, c, o, h, wd, has_bias, seed in [("winograd_odd", 2, 19, 21, 13, 11, True, 15),
                                                 ("winograd_wide", 1, 40, 70, 9, 70, True, 16),
                                                 ("winograd_nobias", 2, 7, 5, 6, 5, False, 17),
                                                 ("winograd_small", 1, 3, 2, 1, 2, True, 18)]:
        x = pattern([n, c, h, wd], seed)
        w = pattern([o, c, 3, 3], seed + 100, 0.3)
        b = d(pattern([o], seed + 200)) if has_bias else None
        out[name] = F.conv2d(d(x), d(w), b, stride=1, padding=1)
    # Attention (B, Lq, Lk, heads, head_dim, scale or None, seed)
    for name, bsz, lq, lk, heads, hd, scale, seed in [("attention_cross", 2, 50, 37, 3, 8, None, 20),
                                                      ("attention_long", 1, 130, 300, 2, 16, 0.3, 21),
                                                      ("attention_self", 2, 70, 70, 1, 40, None, 22),
                                                      ("attention_wide", 1, 20, 800, 2, 8, None, 23)]:
        q = pattern([bsz, lq, heads * hd], seed, 2.0)
        k = pattern([bsz, lk, heads * hd], seed + 1, 2.0)
        v = pattern([bsz, lk, heads * hd], seed + 2)
        split = lambda t: d(t).view(bsz, -1, heads, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
        out[name] = o.transpose(1, 2).reshape(bsz, lq, heads * hd)
    # Norms: offset inputs so a one-pass variance would lose precision.
    x = pattern([2, 12, 7, 5], 30, 2.0, 3.0)
    gw, gb = pattern([12], 31, 0.5, 1.0), pattern([12], 32)
    gn = F.group_norm(d(x), 4, d(gw), d(gb), eps=1e-5)
    out["groupnorm"] = gn
    out["groupnorm_silu"] = F.silu(gn)
    x = pattern([3, 7, 45], 33, 2.0, -1.5)
    out["layernorm"] = F.layer_norm(d(x), [45], d(pattern([45], 34, 0.5, 1.0)), d(pattern([45], 35)), eps=1e-5)
    # Element-wise: a wide range including values where exp overflows or underflows.
    x = pattern([1000], 40, 30.0)
    out["silu"] = F.silu(d(x))
    out["gelu"] = F.gelu(d(x))
    out["quick_gelu"] = d(x) * torch.sigmoid(1.702 * d(x))
    g = pattern([2, 5, 74], 41, 4.0)
    a, gate = d(g).chunk(2, dim=-1)
    out["geglu"] = a * F.gelu(gate)
    out["softmax"] = torch.softmax(d(pattern([4, 33], 42, 40.0)), dim=-1)
    out = {k: v.float().contiguous() for k, v in out.items()}
    save_file(out, OUT)
    print(f"wrote {OUT}: {sum(v.numel() for v in out.values())} floats")


if __name__ == "__main__":
    main()
