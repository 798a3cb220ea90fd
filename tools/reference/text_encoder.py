"""Reference outputs of the fixture CLIP text encoders (transformers, FP32).

For each of tiny-sd15/text_encoder, tiny-sdxl/text_encoder, tiny-sdxl/text_encoder_2 it tokenizes two
prompts with the fixture tokenizer (one short prompt padded to 77 with the pad id, one of ~20 tokens),
runs the model with output_hidden_states=True and writes

  Tests/Fixtures/reference/text_encoder_<name>.safetensors:
    input_ids            [2, 77]   token ids (as float32; all ids < 2^24 are exact)
    hidden_states.<i>    [2, 77, D] i = 0 (embeddings) ... num_hidden_layers (last layer, before final LN)
    last_hidden_state    [2, 77, D] after final_layer_norm
    pooled_output        [2, D]     hidden state at the EOS position, after final LN
    pooled_output_legacy [2, D]     the same with config.eos_token_id = 2 (transformers' argmax-of-ids path)
    text_embeds          [2, P]     text_projection(pooled_output) (CLIPTextModelWithProjection only)

Deterministic: no randomness; weights come from the committed fixtures.
"""
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures")

PROMPTS = [
    "a red circle",
    "a small blue square above a large green triangle, digital art",  # 21 tokens with BOS/EOS
]

# (output name, model folder, tokenizer folder)
ENCODERS = [
    ("sd15", "tiny-sd15/text_encoder", "tiny-sd15/tokenizer"),
    ("sdxl", "tiny-sdxl/text_encoder", "tiny-sdxl/tokenizer"),
    ("sdxl_2", "tiny-sdxl/text_encoder_2", "tiny-sdxl/tokenizer_2"),
]


def load(folder):
    path = os.path.join(ROOT, folder)
    import json
    with open(os.path.join(path, "config.json")) as f:
        arch = json.load(f)["architectures"][0]
    cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
    return cls.from_pretrained(path, dtype=torch.float32).eval()


def run(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    # CLIPTextModelWithProjection has no pooler_output; its text_model does.
    inner = model.text_model if hasattr(model, "text_model") else model
    with torch.no_grad():
        pooled = inner(input_ids=ids).pooler_output
    return out, pooled


def main():
    torch.set_num_threads(1)
    out_dir = os.path.join(ROOT, "reference")
    os.makedirs(out_dir, exist_ok=True)
    for name, model_folder, tokenizer_folder in ENCODERS:
        tok = CLIPTokenizer.from_pretrained(os.path.join(ROOT, tokenizer_folder))
        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        model = load(model_folder)
        out, pooled = run(model, ids)
        tensors = {"input_ids": ids.float(), "last_hidden_state": out.last_hidden_state, "pooled_output": pooled}
        for i, h in enumerate(out.hidden_states):
            tensors[f"hidden_states.{i}"] = h
        if hasattr(out, "text_embeds") and out.text_embeds is not None:
            tensors["text_embeds"] = out.text_embeds
        inner = model.text_model if hasattr(model, "text_model") else model
        inner.eos_token_id = 2  # the legacy-config path: pooled at argmax(input_ids)
        with torch.no_grad():
            tensors["pooled_output_legacy"] = inner(input_ids=ids).pooler_output
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        save_file(tensors, os.path.join(out_dir, f"text_encoder_{name}.safetensors"))
        print(name, "ids", ids[:, :24].tolist(), {k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
