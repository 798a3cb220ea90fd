"""Writes Tests/Fixtures/fidelity/samples.safetensors: ground-truth data-set images for the Swift
prompt-fidelity checker's tests.

`images`: U8 [N, 64, 64, 3] (RGB, row-major), drawn by `dataset.render` exactly as in training (held-out
colour x shape pairs allowed). `__metadata__["captions"]`: a JSON array of the N captions, same order.
N = 24 (8 one-shape, 8 two-shape, 8 three-shape scenes) keeps the file under 300 KB. Deterministic (seed 4242).
"""
import json
import os
import random

import numpy as np

import dataset

COUNT_PER_KIND = 8
SEED = 4242


def main():
    from safetensors.numpy import save_file
    rng = random.Random(SEED)
    images, captions = [], []
    for kind in (1, 2, 3):
        for _ in range(COUNT_PER_KIND):
            scene = dataset.random_scene(rng, allow_heldout=True, kind=kind)
            images.append(dataset.render(scene))
            captions.append(scene["caption"])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "fidelity")
    os.makedirs(root, exist_ok=True)
    save_file({"images": np.stack(images)}, os.path.join(root, "samples.safetensors"),
              metadata={"captions": json.dumps(captions)})


if __name__ == "__main__":
    main()


def write_generated(npz_path):
    """Writes Tests/Fixtures/fidelity/generated_heldout.safetensors from a `sample_grid.py` .npz (the 16
    held-out grid images of the committed model: U8 [16, 64, 64, 3] + captions), for a fidelity baseline."""
    from safetensors.numpy import save_file
    data = np.load(npz_path)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "fidelity")
    save_file({"images": np.ascontiguousarray(data["images"].astype(np.uint8))},
              os.path.join(root, "generated_heldout.safetensors"),
              metadata={"captions": json.dumps([str(p) for p in data["prompts"]])})
