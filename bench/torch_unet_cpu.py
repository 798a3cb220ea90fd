"""PyTorch CPU FP32 baseline for Diffuse8's UNet benchmark (see bench/README.md).

(a) Builds a full-size SD1.5-architecture UNet2DConditionModel from Tests/Fixtures/configs/sd15-unet-config.json
    with random weights (torch.manual_seed(0)) and saves it once as a diffusers unet folder with FP16
    safetensors (default /tmp/d8-bench/sd15-unet, ~1.7 GB) so Diffuse8 loads the very same weights.
(b) Times the FP32 forward pass (torch.inference_mode, eager): batch 2 (CFG) and batch 1, 4×64×64 latent,
    77×768 context; warm-up runs, then the median of N runs; `torch.set_num_threads(--threads)`, which
    should equal Diffuse8's CPUConfiguration.threadCount. Also times the tiny fixture UNets.
Prints one JSON object.
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIG = "Tests/Fixtures/configs/sd15-unet-config.json"


def make_sd15_unet(folder):
    """Writes the random-weight SD1.5 UNet folder once; returns its path."""
    if os.path.exists(os.path.join(folder, "diffusion_pytorch_model.safetensors")):
        return folder
    with open(CONFIG) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    unet.half().save_pretrained(folder, safe_serialization=True)
    return folder


def inputs(unet, batch, latent):
    """Deterministic inputs: latents and context from torch.randn (seed 1), timestep 500, SDXL time ids."""
    c = unet.config
    g = torch.Generator().manual_seed(1)
    size = latent or c.sample_size
    sample = torch.randn(batch, c.in_channels, size, size, generator=g)
    cross = c.cross_attention_dim if isinstance(c.cross_attention_dim, int) else c.cross_attention_dim[0]
    context = torch.randn(batch, 77, cross, generator=g)
    kwargs = {}
    if c.addition_embed_type == "text_time":
        text_width = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, text_width, generator=g),
            "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]], dtype=torch.float32).repeat(batch, 1)}
    return sample, torch.tensor(500.0), context, kwargs


def time_unet(folder, batch, latent, warmup, iterations, dynamic_int8=False):
    unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    if dynamic_int8:
        # PyTorch's dynamic quantization: nn.Linear weights INT8 per tensor, activations quantized per call.
        unet = torch.ao.quantization.quantize_dynamic(unet, {torch.nn.Linear}, dtype=torch.qint8)
    sample, t, context, kwargs = inputs(unet, batch, latent)
    runs, cpu = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            unet(sample, t, encoder_hidden_states=context, **kwargs)
        for _ in range(iterations):
            start, cpu_start = time.perf_counter(), time.process_time()
            unet(sample, t, encoder_hidden_states=context, **kwargs)
            runs.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - cpu_start) * 1000)
    size = latent or unet.config.sample_size
    return {"model": folder, "batch": batch, "latent": size, "dynamic_int8_linear": dynamic_int8, "median_ms": round(statistics.median(runs), 3),
            "min_ms": round(min(runs), 3), "max_ms": round(max(runs), 3),
            # process CPU time / wall time: ~threads when the machine was free (includes OpenMP spinning)
            "cores_used": round(sum(cpu) / sum(runs), 3), "runs_ms": [round(r, 3) for r in runs]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="/tmp/d8-bench/sd15-unet", help="where the SD1.5 unet folder is (made if absent)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batches", default="2,1", help="comma-separated batch sizes for the SD1.5 UNet")
    parser.add_argument("--make-only", action="store_true", help="only write the SD1.5 unet folder")
    parser.add_argument("--skip-sd15", action="store_true", help="only time the tiny fixture UNets")
    parser.add_argument("--skip-tiny", action="store_true", help="do not time the tiny fixture UNets")
    parser.add_argument("--quantize-dynamic", action="store_true",
                        help="also time torch.ao.quantization.quantize_dynamic (INT8 nn.Linear) of the SD1.5 UNet")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = make_sd15_unet(args.folder)
    if args.make_only:
        print(json.dumps({"folder": folder}))
        return
    results = []
    for name in [] if args.skip_tiny else ["tiny-sd15", "tiny-sdxl"]:
        results.append(time_unet(os.path.join(REPO, "Tests", "Fixtures", name, "unet"), 2, None, 2, max(args.iterations, 10)))
    if not args.skip_sd15:
        for batch in [int(b) for b in args.batches.split(",")]:
            results.append(time_unet(folder, batch, 64, args.warmup, args.iterations))
            if args.quantize_dynamic:
                results.append(time_unet(folder, batch, 64, args.warmup, args.iterations, dynamic_int8=True))
    print(json.dumps({"framework": f"torch {torch.__version__} CPU FP32 eager", "threads": torch.get_num_threads(),
                      "cpu": platform.processor() or platform.machine(),
                      "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
