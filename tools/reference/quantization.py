"""Reference data for Diffuse8's quantization number formats, fake-quantized layers, image metrics and
the calibration recipe formulas.

Writes Tests/Fixtures/reference/quant_formats.safetensors:
  fp8_input [N] F32 edge values (subnormals, ties, ±448, just above 448, NaN, ±0, ±inf);
  fp8_codes [N] U8 = torch.clamp(x, -448, 448).to(torch.float8_e4m3fn) bytes; fp8_decoded [N] F32;
  int8_input [M] F32 with scale int8_scale; int8_codes [M] I8 = clamp(round(x/scale), -128, 127).
Writes Tests/Fixtures/reference/quant_layers.safetensors: one Linear and one Conv2d with INT8 and FP8
fake-quant (per-output-channel INT8 / per-tensor FP8 weights, per-tensor activations), SmoothQuant scales.
Writes Tests/Fixtures/reference/quant_ssim.safetensors: two small RGB images and skimage-style metrics.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "reference")


def fp8_codes(x):
    return torch.clamp(x, -448, 448).to(torch.float8_e4m3fn).view(torch.uint8)


def fake_int8(x, scale):
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


def fake_fp8(x, scale):
    return torch.clamp(x / scale, -448, 448).to(torch.float8_e4m3fn).to(torch.float32) * scale


def weight_int8_per_channel(w):
    amax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    shape = [-1] + [1] * (w.dim() - 1)
    return fake_int8(w, scale.reshape(shape)), scale


def weight_fp8_per_tensor(w):
    amax = w.abs().max()
    scale = amax / 448
    return fake_fp8(w, scale), scale.reshape(1)


def formats():
    sub = 2.0 ** -9
    values = [0.0, -0.0, sub, -sub, sub / 2, sub / 2 * 1.0001, sub * 1.5, sub * 2.5, sub * 3.5, sub * 7.5,
              2.0 ** -6, 2.0 ** -6 * 1.0625, 2.0 ** -6 * 1.0626, 2.0 ** -7, 2.0 ** -10, 2.0 ** -11,
              1.0, 1.0625, 1.1875, 1.0624, 1.0626, 3.14159, -2.71828, 240.0, 256.0, 272.0, 416.0, 432.0,
              440.0, 447.9, 448.0, 449.0, 464.0, 480.0, 1000.0, -448.0, -449.0, -1e9, float("inf"),
              float("-inf"), float("nan"), 1e-30, -1e-30, 0.3, -0.3, 17.0, 19.0, 23.0]
    rng = np.random.default_rng(0)
    values += list(rng.standard_normal(64).astype(np.float32) * 30)
    x = torch.tensor(values, dtype=torch.float32)
    codes = fp8_codes(x)
    decoded = codes.view(torch.float8_e4m3fn).to(torch.float32)
    scale = torch.tensor([0.5], dtype=torch.float32)
    i_values = [0.25, 0.75, -0.25, -0.75, 1.25, 0.5 * 2.5, -0.5 * 2.5, 63.25, 63.75, 64.0, -64.0, -64.25,
                -70.0, 70.0, 0.0, -0.0, 1e-8, 3.0]
    i_values += list(rng.standard_normal(32).astype(np.float32) * 40)
    xi = torch.tensor(i_values, dtype=torch.float32)
    icodes = torch.clamp(torch.round(xi / scale), -128, 127).to(torch.int8)
    save_file({"fp8_input": x, "fp8_codes": codes.contiguous(), "fp8_decoded": decoded,
               "int8_input": xi, "int8_scale": scale, "int8_codes": icodes},
              os.path.join(OUT, "quant_formats.safetensors"), metadata={"source": "tools/reference/quantization.py"})


def layers():
    g = torch.Generator().manual_seed(7)
    lw = torch.randn(12, 16, generator=g) * 0.2
    lw[:, 3] *= 8  # an outlier weight column
    lb = torch.randn(12, generator=g) * 0.1
    lx = torch.randn(2, 5, 16, generator=g)
    lx[..., 5] *= 20  # an outlier activation channel (what SmoothQuant is for)
    cw = torch.randn(6, 4, 3, 3, generator=g) * 0.3
    cb = torch.randn(6, generator=g) * 0.1
    cx = torch.randn(2, 4, 5, 5, generator=g) * 2
    cx[0, 1, 2, 2] = 25.0
    t = {"linear_weight": lw, "linear_bias": lb, "linear_input": lx,
         "conv_weight": cw, "conv_bias": cb, "conv_input": cx}
    x_amax = 9.0  # a calibrated (clipping) activation amax, smaller than the true max
    c_amax = 6.0
    t["linear_act_amax"] = torch.tensor([x_amax])
    t["conv_act_amax"] = torch.tensor([c_amax])
    for fmt in ("int8", "fp8"):
        fq = fake_int8 if fmt == "int8" else fake_fp8
        wq, ws = weight_int8_per_channel(lw) if fmt == "int8" else weight_fp8_per_tensor(lw)
        t[f"linear_{fmt}_weight_scale"] = ws
        a_scale = torch.tensor(x_amax / (127 if fmt == "int8" else 448))
        t[f"linear_{fmt}_output"] = torch.nn.functional.linear(fq(lx, a_scale), wq, lb)
        cq, cs = weight_int8_per_channel(cw) if fmt == "int8" else weight_fp8_per_tensor(cw)
        t[f"conv_{fmt}_weight_scale"] = cs
        a_scale = torch.tensor(c_amax / (127 if fmt == "int8" else 448))
        t[f"conv_{fmt}_output"] = torch.nn.functional.conv2d(fq(cx, a_scale), cq, cb, padding=1)
    # SmoothQuant, alpha 0.8: s_j = max|W[:,j]|^(1-a) / max|X_j|^a, clamp [1e-4, 1e4]; x * s, W / s
    # (ModelOpt's pre_quant_scale; the same as the paper's X / s', W * s' with s' = 1 / s)
    alpha = 0.8
    w_col = lw.abs().amax(dim=0)
    x_ch = lx.abs().reshape(-1, 16).amax(dim=0)
    s = (w_col.pow(1 - alpha) / x_ch.pow(alpha)).clamp(1e-4, 1e4)
    t["smooth_scales_0.8"] = s
    ws_ = lw / s.reshape(1, -1)
    xs = lx * s
    wq, _ = weight_int8_per_channel(ws_)
    amax = (x_ch * s).max()
    t["linear_int8_smooth_output"] = torch.nn.functional.linear(fake_int8(xs, amax / 127), wq, lb)
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "quant_layers.safetensors"),
              metadata={"source": "tools/reference/quantization.py"})


def metrics():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
    a = (a.astype(np.float64) * 0.5 + np.linspace(0, 120, 20)[None, :, None]).clip(0, 255).astype(np.uint8)
    b = (a.astype(np.int32) + rng.integers(-20, 21, size=a.shape)).clip(0, 255).astype(np.uint8)
    luma = lambda im: (0.299 * im[..., 0] + 0.587 * im[..., 1] + 0.114 * im[..., 2])
    psnr = peak_signal_noise_ratio(a, b, data_range=255)
    ssim = structural_similarity(luma(a), luma(b), data_range=255.0, win_size=7)
    save_file({"a": torch.tensor(a).float(), "b": torch.tensor(b).float(),
               "psnr_rgb": torch.tensor([psnr]).float(), "ssim_luma": torch.tensor([ssim]).float()},
              os.path.join(OUT, "quant_metrics.safetensors"), metadata={"source": "tools/reference/quantization.py"})


def main():
    os.makedirs(OUT, exist_ok=True)
    formats()
    layers()
    try:
        metrics()
    except ImportError as error:  # skimage is optional; the committed fixture stays
        print("skipping quant_metrics (needs scikit-image):", error)


if __name__ == "__main__":
    main()
