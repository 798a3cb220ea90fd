"""What diffusers makes of the reference configurations a single-file checkpoint is loaded with
(models/configs/<family>/), for the tests of those configurations:

  - `unet_from_ldm`, `vae_from_ldm`: the UNet and VAE configurations diffusers' own converters
    (`create_unet_diffusers_config_from_ldm`, `create_vae_diffusers_config_from_ldm`) derive from the original
    model configurations, CompVis' `configs/stable-diffusion/v1-inference.yaml` and Stability AI's
    `configs/inference/sd_xl_base.yaml` (the `params` those files hold, transcribed below);
  - `scheduler_defaults`: the scheduler settings diffusers' single-file loader starts from (`SCHEDULER_DEFAULT_CONFIG`,
    the SD training schedule of both families);
  - `model_type`: the family diffusers' `infer_diffusers_model_type` reads from a checkpoint with the key names and
    shapes of the models built from the shipped configurations;
  - `shapes`: those key names and shapes (the checkpoint diffusers' converters would expect), and the number of
    diffusers state-dict tensors of each component;
  - `tokenizers`: transformers' CLIPTokenizer ids for the tokenizer tests' strings with each shipped tokenizer
    settings folder and the shipped vocabulary (models/tokenizers/clip).

Models are built on the meta device, so no weights are allocated. Writes Tests/Fixtures/reference/single_file_configs.json.
"""
import json
import os
import shutil
import sys
import tempfile

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (SCHEDULER_DEFAULT_CONFIG, create_unet_diffusers_config_from_ldm,
                                                 create_vae_diffusers_config_from_ldm, infer_diffusers_model_type)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import single_file  # noqa: E402  (the LDM/SGM key writers of the single-file fixtures)
import tokenizer as tokenizer_reference  # noqa: E402  (the tokenizer tests' strings)

ROOT = os.path.join(HERE, "..", "..")
CONFIGS = os.path.join(ROOT, "models", "configs")
VOCABULARY = os.path.join(ROOT, "models", "tokenizers", "clip")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "reference", "single_file_configs.json")

VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}

# model.params of v1-inference.yaml (CompVis/stable-diffusion) and sd_xl_base.yaml (Stability-AI/generative-models)
ORIGINAL = {
    "stable-diffusion-v1-5": {"model": {"params": {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "image_size": 64, "channels": 4,
        "scale_factor": 0.18215,
        "unet_config": {"params": {
            "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
            "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_heads": 8,
            "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 768, "legacy": False}},
        "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": VAE_DDCONFIG}}}}},
    "stable-diffusion-xl-base-1.0": {"model": {"params": {
        "scale_factor": 0.13025,
        "network_config": {"params": {
            "adm_in_channels": 2816, "num_classes": "sequential", "in_channels": 4, "out_channels": 4,
            "model_channels": 320, "attention_resolutions": [4, 2], "num_res_blocks": 2, "channel_mult": [1, 2, 4],
            "num_head_channels": 64, "use_linear_in_transformer": True, "transformer_depth": [1, 2, 10],
            "context_dim": 2048}},
        "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": VAE_DDCONFIG}}}}},
}


def load(path):
    with open(path) as f:
        return json.load(f)


def text_encoder(folder):
    config = load(os.path.join(folder, "config.json"))
    cls = CLIPTextModelWithProjection if config["architectures"][0] == "CLIPTextModelWithProjection" else CLIPTextModel
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "hidden_act", "layer_norm_eps", "projection_dim", "bos_token_id", "eos_token_id",
            "pad_token_id")
    return cls(CLIPTextConfig(**{k: config[k] for k in keys}))


class MetaPipeline:
    """The components `single_file.checkpoint` reads, built from a configuration folder on the meta device."""

    def __init__(self, folder, xl):
        with torch.device("meta"):
            self.unet = UNet2DConditionModel.from_config(load(os.path.join(folder, "unet", "config.json")))
            self.vae = AutoencoderKL.from_config(load(os.path.join(folder, "vae", "config.json")))
            self.text_encoder = text_encoder(os.path.join(folder, "text_encoder"))
            self.text_encoder_2 = text_encoder(os.path.join(folder, "text_encoder_2")) if xl else None


def jsonable(config):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


def family(name):
    xl = "xl" in name
    pipe = MetaPipeline(os.path.join(CONFIGS, name), xl)
    checkpoint = single_file.checkpoint(pipe, xl)
    original = ORIGINAL[name]
    counts = {"unet": len(pipe.unet.state_dict()), "vae": len(pipe.vae.state_dict()),
              "text_encoder": len([k for k in pipe.text_encoder.state_dict() if not k.endswith("position_ids")])}
    if xl:
        counts["text_encoder_2"] = len([k for k in pipe.text_encoder_2.state_dict() if not k.endswith("position_ids")])
    return {
        "model_type": infer_diffusers_model_type(checkpoint),
        "unet_from_ldm": jsonable(create_unet_diffusers_config_from_ldm(original, checkpoint)),
        "vae_from_ldm": jsonable(create_vae_diffusers_config_from_ldm(original, checkpoint)),
        "diffusers_tensor_counts": counts,
        "shapes": {k: list(v.shape) for k, v in sorted(checkpoint.items())},
    }


def tokenizers():
    result = {}
    for folder in ("stable-diffusion-v1-5/tokenizer", "stable-diffusion-xl-base-1.0/tokenizer",
                   "stable-diffusion-xl-base-1.0/tokenizer_2"):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(VOCABULARY, name), tmp)
            for name in os.listdir(os.path.join(CONFIGS, folder)):
                shutil.copy(os.path.join(CONFIGS, folder, name), tmp)
            result[folder] = tokenizer_reference.record(CLIPTokenizer.from_pretrained(tmp))
    return result


def main():
    result = {"families": {name: family(name) for name in ORIGINAL}, "scheduler_defaults": dict(SCHEDULER_DEFAULT_CONFIG),
              "strings": tokenizer_reference.STRINGS, "tokenizers": tokenizers()}
    for name, entry in result["families"].items():
        print(name, entry["model_type"], len(entry["shapes"]), "keys", entry["diffusers_tensor_counts"])
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
