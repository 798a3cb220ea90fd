"""Reference draws of torch's CPU generator for TorchGenerator's tests.

Records `torch.Generator("cpu").manual_seed(seed)` followed by `torch.randn(shape, generator=g)` (float32) for
several seeds and shapes, plus successive draws from one generator (the stream diffusers uses: latents, then
ancestral-sampler noise). Writes Tests/Fixtures/reference/rng.safetensors.

torch's float kernel for >= 16 elements depends on its CPU dispatch capability: AVX2 and AVX512 run the
avx_mathfun polynomials (rng.safetensors, recorded with the machine's capability, which must be one of those),
DEFAULT runs libm logf/cosf/sinf (rng_libm.safetensors, recorded in a subprocess with
ATEN_CPU_CAPABILITY=default). TorchGenerator's `.avx2` and `.libm` normal paths reproduce them.
"""
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "reference")

SEEDS = [0, 42, 2**32 + 5, 2**63 + 12345]
SHAPES = [[1], [7], [15], [16], [17], [100], [2, 4, 8, 8]]


def gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def record_libm():
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", "run with ATEN_CPU_CAPABILITY=default"
    tensors = {}
    for si, seed in enumerate(SEEDS[:2]):
        for shape in [[16], [17], [100], [2, 4, 8, 8]]:
            name = f"seed{si}_" + "x".join(map(str, shape))
            tensors[name] = torch.randn(shape, generator=gen(seed), dtype=torch.float32).contiguous()
    save_file(tensors, os.path.join(REFERENCE, "rng_libm.safetensors"),
              metadata={"recorded_with": f"torch {torch.__version__}, cpu capability DEFAULT"})


def main():
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability in ("AVX2", "AVX512"), f"record on an x86-64 CPU with AVX2/AVX512 (got {capability})"
    tensors = {}
    for si, seed in enumerate(SEEDS):
        for shape in SHAPES:
            name = f"seed{si}_" + "x".join(map(str, shape))
            tensors[name] = torch.randn(shape, generator=gen(seed), dtype=torch.float32).contiguous()
        # SDXL latent: keep head and tail only (the whole tensor is 256 KiB)
        big = torch.randn([1, 4, 128, 128], generator=gen(seed), dtype=torch.float32).flatten()
        tensors[f"seed{si}_1x4x128x128_head"] = big[:64].clone()
        tensors[f"seed{si}_1x4x128x128_tail"] = big[-64:].clone()
        # successive draws from one generator: sizes mixing the vectorised and the scalar (cached) paths
        g = gen(seed)
        for k, shape in enumerate([[2, 4, 8, 8], [2, 4, 8, 8], [3], [5], [17], [1]]):
            tensors[f"seed{si}_seq{k}"] = torch.randn(shape, generator=g, dtype=torch.float32).flatten().contiguous()
    # one metadata key: safetensors writes several in a random order, and the fixture must be reproducible
    meta = {"recorded_with": f"torch {torch.__version__}, cpu capability {capability}, seeds {SEEDS}"}
    save_file(tensors, os.path.join(REFERENCE, "rng.safetensors"), metadata=meta)
    # torch's AVX2 and AVX512 kernels draw the same floats (both run the avx_mathfun code); check it here.
    probe = "import torch; print(torch.randn([2, 4, 8, 8], generator=torch.Generator().manual_seed(42)).numpy().tobytes().hex())"
    outputs = {subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, ATEN_CPU_CAPABILITY=c), check=True,
                              capture_output=True, text=True).stdout for c in ("avx2", "avx512")}
    assert len(outputs) == 1, "torch's AVX2 and AVX512 randn differ: TorchGenerator's .avx2 path matches only one"
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--libm"], env=env, check=True)


if __name__ == "__main__":
    if "--libm" in sys.argv:
        record_libm()
    else:
        main()
