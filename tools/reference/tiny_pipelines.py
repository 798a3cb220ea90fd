"""Builds the tiny random-weight diffusers pipelines used as test fixtures.

  tiny-sd15: SD1.x layout — one CLIPTextModel (quick_gelu), conv proj_in/proj_out
             (use_linear_projection=False), `attention_head_dim` read as the number of heads.
  tiny-sdxl: SDXL layout — two text encoders (the second CLIPTextModelWithProjection, gelu),
             linear projections, `transformer_layers_per_block`, `addition_embed_type: "text_time"`.

Weights are drawn in FP32 from a fixed seed, then stored as FP16 safetensors (half the size; loading
F16 is part of what is tested). References are always computed from the saved folder loaded in FP32.
"""
import os
import torch
from diffusers import (AutoencoderKL, UNet2DConditionModel, EulerDiscreteScheduler, PNDMScheduler,
                       StableDiffusionPipeline, StableDiffusionXLPipeline)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from clip_vocab import write_tokenizer_files

NUM_MERGES = 2000  # a real CLIP merge table cut short: ~2.5k tokens keeps the embeddings small


def tokenizer(tmp, pad_token):
    n = write_tokenizer_files(tmp, NUM_MERGES)
    tok = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token=pad_token)
    return tok, n


def text_config(vocab_size, hidden_act, projection_dim=None, hidden=32, layers=3):
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2 + 8, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=1,
        projection_dim=projection_dim or hidden)


def vae(scaling_factor, force_upcast):
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
        scaling_factor=scaling_factor, force_upcast=force_upcast)


def sd15_unet():
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8, use_linear_projection=False)


def sdxl_unet():
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4), cross_attention_dim=64,
        norm_num_groups=8, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8)


def sd_scheduler_config():
    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)


def sdxl_scheduler():
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
                                  interpolation_type="linear", use_karras_sigmas=False)


def to_fp16_roundtrip(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module


def normalise_tokenizer_folder(directory):
    """Lays a saved tokenizer out as the public SD repositories do: vocab.json + merges.txt + config."""
    import json
    write_tokenizer_files(directory, NUM_MERGES)
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        os.remove(os.path.join(directory, "tokenizer.json"))
    path = os.path.join(directory, "tokenizer_config.json")
    config = json.load(open(path))
    config.pop("backend", None)
    config["model_max_length"] = 77
    json.dump(config, open(path, "w"), indent=2)


def build(out_dir):
    tmp = os.path.join(out_dir, ".tok")
    torch.manual_seed(0)
    tok, n = tokenizer(tmp, "<|endoftext|>")
    sd = StableDiffusionPipeline(
        vae=vae(0.18215, True), text_encoder=CLIPTextModel(text_config(n, "quick_gelu")), tokenizer=tok,
        unet=sd15_unet(), scheduler=sd_scheduler_config(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    for m in (sd.vae, sd.text_encoder, sd.unet):
        to_fp16_roundtrip(m)
    sd.to(torch.float16).save_pretrained(os.path.join(out_dir, "tiny-sd15"), safe_serialization=True)
    normalise_tokenizer_folder(os.path.join(out_dir, "tiny-sd15", "tokenizer"))

    torch.manual_seed(1)
    tok1, n = tokenizer(tmp, "<|endoftext|>")
    tok2, _ = tokenizer(tmp, "!")
    xl = StableDiffusionXLPipeline(
        vae=vae(0.13025, True), text_encoder=CLIPTextModel(text_config(n, "quick_gelu")),
        text_encoder_2=CLIPTextModelWithProjection(text_config(n, "gelu", projection_dim=32)),
        tokenizer=tok1, tokenizer_2=tok2, unet=sdxl_unet(), scheduler=sdxl_scheduler(),
        force_zeros_for_empty_prompt=True)
    for m in (xl.vae, xl.text_encoder, xl.text_encoder_2, xl.unet):
        to_fp16_roundtrip(m)
    xl.to(torch.float16).save_pretrained(os.path.join(out_dir, "tiny-sdxl"), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        normalise_tokenizer_folder(os.path.join(out_dir, "tiny-sdxl", name))
    for f in os.listdir(tmp):
        os.remove(os.path.join(tmp, f))
    os.rmdir(tmp)


if __name__ == "__main__":
    import sys
    build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures"))
