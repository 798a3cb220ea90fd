"""Reference token ids of transformers' CLIPTokenizer for CLIPTokenizer's tests.

Writes the full CLIP vocabulary the product ships (models/tokenizers/clip/{vocab.json,merges.txt}, made by
clip_vocab.write_tokenizer_files from OpenAI's BPE table), the tokenizer configs it is tested with
(Tests/Fixtures/tokenizer/configs/<name>/), and Tests/Fixtures/reference/tokenizer.json: for each tokenizer and
each test string, the ids diffusers feeds the text encoder (`tokenizer(s, padding="max_length",
max_length=model_max_length, truncation=True)`) and the untruncated ids (`tokenizer(s).input_ids`).
"""
import json
import os
import shutil
import sys
import tempfile

from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clip_vocab  # noqa: E402
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")
FULL = os.path.join(HERE, "..", "..", "models", "tokenizers", "clip")
CONFIGS = os.path.join(FIXTURES, "tokenizer", "configs")

LONG = ("a highly detailed photograph of an astronaut riding a horse on the surface of mars, dramatic lighting, "
        "volumetric fog, 8k, trending on artstation, by greg rutkowski and alphonse mucha, intricate, elegant, "
        "sharp focus, illustration, concept art, matte painting, octane render, unreal engine, golden hour")

STRINGS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT!!!",
    "hello! world!! (yes) [no] {maybe} <angle> \"quoted\" 'single'",
    "Punctuation: commas, periods. semicolons; colons: dashes - em—dash – ellipsis… ?!?! #hash @at $5 %50 ^_^ ~~ `tick`",
    "digits 0123456789 3.14159 1,000,000 2024-01-02 4k 8K 16:9 ½ ² ③ Ⅻ ٣",
    "don't can't won't I'M you're we've they'll she'd it's rock'n'roll ''quoted'' 'sup y'all o'clock '",
    "multiple   spaces\tand\ttabs\nnew\nlines\r\nwindows  \n\t mixed ",
    "   leading and trailing   ",
    "\u00a0nbsp\u3000ideographic\u2028line\u2029para\u0085nel\u200bzwsp\u180emvs\ufeffbom\x1cfs",
    "café naïve résumé Ångström Zürich São Paulo Ελληνικά ΣΑΣ İstanbul straße Œuvre",
    "cafe\u0301 decomposed e\u0301 and A\u030a and \u2126hm",
    "日本語のテキスト 中文字符 한국어 텍스트 \u1100\u1161 jamo",
    "emoji 🙂🎨🚀 family 👨‍👩‍👧 skin 👍🏽 flag 🇫🇷 keycap 1️⃣ ❤️",
    "Devanagari हिन्दी Arabic العربية Hebrew עברית Thai ภาษาไทย",
    "ﬁne ligature ＡＢＣ fullwidth ｱｲｳ halfwidth \u0007bell control",
    "<|startoftext|>inline specials<|endoftext|> and <|ENDOFTEXT|> upper <|endoftext|>> trail <|StartOfText|>x",
    "html &amp; entities &lt;b&gt; not unescaped",
    "x" * 300,
    LONG,
    LONG + ", " + LONG,
    "word " * 74 + "end",
    "word " * 75 + "end",
    "word " * 76 + "end",
    "!!!!!! ?? !?",
]

# (name, config files) written to Tests/Fixtures/tokenizer/configs/<name>/ and used with the full vocabulary.
CONFIG_FILES = {
    "sd15": {"tokenizer_config.json": {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "model_max_length": 77,
        "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}},
    "sdxl-tokenizer-2": {"tokenizer_config.json": {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "0": {"content": "!", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
            "49406": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True},
            "49407": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}},
        "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 77, "pad_token": "!",
        "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}},
    "openai-normalized": {"tokenizer_config.json": {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "49406": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True},
            "49407": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True}},
        "bos_token": "<|startoftext|>", "do_lower_case": True, "eos_token": "<|endoftext|>", "errors": "replace",
        "model_max_length": 77, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>"}},
    "legacy-addedtoken": {
        "tokenizer_config.json": {
            "add_prefix_space": False,
            "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
            "do_lower_case": True,
            "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
            "errors": "replace", "model_max_length": 77, "pad_token": "<|endoftext|>",
            "special_tokens_map_file": "./special_tokens_map.json", "tokenizer_class": "CLIPTokenizer",
            "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}},
        "special_tokens_map.json": {
            "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
            "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
            "pad_token": "<|endoftext|>",
            "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}}},
    "sd15-maxlen-32": {"tokenizer_config.json": {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "model_max_length": 32,
        "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}},
}


def fuzz_strings(count=150, seed=0):
    """Random strings over a pool that exercises every branch of the pre-tokenizer (deterministic)."""
    import random
    rng = random.Random(seed)
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3
            + list(" \t\n   '''!!?.,;:-_()[]{}<>|/\\\"#$%&*+=@^`~")
            + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>"]
            + list("éÉàçñöüßøåæœıİŞğΣσςΩ") + ["e\u0301", "A\u030a", "\u1100\u1161"]
            + list("日本語中文한국어ｱＡ½²③Ⅻ٣")
            + ["🙂", "👍🏽", "👨\u200d👩", "🇫🇷", "\u00a0", "\u3000", "\u200b", "\ufb01"])
    strings = []
    for _ in range(count):
        length = rng.randint(1, 40)
        strings.append("".join(rng.choice(pool) for _ in range(length)))
    return strings


def record(tokenizer):
    rows = []
    for s in STRINGS:
        padded = tokenizer(s, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
        full = tokenizer(s).input_ids
        rows.append({"ids": padded, "untruncated": full})
    return {"model_max_length": tokenizer.model_max_length, "pad_token_id": tokenizer.pad_token_id, "rows": rows}


def main():
    os.makedirs(FULL, exist_ok=True)
    clip_vocab.write_tokenizer_files(FULL)
    result = {"strings": STRINGS, "tokenizers": {}}
    for name, files in CONFIG_FILES.items():
        directory = os.path.join(CONFIGS, name)
        os.makedirs(directory, exist_ok=True)
        for file_name, content in files.items():
            with open(os.path.join(directory, file_name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)
                f.write("\n")
        with tempfile.TemporaryDirectory() as tmp:
            for file_name in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(FULL, file_name), tmp)
            for file_name in files:
                shutil.copy(os.path.join(directory, file_name), tmp)
            result["tokenizers"]["full/" + name] = record(CLIPTokenizer.from_pretrained(tmp))
    for folder in ("tiny-sd15/tokenizer", "tiny-sdxl/tokenizer", "tiny-sdxl/tokenizer_2"):
        result["tokenizers"][folder] = record(CLIPTokenizer.from_pretrained(os.path.join(FIXTURES, folder)))
    fuzz = fuzz_strings()
    result["fuzz"] = {"strings": fuzz, "tokenizers": {}}
    for name in ("sd15", "sdxl-tokenizer-2"):
        with tempfile.TemporaryDirectory() as tmp:
            for file_name in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(FULL, file_name), tmp)
            shutil.copy(os.path.join(CONFIGS, name, "tokenizer_config.json"), tmp)
            tokenizer = CLIPTokenizer.from_pretrained(tmp)
            result["fuzz"]["tokenizers"]["full/" + name] = [tokenizer(s).input_ids for s in fuzz]
    with open(os.path.join(FIXTURES, "reference", "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=True, separators=(",", ":"))


if __name__ == "__main__":
    main()
