import ArgumentParser
import Diffuse8

/// `--precision`: the GPU storage type (`--device cuda`); the CPU always computes in FP32.
enum GPUPrecision: String, CaseIterable, ExpressibleByArgument {
    case fp16, bf16

    var storageType: CUDADataType { self == .bf16 ? .bfloat16 : .float16 }
}
