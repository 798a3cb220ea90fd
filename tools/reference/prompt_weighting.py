"""Prompt embeddings by AUTOMATIC1111's rules, re-implemented here from its documented algorithm
(modules/prompt_parser.py `parse_prompt_attention`, modules/sd_hijack_clip.py `tokenize_line` / `process_tokens`,
modules/sd_emphasis.py "Original"), run with transformers' CLIP text models of the tiny fixture pipelines (SD1.x: the tiny encoder with a non-trivial final
layer norm, Tests/Fixtures/prompt-weighting/text_encoder, see `sd15_encoder_with_trained_final_norm`).

  - emphasis: `(x)` ×1.1, `[x]` ÷1.1, `(x:w)`, escapes `\\( \\) \\[ \\] \\\\`, unclosed brackets reach the end;
  - 75-token chunks (BOS + 75 + EOS), comma backtrack 20, `BREAK`; each chunk encoded on its own and concatenated;
  - emphasis "Original": z * multipliers, then z * (mean before / mean after), per chunk;
  - SD1.x clip skip N: hidden_states[-N] through the final layer norm; SDXL: penultimate layer of both encoders,
    pooled `text_embeds` of the second from the first chunk; padding after the end token: the end token for CLIP
    ViT-L, 0 for the OpenCLIP encoder (the fixture tokenizers' pad tokens).

Output: Tests/Fixtures/reference/prompt_weighting.safetensors — `<family>.<i>.embeddings` [1, 77k, width],
`<family>.<i>.tokens` (I32, [k, 77]) and `<family>.<i>.multipliers` (F32, [k, 77]) per case, `sdxl.<i>.pooled`;
the cases (prompt, clip skip) as JSON in the metadata.
"""
import json
import os
import re

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")

re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res = []
    round_brackets = []
    square_brackets = []

    def multiply_range(start_position, multiplier):
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        text = m.group(0)
        weight = m.group(1)
        if text.startswith('\\'):
            res.append([text[1:], 1.0])
        elif text == '(':
            round_brackets.append(len(res))
        elif text == '[':
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif text == ')' and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif text == ']' and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(re.split(re_break, text)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)
    if len(res) == 0:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def tokenize_line(line, tokenizer, id_pad, chunk_length=75, comma_padding_backtrack=20):
    id_start, id_end = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma_token = tokenizer.get_vocab().get(',</w>', None)
    parsed = parse_prompt_attention(line)
    tokenized = tokenizer([text for text, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
    chunks = []
    chunk = {"tokens": [], "multipliers": []}
    last_comma = -1

    def next_chunk():
        nonlocal last_comma, chunk
        to_add = chunk_length - len(chunk["tokens"])
        if to_add > 0:
            chunk["tokens"] += [id_end] * to_add
            chunk["multipliers"] += [1.0] * to_add
        chunk["tokens"] = [id_start] + chunk["tokens"] + [id_end]
        chunk["multipliers"] = [1.0] + chunk["multipliers"] + [1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = {"tokens": [], "multipliers": []}

    for tokens, (text, weight) in zip(tokenized, parsed):
        if text == 'BREAK' and weight == -1:
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_token:
                last_comma = len(chunk["tokens"])
            elif comma_padding_backtrack != 0 and len(chunk["tokens"]) == chunk_length and last_comma != -1 \
                    and len(chunk["tokens"]) - last_comma <= comma_padding_backtrack:
                break_location = last_comma + 1
                reloc_tokens = chunk["tokens"][break_location:]
                reloc_mults = chunk["multipliers"][break_location:]
                chunk["tokens"] = chunk["tokens"][:break_location]
                chunk["multipliers"] = chunk["multipliers"][:break_location]
                next_chunk()
                chunk["tokens"] = reloc_tokens
                chunk["multipliers"] = reloc_mults
            if len(chunk["tokens"]) == chunk_length:
                next_chunk()
            chunk["tokens"].append(token)
            chunk["multipliers"].append(weight)
            position += 1
    if chunk["tokens"] or not chunks:
        next_chunk()
    # process_tokens: where padding differs from the end token, everything after the first end token is padding
    for c in chunks:
        if id_end != id_pad:
            index = c["tokens"].index(id_end)
            c["tokens"] = c["tokens"][:index + 1] + [id_pad] * (len(c["tokens"]) - index - 1)
    return chunks


def emphasis_original(z, multipliers):
    original_mean = z.mean()
    z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    new_mean = z.mean()
    return z * (original_mean / new_mean)


def final_layer_norm(model):
    return (model.text_model if hasattr(model, "text_model") else model).final_layer_norm


def encode(model, tokenizer, prompt, id_pad, layer):
    """layer: ("last", clip_skip) for SD1.x or ("penultimate", None) for SDXL. Returns z [1, 77k, w], pooled, chunks."""
    chunks = tokenize_line(prompt, tokenizer, id_pad)
    zs, pooled = [], None
    for i, chunk in enumerate(chunks):
        tokens = torch.tensor([chunk["tokens"]])
        with torch.no_grad():
            out = model(input_ids=tokens, output_hidden_states=True)
            if layer[0] == "penultimate":
                z = out.hidden_states[-2]
            elif layer[1] > 1:
                z = final_layer_norm(model)(out.hidden_states[-layer[1]])
            else:
                z = out.last_hidden_state
            if i == 0 and hasattr(out, "text_embeds"):
                pooled = out.text_embeds
        zs.append(emphasis_original(z, torch.tensor([chunk["multipliers"]], dtype=torch.float32)))
    return torch.hstack(zs), pooled, chunks


LONG = ", ".join(f"a {c} {s} {p} the {q}" for c, s, p, q in zip(
    ["red", "green", "blue", "pink", "cyan", "yellow", "white", "black", "gray", "purple", "orange", "brown"] * 2,
    ["circle", "square", "triangle"] * 8, ["above", "below", "left of", "right of"] * 6,
    ["canvas", "shape", "corner", "middle"] * 6))

CASES = [
    ("a (red:1.3) circle and a [blue] square, ((green)) triangle", 1),
    ("escaped \\(parens\\) and a \\\\ backslash, (unclosed emphasis of [everything", 1),
    (LONG, 1),
    ("(" + LONG + ":0.9) and (more:1.4)", 1),
    ("first part BREAK second (part:0.5) BREAKFAST", 1),
    ("(a:1.2) :1.5) stray ] [nested (deep:0.8)] text\\ end:", 1),
    ("a small red circle above a large blue square", 2),
    ("a (small:1.1) red circle, [[above]] a large blue square", 3),
]


def sd15_encoder_with_trained_final_norm(folder):
    """The tiny SD1.x text encoder with a non-trivial final layer norm, saved to Tests/Fixtures/prompt-weighting/.
    Freshly initialised, the norm (weight 1, bias 0) leaves every token's state with mean exactly 0, which makes
    A1111's mean-restoring emphasis divide noise by noise; a trained CLIP's norm does not."""
    model = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=torch.float32)
    norm = final_layer_norm(model)
    g = torch.Generator().manual_seed(15)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.2 * torch.randn(norm.weight.shape, generator=g))
        norm.bias.copy_(0.3 + 0.2 * torch.randn(norm.bias.shape, generator=g))
    out = os.path.join(FIXTURES, "prompt-weighting", "text_encoder")
    model.half().save_pretrained(out, safe_serialization=True)
    return CLIPTextModel.from_pretrained(out, torch_dtype=torch.float32).eval()


def main():
    tensors, meta_cases = {}, []
    for index, (prompt, clip_skip) in enumerate(CASES):
        meta_cases.append({"prompt": prompt, "clip_skip": clip_skip})

    folder = os.path.join(FIXTURES, "tiny-sd15")
    tok = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    model = sd15_encoder_with_trained_final_norm(folder)
    assert tok.pad_token_id == tok.eos_token_id
    for i, (prompt, clip_skip) in enumerate(CASES):
        z, _, chunks = encode(model, tok, prompt, tok.eos_token_id, ("last", clip_skip))
        tensors[f"sd15.{i}.embeddings"] = z.numpy()
        tensors[f"sd15.{i}.tokens"] = np.array([c["tokens"] for c in chunks], dtype=np.int32)
        tensors[f"sd15.{i}.multipliers"] = np.array([c["multipliers"] for c in chunks], dtype=np.float32)
        print(f"sd15 case {i}: {len(chunks)} chunk(s)")

    folder = os.path.join(FIXTURES, "tiny-sdxl")
    tok1 = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer_2"))
    te1 = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=torch.float32).eval()
    te2 = CLIPTextModelWithProjection.from_pretrained(os.path.join(folder, "text_encoder_2"), torch_dtype=torch.float32).eval()
    assert tok1.pad_token_id == tok1.eos_token_id and tok2.pad_token_id == 0
    for i, (prompt, _) in enumerate(CASES):
        z1, _, chunks = encode(te1, tok1, prompt, tok1.eos_token_id, ("penultimate", None))
        z2, pooled, _ = encode(te2, tok2, prompt, 0, ("penultimate", None))
        tensors[f"sdxl.{i}.embeddings"] = torch.cat([z1, z2], dim=-1).numpy()
        tensors[f"sdxl.{i}.pooled"] = pooled.numpy()
    save_file(tensors, os.path.join(FIXTURES, "reference", "prompt_weighting.safetensors"),
              metadata={"cases": json.dumps(meta_cases)})


if __name__ == "__main__":
    main()
