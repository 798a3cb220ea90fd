"""Procedural shapes data set for the embedded default model (deterministic from a seed).

Every sample is a 64x64 RGB image of one to three flat shapes (circle, square, triangle; small or large; one of
8 colours) on a plain background (white, black, gray or brown), with a templated English caption:

  one shape     "a small red circle on the left on a white background"
                (positions: on the left / on the right / at the top / at the bottom / in the centre)
  two shapes    "a small red circle above a large blue square on a black background"
                (relations: above / below / left of / right of; the first shape is the subject)
  three shapes  "a small red circle, a large blue square and a small green triangle from left to right
                 on a gray background" (at most one large shape, so three fit in a row)

Shapes are drawn with hard edges (no anti-aliasing), so every shape pixel has exactly one palette colour.
Held-out colour x shape pairs (HELDOUT_PAIRS) never appear in any training image; `heldout_prompts.txt` lists
captions that each contain at least one of them, `calibration_prompts.txt` lists training-distribution captions.

Run `python training/dataset.py` to (re)write both prompt lists.
"""
import os
import random

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SHAPES = ["circle", "square", "triangle"]
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220), "yellow": (245, 215, 30),
    "orange": (245, 130, 20), "purple": (130, 40, 170), "cyan": (40, 200, 220), "pink": (245, 120, 190),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128), "brown": (110, 70, 40)}
SIZES = {"small": 12, "large": 24}  # side of the bounding box in pixels
POSITIONS = {  # centre of a single shape, before jitter
    "on the left": (14, 32), "on the right": (50, 32), "at the top": (32, 14), "at the bottom": (32, 50),
    "in the centre": (32, 32),
}
RELATIONS = ["above", "below", "left of", "right of"]
# Colour x shape pairs never drawn in training (evaluation of compositional generalisation).
HELDOUT_PAIRS = {("red", "triangle"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle"),
                 ("purple", "circle"), ("cyan", "square")}
VOCAB_WORDS = sorted(set(" ".join(
    list(COLOURS) + list(BACKGROUNDS) + SHAPES + list(SIZES) + list(POSITIONS) + RELATIONS +
    ["a", "and", "from", "to", "background", "on"]).split()) | {","})


def describe(obj):
    return f"a {obj['size']} {obj['colour']} {obj['shape']}"


def _random_object(rng, allow_heldout, size=None):
    while True:
        colour = rng.choice(list(COLOURS))
        shape = rng.choice(SHAPES)
        if allow_heldout or (colour, shape) not in HELDOUT_PAIRS:
            return {"colour": colour, "shape": shape, "size": size or rng.choice(list(SIZES))}


def _random_background(rng):
    return rng.choice(list(BACKGROUNDS))


def random_scene(rng, allow_heldout=False, kind=None):
    """A scene description: background, objects (with centres) and caption. `kind` = 1, 2 or 3 shapes."""
    kind = kind or rng.choices([1, 2, 3], weights=[3, 4, 3])[0]
    bg = _random_background(rng)
    j = lambda: rng.randint(-3, 3)  # noqa: E731  position jitter
    if kind == 1:
        obj = _random_object(rng, allow_heldout)
        where = rng.choice(list(POSITIONS))
        cx, cy = POSITIONS[where]
        obj["centre"] = (cx + j(), cy + j())
        objs = [obj]
        caption = f"{describe(obj)} {where} on a {bg} background"
    elif kind == 2:
        a, b = _random_object(rng, allow_heldout), _random_object(rng, allow_heldout)
        while (a["colour"], a["shape"]) == (b["colour"], b["shape"]):
            b = _random_object(rng, allow_heldout)
        rel = rng.choice(RELATIONS)
        near, far, across = 16 + j(), 48 + j(), 32 + rng.randint(-8, 8)
        across2 = 32 + rng.randint(-8, 8)
        if rel == "above":
            a["centre"], b["centre"] = (across, near), (across2, far)
        elif rel == "below":
            a["centre"], b["centre"] = (across, far), (across2, near)
        elif rel == "left of":
            a["centre"], b["centre"] = (near, across), (far, across2)
        else:
            a["centre"], b["centre"] = (far, across), (near, across2)
        objs = [a, b]
        caption = f"{describe(a)} {rel} {describe(b)} on a {bg} background"
    else:
        large_at = rng.choice([None, 0, 1, 2])
        objs = []
        while len(objs) < 3:
            o = _random_object(rng, allow_heldout, size="large" if len(objs) == large_at else "small")
            if all((o["colour"], o["shape"]) != (p["colour"], p["shape"]) for p in objs):
                objs.append(o)
        y = 32 + rng.randint(-6, 6)
        for i, o in enumerate(objs):
            o["centre"] = ((13, 32, 51)[i] + rng.randint(-1, 1), y + rng.randint(-2, 2))
        caption = (f"{describe(objs[0])}, {describe(objs[1])} and {describe(objs[2])} from left to right "
                   f"on a {bg} background")
    return {"background": bg, "objects": objs, "caption": caption}


def render(scene):
    """Draws a scene as a uint8 array [64, 64, 3] (hard edges, palette colours only)."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        s = SIZES[o["size"]]
        cx, cy = o["centre"]
        x0, y0 = cx - s // 2, cy - s // 2
        x1, y1 = x0 + s - 1, y0 + s - 1
        fill = COLOURS[o["colour"]]
        if o["shape"] == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif o["shape"] == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    return np.asarray(img, dtype=np.uint8)


def _chunk(args):
    seed, start, count = args
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    captions = []
    for i in range(count):
        rng = random.Random(seed * 1_000_003 + start + i)
        scene = random_scene(rng)
        images[i] = render(scene)
        captions.append(scene["caption"])
    return images, captions


def make_dataset(n, seed=0, workers=None):
    """n training samples (uint8 [n,64,64,3], captions); sample i depends only on (seed, i)."""
    chunk = 2048
    jobs = [(seed, s, min(chunk, n - s)) for s in range(0, n, chunk)]
    if workers == 1 or len(jobs) == 1:
        parts = [_chunk(a) for a in jobs]
    else:
        from multiprocessing import Pool
        with Pool(workers or os.cpu_count()) as pool:
            parts = pool.map(_chunk, jobs)
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def heldout_prompts(count=240, seed=12345):
    """Captions that each contain at least one held-out colour x shape pair (unique, in a fixed order)."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        scene = random_scene(rng, allow_heldout=True)
        if any((o["colour"], o["shape"]) in HELDOUT_PAIRS for o in scene["objects"]) and scene["caption"] not in seen:
            seen.add(scene["caption"])
            out.append(scene["caption"])
    return out


def calibration_prompts(count=128, seed=777):
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        caption = random_scene(rng)["caption"]
        if caption not in seen:
            seen.add(caption)
            out.append(caption)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "heldout_prompts.txt"), "w") as f:
        f.write("\n".join(heldout_prompts()) + "\n")
    with open(os.path.join(here, "calibration_prompts.txt"), "w") as f:
        f.write("\n".join(calibration_prompts()) + "\n")


if __name__ == "__main__":
    main()
