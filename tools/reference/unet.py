"""Reference outputs of diffusers' UNet2DConditionModel for the tiny fixture UNets.

For each of tiny-sd15/unet and tiny-sdxl/unet (loaded in FP32) this runs one forward pass on fixed random
inputs and writes inputs + output as F32 to Tests/Fixtures/reference/unet_<layout>.safetensors:

  sample [2,4,8,8], timesteps [2] (999, 500), encoder_hidden_states [2,77,cross_attention_dim], out [2,4,8,8]
  SDXL only: text_embeds [2,32], time_ids [2,6] (the usual [h, w, top, left, h, w] micro-conditioning)
  odd_*: a second pass at batch 1 with a 10x6 latent (not a multiple of 4, so diffusers forwards the skip
         sizes to the upsamplers) and one fractional timestep (as Karras/Euler schedules produce).
"""
import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures")


def reference(layout, seed):
    unet = UNet2DConditionModel.from_pretrained(os.path.join(ROOT, f"tiny-{layout}", "unet"),
                                                torch_dtype=torch.float32).eval()
    cfg = unet.config
    g = torch.Generator("cpu").manual_seed(seed)
    sample = torch.randn(2, cfg.in_channels, 8, 8, generator=g)
    timesteps = torch.tensor([999.0, 500.0])
    context = torch.randn(2, 77, cfg.cross_attention_dim, generator=g)
    odd_sample = torch.randn(1, cfg.in_channels, 10, 6, generator=g)
    odd_timestep = torch.tensor([437.25])
    odd_context = torch.randn(1, 77, cfg.cross_attention_dim, generator=g)
    tensors = {"sample": sample, "timesteps": timesteps, "encoder_hidden_states": context,
               "odd_sample": odd_sample, "odd_timesteps": odd_timestep, "odd_encoder_hidden_states": odd_context}
    extra, odd_extra = {}, {}
    if cfg.addition_embed_type == "text_time":
        text_width = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        text_embeds = torch.randn(2, text_width, generator=g)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [80.0, 48.0, 8.0, 4.0, 64.0, 64.0]])
        extra = {"added_cond_kwargs": {"text_embeds": text_embeds, "time_ids": time_ids}}
        odd_extra = {"added_cond_kwargs": {"text_embeds": text_embeds[:1], "time_ids": time_ids[1:]}}
        tensors.update(text_embeds=text_embeds, time_ids=time_ids)
    with torch.no_grad():
        tensors["out"] = unet(sample, timesteps, context, **extra).sample
        tensors["odd_out"] = unet(odd_sample, odd_timestep, odd_context, **odd_extra).sample
    out_dir = os.path.join(ROOT, "reference")
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              os.path.join(out_dir, f"unet_{layout}.safetensors"))


def main():
    torch.manual_seed(0)
    reference("sd15", 10)
    reference("sdxl", 11)


if __name__ == "__main__":
    main()
