"""Reference cases for the file-format code (safetensors, diffusers folders, PNG, image conversion).

Writes into Tests/Fixtures/formats/:
  python_dtypes.safetensors      every dtype we read, saved by the Python `safetensors` library
                                 (includes all 256 F8_E4M3 bit patterns and F16 rounding cases)
  python_dtypes_f32.safetensors  the same tensors converted to float32 by torch (`.float()`), the reference
  image_postprocess.safetensors  a VAE-like output in [-1.2, 1.2] and the uint8 RGB that diffusers'
                                 VaeImageProcessor.postprocess(output_type="pil") makes of it
  pil_rgb.png, pil_grey.png      tiny PNGs written by PIL from the pixel formula `pixel_value` below
  model_summaries.json           per component of tiny-sd15 / tiny-sdxl: class, parameter count from
                                 diffusers/transformers, stored element count and dtypes in the weights file
Checks (when run): Tests/Fixtures/formats/swift_written.safetensors, written by the Swift SafetensorsWriter
(test SafetensorsWriterTests.testSwiftWrittenFixtureIsCurrent), loads in Python with the expected values.
"""
import json
import os

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")
OUT = os.path.join(FIXTURES, "formats")


def pixel_value(x, y, c):
    """The pixel formula the Swift PNG tests recompute."""
    return (x * 37 + y * 91 + c * 53 + 7) % 256


def f16_cases():
    """Float32 values whose rounding to half is tricky: ties, subnormals, overflow, NaN-free."""
    g = torch.Generator().manual_seed(0)
    random = torch.randn(200, generator=g) * 3
    # Exact ties between two halves (1 + k/1024 + 1/2048) must round to even.
    ties = torch.tensor([1 + k / 1024 + 1 / 2048 for k in range(8)], dtype=torch.float64).float()
    special = torch.tensor([0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8,
                            1e-9, -3.0e-6, 1.0 / 3, float("inf"), float("-inf")])
    return torch.cat([random, ties, special])


def swift_written_expected():
    """What the Swift writer's fixture must contain (mirrors SafetensorsWriterTests)."""
    return {
        "weight": torch.tensor([[1.0, -2.0, 3.5], [0.25, 1e-3, -7.0]], dtype=torch.float32),
        "bias.half": torch.tensor([0.1, -0.2, 65504.0, 1e-7], dtype=torch.float32).half(),
        "codes": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
    }


def write_dtypes():
    e4m3 = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
    e5m2 = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e5m2)
    base = torch.tensor([[0.5, -1.25, 3.0], [100.0, -0.0078125, 7.75]])
    tensors = {
        "f32": base,
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "f64": base.double() / 3,
        "i64": torch.tensor([-(2 ** 40), -1, 0, 2 ** 40], dtype=torch.int64),
        "i32": torch.tensor([-(2 ** 31), -5, 0, 2 ** 31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-32768, 3, 32767], dtype=torch.int16),
        "i8": torch.tensor([[-128, -1], [0, 127]], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "f8_e4m3_all": e4m3,
        "f8_e5m2_all": e5m2,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "f16_rounding_source": f16_cases(),
        "f16_rounding_half": f16_cases().half(),
    }
    save_file(tensors, os.path.join(OUT, "python_dtypes.safetensors"), metadata={"format": "pt"})
    save_file({k: v.float() for k, v in tensors.items()}, os.path.join(OUT, "python_dtypes_f32.safetensors"))


def exact_ties(count):
    """float32 x with (x * 0.5 + 0.5) * 255 == k + 0.5 exactly, for spread-out k."""
    found = []
    for k in range(0, 255, 7):
        x = np.float32((k + 0.5) / 255 * 2 - 1)
        for _ in range(64):
            v = (x * np.float32(0.5) + np.float32(0.5)) * np.float32(255)
            if v == np.float32(k + 0.5):
                found.append(float(x))
                break
            x = np.nextafter(x, np.float32(2) if v < k + 0.5 else np.float32(-2), dtype=np.float32)
        if len(found) == count:
            break
    return torch.tensor(found, dtype=torch.float32)


def write_image_postprocess():
    from diffusers.image_processor import VaeImageProcessor
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 4, 5, generator=g) * 2.4 - 1.2)
    # Values that land exactly on .5 after *255 in float32 (ties, which numpy rounds to even) and the clamp edges.
    ties = exact_ties(20)
    x.view(-1)[:len(ties)] = ties
    x.view(-1)[20:24] = torch.tensor([-1.0, 1.0, -1.0000001, 1.0000001])
    images = VaeImageProcessor().postprocess(x, output_type="pil")
    pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images]))  # N, H, W, 3 uint8
    save_file({"input": x.contiguous(), "rgb": pixels.contiguous()}, os.path.join(OUT, "image_postprocess.safetensors"))


def write_pngs():
    w, h = 5, 3
    rgb = np.array([[[pixel_value(x, y, c) for c in range(3)] for x in range(w)] for y in range(h)], dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 2, Seed: 1")
    Image.fromarray(rgb, mode="RGB").save(os.path.join(OUT, "pil_rgb.png"), pnginfo=info)
    grey = np.array([[pixel_value(x, y, 0) for x in range(7)] for y in range(2)], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(os.path.join(OUT, "pil_grey.png"))


def write_model_summaries():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    classes = {"UNet2DConditionModel": UNet2DConditionModel, "AutoencoderKL": AutoencoderKL,
               "CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}
    summaries = {}
    for pipeline in ["tiny-sd15", "tiny-sdxl"]:
        root = os.path.join(FIXTURES, pipeline)
        index = json.load(open(os.path.join(root, "model_index.json")))
        components = {}
        for name, value in sorted(index.items()):
            if not isinstance(value, list) or value[1] not in classes:
                continue
            model = classes[value[1]].from_pretrained(os.path.join(root, name))
            weights = [f for f in os.listdir(os.path.join(root, name)) if f.endswith(".safetensors")][0]
            stored, dtypes = 0, set()
            with safe_open(os.path.join(root, name, weights), framework="pt") as f:
                for key in f.keys():
                    t = f.get_slice(key)
                    stored += int(np.prod(t.get_shape()))
                    dtypes.add(t.get_dtype())
            components[name] = {"class": value[1], "parameters": sum(p.numel() for p in model.parameters()),
                                "stored_elements": stored, "dtypes": sorted(dtypes)}
        summaries[pipeline] = components
    with open(os.path.join(OUT, "model_summaries.json"), "w") as f:
        json.dump(summaries, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(summaries, indent=1, sort_keys=True))


def check_swift_written():
    path = os.path.join(OUT, "swift_written.safetensors")
    if not os.path.exists(path):
        print("swift_written.safetensors not there yet: run swift test --filter SafetensorsWriterTests")
        return
    loaded = load_file(path)
    expected = swift_written_expected()
    assert set(loaded) == set(expected), (set(loaded), set(expected))
    for name, value in expected.items():
        assert loaded[name].dtype == value.dtype, (name, loaded[name].dtype, value.dtype)
        assert torch.equal(loaded[name], value), (name, loaded[name], value)
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "writer": "diffuse8"}, f.metadata()
    print("swift_written.safetensors loads in Python with the expected tensors and metadata")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_dtypes()
    write_image_postprocess()
    write_pngs()
    write_model_summaries()
    check_swift_written()


if __name__ == "__main__":
    main()
