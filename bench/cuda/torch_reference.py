"""PyTorch FP16 reference timings for the shapes CUDABenchmark measures (same card, same call).

Run: python bench/cuda/torch_reference.py   (needs torch with CUDA)
Times are medians of CUDA-event-timed runs after warm-up, like CUDABenchmark.time.
Attention uses F.scaled_dot_product_attention on [B, H, L, D] views of [B, L, H*D] tensors, as diffusers does.
"""
import torch
import torch.nn.functional as F


def median_ms(fn, warmup=3, repeats=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop))
    samples.sort()
    return samples[len(samples) // 2]


def main():
    torch.manual_seed(0)
    dev, h = "cuda", torch.float16
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    gemms = [("GEMM 8192³", 8192, 8192, 8192), ("SD1.5 FF in (GEGLU)", 8192, 320, 2560),
             ("SD1.5 proj 320→1280", 8192, 320, 1280), ("SD1.5 qkv 320→320", 8192, 320, 320),
             ("SD1.5 FF out 1280→320", 8192, 1280, 320), ("SDXL FF in 1280→10240", 2048, 1280, 10240),
             ("SDXL FF out 5120→1280", 2048, 5120, 1280)]
    for name, m, k, n in gemms:
        x = torch.randn(m, k, device=dev, dtype=h)
        w = torch.randn(n, k, device=dev, dtype=h) * 0.05
        b = torch.randn(n, device=dev, dtype=h)
        if name.startswith("GEMM"):
            ms = median_ms(lambda: torch.matmul(x, w.t()))
        else:
            name += " +bias"
            ms = median_ms(lambda: F.linear(x, w, b))
        rows.append((name, f"M{m} K{k} N{n}", ms, 2 * m * n * k / ms / 1e9, "TFLOP/s"))
    attn = [("SD1.5 self-attn", 2, 8, 4096, 4096, 40), ("SD1.5 cross-attn", 2, 8, 4096, 77, 40),
            ("SD1.5 self-attn 32²", 2, 8, 1024, 1024, 80), ("SDXL self-attn 64²", 2, 10, 4096, 4096, 64),
            ("SDXL self-attn 32²", 2, 20, 1024, 1024, 64), ("SDXL cross-attn 64²", 2, 10, 4096, 77, 64)]
    for name, bsz, heads, lq, lk, d in attn:
        q = torch.randn(bsz, lq, heads * d, device=dev, dtype=h).view(bsz, lq, heads, d).transpose(1, 2)
        k = torch.randn(bsz, lk, heads * d, device=dev, dtype=h).view(bsz, lk, heads, d).transpose(1, 2)
        v = torch.randn(bsz, lk, heads * d, device=dev, dtype=h).view(bsz, lk, heads, d).transpose(1, 2)
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        rows.append((name, f"B{bsz} H{heads} Lq{lq} Lk{lk} D{d}", ms, 4 * bsz * heads * lq * lk * d / ms / 1e9, "TFLOP/s"))
    x = torch.randn(2, 320, 64, 64, device=dev, dtype=h)
    gn = torch.nn.GroupNorm(32, 320).to(dev, h)
    ms = median_ms(lambda: F.silu(gn(x)))
    rows.append(("groupNorm+SiLU (2 ops)", "[2,320,64,64]", ms, 2 * x.numel() * 2 / ms / 1e6, "GB/s"))
    xv = torch.randn(1, 128, 512, 512, device=dev, dtype=h)
    gnv = torch.nn.GroupNorm(32, 128, eps=1e-6).to(dev, h)
    ms = median_ms(lambda: F.silu(gnv(xv)))
    rows.append(("groupNorm+SiLU (2 ops)", "[1,128,512,512]", ms, 2 * xv.numel() * 2 / ms / 1e6, "GB/s"))
    for c, size in [(320, 64), (640, 32), (1280, 16)]:
        xc = torch.randn(2, c, size, size, device=dev, dtype=h)
        conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dev, h)
        ms = median_ms(lambda: conv(xc))
        rows.append(("conv2d 3x3 (cuDNN)", f"[2,{c},{size},{size}]→{c}", ms,
                     2 * 2 * size * size * c * c * 9 / ms / 1e9, "TFLOP/s"))
    t = torch.randn(2, 4096, 320, device=dev, dtype=h)
    ln = torch.nn.LayerNorm(320).to(dev, h)
    ms = median_ms(lambda: ln(t))
    rows.append(("layerNorm", "[2,4096,320]", ms, 2 * t.numel() * 2 / ms / 1e6, "GB/s"))
    wide = torch.randn(2, 4096, 2560, device=dev, dtype=h)

    def geglu():
        a, g = wide.chunk(2, dim=-1)
        return a * F.gelu(g)
    ms = median_ms(geglu)
    rows.append(("geglu", "[2,4096,2560]", ms, 1.5 * wide.numel() * 2 / ms / 1e6, "GB/s"))
    ms = median_ms(lambda: x.permute(0, 2, 3, 1).reshape(2, 4096, 320).contiguous())
    rows.append(("channelsToTokens", "[2,320,64,64]", ms, 2 * x.numel() * 2 / ms / 1e6, "GB/s"))
    print(f"{'torch':30}{'shape':30}{'ms':10}rate")
    for name, shape, ms, rate, unit in rows:
        print(f"{name:30}{shape:30}{ms:<10.4f}{rate:.1f} {unit}")


if __name__ == "__main__":
    main()
