// diffuse8-cuda-selftest: the GPU tests (and benchmark) as a small stand-alone binary that needs no
// argument parser, so it can be built statically and copied to a GPU machine. Same as `diffuse8 cuda-selftest`.
import Diffuse8
#if canImport(Glibc)
import Glibc
#endif

let arguments = Set(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") {
    print("""
    usage: diffuse8-cuda-selftest [--large] [--bench] [--bench-only]
      runs every CUDA kernel on random data and compares it with the CPU reference kernels
      --large       add 4096-token attention checks (slower CPU reference)
      --bench       also time GEMMs, attention and UNet blocks at model shapes
      --bench-only  only the benchmark
    exit status: 0 all passed, 1 a check failed, 2 no CUDA GPU/driver/library
    """)
    exit(0)
}
let code = CUDASelfTest.runReport(tests: !arguments.contains("--bench-only"), large: arguments.contains("--large"),
                                  benchmark: arguments.contains("--bench") || arguments.contains("--bench-only"))
exit(code.rawValue)
