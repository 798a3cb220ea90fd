"""Writes CLIP BPE tokenizer files (vocab.json + merges.txt, the layout transformers' CLIPTokenizer reads).

The merges come from OpenAI CLIP's published BPE table (`bpe_simple_vocab_16e6.txt.gz`, shipped inside the
`open_clip_torch` wheel). The vocabulary is built the way CLIP builds it: 256 byte symbols, the same with
`</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`. `num_merges` < 48894 gives a
smaller but still valid CLIP tokenizer (the tiny test pipelines use one).
"""
import gzip
import json
import os
import zipfile
import glob
import io

FULL_MERGES = 49152 - 256 - 2


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


def load_merges(bpe_gz_path=None):
    """The merge list of OpenAI CLIP. Looks for the open_clip wheel's copy when no path is given."""
    if bpe_gz_path is None:
        try:
            import open_clip  # noqa: F401
            bpe_gz_path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
        except ImportError:
            wheels = glob.glob(os.environ.get("OPEN_CLIP_WHEEL", "/tmp/oc/open_clip_torch-*.whl"))
            if not wheels:
                raise SystemExit("need open_clip_torch: pip download --no-deps open_clip_torch -d /tmp/oc")
            with zipfile.ZipFile(wheels[0]) as z:
                data = z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
            return gzip.open(io.BytesIO(data)).read().decode("utf-8").split("\n")[1:FULL_MERGES + 1]
    return gzip.open(bpe_gz_path).read().decode("utf-8").split("\n")[1:FULL_MERGES + 1]


def write_tokenizer_files(directory, num_merges=FULL_MERGES):
    os.makedirs(directory, exist_ok=True)
    merges = load_merges()[:num_merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for merge in merges:
        vocab.append("".join(merge.split()))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in merges:
            f.write(merge + "\n")
    return len(vocab)
