// diffuse8-cuda-selftest: the GPU tests (and benchmark) as a small stand-alone binary that needs no
// argument parser, so it can be built statically and copied to a GPU machine. Same as `diffuse8 cuda-selftest`,
// plus the whole-UNet modes (`--unet`, `--unet-bench`).
import Diffuse8
#if canImport(Glibc)
import Glibc
#endif

let argumentList = Array(CommandLine.arguments.dropFirst())
let arguments = Set(argumentList)
if arguments.contains("--help") || arguments.contains("-h") {
    print("""
    usage: diffuse8-cuda-selftest [--large] [--bench] [--bench-only]
           diffuse8-cuda-selftest --unet DIR[:HxW] ...
           diffuse8-cuda-selftest --unet-bench DIR [--size HxW] [--reference FILE.safetensors] [--repeats N] [--no-graph] [--profile]
      runs every CUDA kernel on random data and compares it with the CPU reference kernels
      --large       add 4096-token attention checks (slower CPU reference)
      --bench       also time GEMMs, attention and UNet blocks at model shapes
      --bench-only  only the benchmark
      --unet        FP16 CUDAUNet vs FP32 CPU UNet on each diffusers unet folder (batch 2, latents HxW,
                    default 16x16), limit 5e-3 relative L2
      --unet-bench  time CUDAUNet.forward (batch 2, default 64x64 latents, 77 tokens); prints one JSON line;
                    --reference takes its inputs and compares with its `output`; also times the forward
                    replayed as a CUDA graph unless --no-graph; --profile: ms per operation kind
    exit status: 0 all passed, 1 a check failed, 2 no CUDA GPU/driver/library
    """)
    exit(0)
}

func value(after flag: String) -> String? {
    guard let i = argumentList.firstIndex(of: flag), i + 1 < argumentList.count else { return nil }
    return argumentList[i + 1]
}
func size(_ text: String?) -> (Int, Int)? {
    guard let parts = text?.split(separator: "x"), parts.count == 2, let h = Int(parts[0]), let w = Int(parts[1]) else { return nil }
    return (h, w)
}

if arguments.contains("--unet") || arguments.contains("--unet-bench") {
    let kernels: CUDAKernels
    do { kernels = try CUDAKernels() } catch {
        print("no CUDA GPU: \(error)")
        exit(CUDASelfTest.ExitCode.noCUDA.rawValue)
    }
    print("device    \(kernels.context.deviceName)")
    if let directory = value(after: "--unet-bench") {
        let (h, w) = size(value(after: "--size")) ?? (64, 64)
        do {
            let timing = try CUDAUNetCheck.benchmark(directory: directory, kernels: kernels, height: h, width: w,
                                                     reference: value(after: "--reference"),
                                                     repeats: Int(value(after: "--repeats") ?? "") ?? 20,
                                                     graph: !arguments.contains("--no-graph"),
                                                     profile: arguments.contains("--profile"))
            print("UNET_BENCH " + timing.json)
            exit(0)
        } catch {
            print("unet benchmark failed: \(error)")
            exit(1)
        }
    }
    var failed = false
    var index = argumentList.firstIndex(of: "--unet")! + 1
    while index < argumentList.count, !argumentList[index].hasPrefix("--") {
        let spec = argumentList[index].split(separator: ":", maxSplits: 1).map(String.init)
        let (h, w) = size(spec.count > 1 ? spec[1] : nil) ?? (16, 16)
        let start = CUDAKernelCompiler.now()
        do {
            let p = try CUDAUNetCheck.parity(directory: spec[0], kernels: kernels, height: h, width: w)
            failed = failed || !p.passed
            print("unet parity \(spec[0]) \(p.inputShape): rel. L2 \(p.relativeL2) (limit \(CUDAUNetCheck.parityLimit))"
                  + (p.nonFinite > 0 ? ", \(p.nonFinite) non-finite" : "") + (p.passed ? " ok" : " FAIL")
                  + " [\(Int(CUDAKernelCompiler.now() - start)) s]")
        } catch {
            failed = true
            print("unet parity \(spec[0]) FAIL: \(error)")
        }
        fflush(stdout)
        index += 1
    }
    exit(failed ? 1 : 0)
}

let code = CUDASelfTest.runReport(tests: !arguments.contains("--bench-only"), large: arguments.contains("--large"),
                                  benchmark: arguments.contains("--bench") || arguments.contains("--bench-only"))
exit(code.rawValue)
