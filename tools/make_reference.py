#!/usr/bin/env python3
"""Rebuilds every committed test fixture from independent implementations (diffusers, transformers, torch).

Usage (needs torch, diffusers, transformers, safetensors, pillow; and the open_clip_torch wheel for CLIP's
BPE table: `pip download --no-deps open_clip_torch -d /tmp/oc`; the `lora` part also needs peft):

    python tools/make_reference.py            # everything
    python tools/make_reference.py unet vae   # only some parts

Each part is a module in tools/reference/ with a main(); all are deterministic.
"""
import importlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))

# Order matters: the tiny pipelines are the inputs of the other references.
PARTS = ["tiny_pipelines", "safetensors_cases", "png_cases", "tokenizer", "rng", "schedulers", "text_encoder", "vae", "unet",
         "cpu_kernels", "quantization", "pipeline", "default_model", "single_file", "single_file_configs",
         "prompt_weighting", "img2img", "lora"]


def main(argv):
    wanted = argv or PARTS
    for part in wanted:
        if part not in PARTS:
            raise SystemExit(f"unknown part '{part}'; parts: {', '.join(PARTS)}")
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", part + ".py")
        if not os.path.exists(path):
            print(f"skip {part}: tools/reference/{part}.py does not exist")
            continue
        print(f"== {part}", flush=True)
        module = importlib.import_module(part)
        if part == "tiny_pipelines":
            module.build(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures"))
        else:
            module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
