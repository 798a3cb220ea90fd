"""Records whole-pipeline references: final latents and the decoded 8-bit image, per scheduler, for each tiny
fixture pipeline, with a fixed prompt, negative prompt, seed and step count (diffusers on CPU, FP32).

Output: Tests/Fixtures/reference/pipeline_<family>.safetensors with tensors `<scheduler>.latents` (F32,
before VAE scaling), `<scheduler>.image` (U8, HWC) and the settings in `__metadata__`.
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")

# Swift names (SchedulerKind raw values) → how diffusers builds the same scheduler from the folder's config.
SCHEDULERS = {
    "euler": lambda c: EulerDiscreteScheduler.from_config(c),
    "euler-a": lambda c: EulerAncestralDiscreteScheduler.from_config(c),
    "ddim": lambda c: DDIMScheduler.from_config(c),
    "dpm++2m": lambda c: DPMSolverMultistepScheduler.from_config(c),
    "dpm++2m-karras": lambda c: DPMSolverMultistepScheduler.from_config(c, use_karras_sigmas=True),
}

SETTINGS = dict(prompt="a small red circle above a large blue square, on a white background!",
                negative_prompt="blurry", steps=6, guidance=5.0, seed=1234, width=64, height=64)


def run(family, cls, folder):
    pipe = cls.from_pretrained(os.path.join(FIXTURES, folder), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    tensors = {}
    for name, make in SCHEDULERS.items():
        pipe.scheduler = make(pipe.scheduler.config)
        common = dict(prompt=SETTINGS["prompt"], negative_prompt=SETTINGS["negative_prompt"],
                      num_inference_steps=SETTINGS["steps"], guidance_scale=SETTINGS["guidance"],
                      width=SETTINGS["width"], height=SETTINGS["height"])
        latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]),
                       output_type="latent").images
        image = pipe(**common, generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]),
                     output_type="np").images[0]
        tensors[f"{name}.latents"] = latents.float().numpy()
        # ascontiguousarray: the pipeline returns a permuted view, which safetensors.numpy would store in memory order
        tensors[f"{name}.image"] = np.ascontiguousarray((image * 255).round().astype(np.uint8))
    metadata = {k: str(v) for k, v in SETTINGS.items()}
    metadata["family"] = family
    os.makedirs(os.path.join(FIXTURES, "reference"), exist_ok=True)
    save_file(tensors, os.path.join(FIXTURES, "reference", f"pipeline_{family}.safetensors"), metadata=metadata)


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    run("sd15", StableDiffusionPipeline, "tiny-sd15")
    run("sdxl", StableDiffusionXLPipeline, "tiny-sdxl")


if __name__ == "__main__":
    main()
