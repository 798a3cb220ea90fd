"""Reference outputs of the fixture AutoencoderKL models (diffusers, FP32).

For tiny-sd15/vae and tiny-sdxl/vae writes Tests/Fixtures/reference/vae_<name>.safetensors:
    latents          [1, 4, 8, 8]   fixed random latents (torch.manual_seed(0)), already divided by scaling_factor
    decoded          [1, 3, 64, 64] vae.decode(latents).sample
    image            [1, 3, 64, 64] fixed random image in [-1, 1] (torch.manual_seed(1))
    latent_mean      [1, 4, 8, 8]   vae.encode(image).latent_dist.mean
    latent_logvar    [1, 4, 8, 8]   vae.encode(image).latent_dist.logvar (clamped to [-30, 20] by diffusers)

Deterministic: fixed seeds; weights come from the committed fixtures.
"""
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures")

VAES = [("sd15", "tiny-sd15/vae"), ("sdxl", "tiny-sdxl/vae")]


def main():
    torch.set_num_threads(1)
    out_dir = os.path.join(ROOT, "reference")
    os.makedirs(out_dir, exist_ok=True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator("cpu").manual_seed(0))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator("cpu").manual_seed(1)) * 2 - 1
    for name, folder in VAES:
        vae = AutoencoderKL.from_pretrained(os.path.join(ROOT, folder), torch_dtype=torch.float32).eval()
        with torch.no_grad():
            decoded = vae.decode(latents).sample
            dist = vae.encode(image).latent_dist
        tensors = {"latents": latents, "decoded": decoded, "image": image,
                   "latent_mean": dist.mean, "latent_logvar": dist.logvar}
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        save_file(tensors, os.path.join(out_dir, f"vae_{name}.safetensors"))
        print(name, {k: (tuple(v.shape), round(v.abs().mean().item(), 4)) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
