"""Draws training/loss.png from training/vae_loss.json and training/unet_loss.json (PIL only, log-scale y).

  python training/plot_loss.py
"""
import json
import math
import os

from PIL import Image, ImageDraw, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))


def panel(draw, box, log, title, font):
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    steps = [p["step"] for p in log]
    losses = [math.log10(p["loss"]) for p in log]
    lo, hi = math.floor(min(losses)), math.ceil(max(losses))
    sx = lambda s: x0 + (x1 - x0) * s / max(steps)  # noqa: E731
    sy = lambda v: y1 - (y1 - y0) * (v - lo) / (hi - lo)  # noqa: E731
    for d in range(lo, hi + 1):
        draw.line([(x0, sy(d)), (x1, sy(d))], fill=(220, 220, 220))
        draw.text((x0 - 44, sy(d) - 6), f"1e{d}", fill=(0, 0, 0), font=font)
    for s in range(0, max(steps) + 1, 1000):
        draw.text((sx(s) - 10, y1 + 4), str(s), fill=(0, 0, 0), font=font)
    draw.line([(sx(s), sy(v)) for s, v in zip(steps, losses)], fill=(200, 40, 40), width=2)
    draw.text((x0 + 8, y0 + 6), title, fill=(0, 0, 0), font=font)


def main():
    vae = json.load(open(os.path.join(HERE, "vae_loss.json")))
    unet = json.load(open(os.path.join(HERE, "unet_loss.json")))
    img = Image.new("RGB", (1000, 420), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:
        font = ImageFont.load_default()
    panel(draw, (60, 20, 480, 370), vae["log"],
          f"VAE: MSE + 0.5 L1 + 1e-6 KL (batch {vae['batch']}, {vae['seconds']:.0f} s)", font)
    panel(draw, (560, 20, 980, 370), unet["log"],
          f"UNet + text encoder: eps MSE (batch {unet['batch']}, {unet['seconds']:.0f} s)", font)
    draw.text((420, 395), "training step (loss: mean of every 10th step over 100 steps)", fill=(0, 0, 0), font=font)
    img.save(os.path.join(HERE, "loss.png"))


if __name__ == "__main__":
    main()
