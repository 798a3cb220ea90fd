"""Image-to-image references: diffusers' StableDiffusionImg2ImgPipeline on the tiny SD1.x fixture (every scheduler)
and StableDiffusionXLImg2ImgPipeline on the tiny SDXL fixture (Euler), FP32, CPU.

Writes Tests/Fixtures/img2img/init.png (a 64×64 RGB test picture drawn here) and
Tests/Fixtures/reference/img2img.safetensors: `<scheduler>.latents` (F32, final latents) and `<scheduler>.image`
(U8 HWC) per scheduler (`sdxl-euler.*` for SDXL), with the settings (prompt, strength, steps, seed, ...) in the metadata.
"""
import os

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

from pipeline import SCHEDULERS

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")

SETTINGS = dict(prompt="a blue square on a white background", negative_prompt="blurry", steps=5, guidance=5.0,
                seed=4321, strength=0.6)


def init_image():
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, np.full_like(x, 200)], axis=-1).astype(np.uint8)
    rgb[16:40, 20:44] = [230, 40, 30]  # a red square
    rgb[((x - 44) ** 2 + (y - 44) ** 2) < 100] = [20, 30, 220]  # a blue disc
    return Image.fromarray(rgb, "RGB")


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(os.path.join(FIXTURES, "img2img"), exist_ok=True)
    path = os.path.join(FIXTURES, "img2img", "init.png")
    init_image().save(path)
    image = Image.open(path).convert("RGB")
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sd15"), torch_dtype=torch.float32,
                                                          safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    tensors = {}
    for name, make in SCHEDULERS.items():
        pipe.scheduler = make(pipe.scheduler.config)
        common = dict(prompt=SETTINGS["prompt"], negative_prompt=SETTINGS["negative_prompt"], image=image,
                      strength=SETTINGS["strength"], num_inference_steps=SETTINGS["steps"],
                      guidance_scale=SETTINGS["guidance"])
        latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]), output_type="latent").images
        out = pipe(**common, generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]), output_type="np").images[0]
        tensors[f"{name}.latents"] = np.ascontiguousarray(latents.float().numpy())  # may be a channels-last view
        tensors[f"{name}.image"] = np.ascontiguousarray((out * 255).round().astype(np.uint8))
    # SDXL: StableDiffusionXLImg2ImgPipeline on the tiny SDXL fixture (Euler; the same strength, steps and seed)
    xl = StableDiffusionXLImg2ImgPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl"), torch_dtype=torch.float32)
    xl.set_progress_bar_config(disable=True)
    xl.scheduler = SCHEDULERS["euler"](xl.scheduler.config)
    common = dict(prompt=SETTINGS["prompt"], negative_prompt=SETTINGS["negative_prompt"], image=image,
                  strength=SETTINGS["strength"], num_inference_steps=SETTINGS["steps"], guidance_scale=SETTINGS["guidance"])
    latents = xl(**common, generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]), output_type="latent").images
    out = xl(**common, generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]), output_type="np").images[0]
    tensors["sdxl-euler.latents"] = np.ascontiguousarray(latents.float().numpy())
    tensors["sdxl-euler.image"] = np.ascontiguousarray((out * 255).round().astype(np.uint8))
    save_file(tensors, os.path.join(FIXTURES, "reference", "img2img.safetensors"),
              metadata={k: str(v) for k, v in SETTINGS.items()})


if __name__ == "__main__":
    main()
