"""Peer for the default-model benchmark: one 30-step Euler image with diffusers on the CPU (FP32), the same
settings as `diffuse8 generate` (docs/PERFORMANCE.md, "Default model: one image on the CPU").

    python bench/default_model_diffusers.py [THREADS]
"""
import os
import sys

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "default")
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None)
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
image = pipe("a large red circle above a small blue square on a white background", num_inference_steps=30,
             guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(0)).images[0]
image.save("/tmp/d8-bench-diffusers.png")
