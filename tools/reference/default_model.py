"""Records the embedded default model's output in diffusers (CPU, FP32) for the Swift parity test
(`DefaultModelTests`): the first 2 prompts of training/heldout_prompts.txt, seeds 0 and 1, Euler (from the
model's scheduler config), CFG 5, 8 steps (few, so the debug-build test stays quick), no negative prompt.

Output: Tests/Fixtures/reference/default_model.safetensors with, for case k = 2 * prompt + seed,
`case<k>.latents` (F32 [1, 4, 8, 8], before VAE scaling) and `case<k>.image` (U8 [64, 64, 3], HWC), and the
prompts/seeds/settings in `__metadata__`.
"""
import json
import os

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "reference", "default_model.safetensors")

STEPS, GUIDANCE, SEEDS = 8, 5.0, [0, 1]


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with open(os.path.join(ROOT, "training", "heldout_prompts.txt")) as f:
        prompts = [line.strip() for line in f if line.strip()][:2]
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(ROOT, "models", "default"), torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    tensors, cases = {}, []
    for prompt in prompts:
        for seed in SEEDS:
            k = len(cases)
            common = dict(prompt=prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE)
            latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
            image = pipe(**common, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
            tensors[f"case{k}.latents"] = np.ascontiguousarray(latents.float().numpy())
            # ascontiguousarray: the pipeline returns a permuted view, which safetensors.numpy would store in memory order
            tensors[f"case{k}.image"] = np.ascontiguousarray((image * 255).round().astype(np.uint8))
            cases.append({"prompt": prompt, "seed": seed})
    metadata = {"cases": json.dumps(cases), "steps": str(STEPS), "guidance": str(GUIDANCE), "scheduler": "euler"}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata=metadata)


if __name__ == "__main__":
    main()
