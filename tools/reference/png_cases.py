"""PNG files written by PIL for the Swift `PNGDecoder` tests (Tests/Fixtures/formats/):

  pil_rgba.png        6x4 RGBA
  pil_la.png          5x3 grey + alpha (LA)
  pil_palette.png     7x5 palette of 40 entries, 8-bit indices, with a tRNS chunk (alpha per entry)
  pil_palette4.png    9x3 palette of 16 entries saved with 4-bit indices, no transparency
  interlaced.png      8x8 RGB, Adam7-interlaced, written here by hand (PIL cannot interlace; must be refused)
  pil_16bit.png       4x4 16-bit grey (must be refused)

Pixels follow `pixel_value` (shared with safetensors_cases.py), so the Swift tests recompute them.
Run: python3 tools/reference/png_cases.py
"""
import os
import struct
import zlib

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "formats")


def pixel_value(x, y, c):
    """The pixel formula the Swift PNG tests recompute."""
    return (x * 37 + y * 91 + c * 53 + 7) % 256


def image(w, h, channels):
    return np.array([[[pixel_value(x, y, c) for c in range(channels)] for x in range(w)] for y in range(h)],
                    dtype=np.uint8)


def palette_image(w, h, entries):
    """Index (x + 3y) % entries; entry i is RGB (pixel_value(i, 0, 0..2)); alpha of entry i is 255 - 6 i."""
    indices = np.array([[(x + 3 * y) % entries for x in range(w)] for y in range(h)], dtype=np.uint8)
    im = Image.fromarray(indices, mode="P")
    im.putpalette([pixel_value(i, 0, c) for i in range(entries) for c in range(3)])
    return im


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def adam7_png(rgb):
    """A valid interlaced 8-bit RGB PNG: the 7 Adam7 passes, each row with filter 0."""
    h, w, _ = rgb.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def main():
    os.makedirs(OUT, exist_ok=True)
    Image.fromarray(image(6, 4, 4), mode="RGBA").save(os.path.join(OUT, "pil_rgba.png"))
    Image.fromarray(image(5, 3, 2), mode="LA").save(os.path.join(OUT, "pil_la.png"))
    palette_image(7, 5, 40).save(os.path.join(OUT, "pil_palette.png"),
                                 transparency=bytes(255 - 6 * i for i in range(40)))
    palette_image(9, 3, 16).save(os.path.join(OUT, "pil_palette4.png"), bits=4)
    with open(os.path.join(OUT, "interlaced.png"), "wb") as f:
        f.write(adam7_png(image(8, 8, 3)))
    assert np.array_equal(np.asarray(Image.open(os.path.join(OUT, "interlaced.png"))), image(8, 8, 3))
    Image.fromarray(image(4, 4, 1)[:, :, 0].astype(np.uint16) * 257).save(os.path.join(OUT, "pil_16bit.png"))


if __name__ == "__main__":
    main()
