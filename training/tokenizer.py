"""Our own small CLIP BPE vocabulary (vocab.json + merges.txt in the layout of OpenAI CLIP's tokenizer files).

Layout, as in `tools/reference/clip_vocab.py`: the 256 byte symbols (GPT-2 byte-to-unicode order), the same
256 with `</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`. The merges are learned by
plain BPE over the caption vocabulary (each word once, most frequent pair first, ties broken by the pair's
text) until every caption word is a single symbol, so every caption word is one token.
"""
import json
import os
from collections import Counter

from dataset import VOCAB_WORDS


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words):
    byte_map = bytes_to_unicode()
    symbols = {}
    for w in words:
        chars = [byte_map[b] for b in w.encode("utf-8")]
        chars[-1] += "</w>"
        symbols[w] = chars
    merges = []
    while True:
        pairs = Counter()
        for s in symbols.values():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, s in symbols.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            symbols[w] = out


def write_tokenizer_files(directory, words=VOCAB_WORDS):
    """Writes vocab.json + merges.txt; returns the vocabulary size."""
    os.makedirs(directory, exist_ok=True)
    merges = learn_merges(words)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for a, b in merges:
        vocab.append(a + b)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(set(vocab)) == len(vocab), "duplicate token"
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    return len(vocab)


def make_tokenizer(directory):
    """Writes the files and returns a transformers CLIPTokenizer on them, checked word by word."""
    from transformers import CLIPTokenizer
    n = write_tokenizer_files(directory)
    tok = CLIPTokenizer(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"),
                        pad_token="<|endoftext|>", model_max_length=77)
    vocab = json.load(open(os.path.join(directory, "vocab.json"), encoding="utf-8"))
    for w in VOCAB_WORDS:
        ids = tok(w, add_special_tokens=False).input_ids
        want = vocab[w + "</w>"]
        assert ids == [want], f"word {w!r} tokenised as {tok.convert_ids_to_tokens(ids)}"
    return tok, n


def finalize_tokenizer_folder(directory):
    """After save_pretrained: keep the SD layout (vocab.json + merges.txt + configs, no tokenizer.json)."""
    write_tokenizer_files(directory)
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        os.remove(os.path.join(directory, "tokenizer.json"))
    path = os.path.join(directory, "tokenizer_config.json")
    config = json.load(open(path))
    config.pop("backend", None)
    config["model_max_length"] = 77
    json.dump(config, open(path, "w"), indent=2)
