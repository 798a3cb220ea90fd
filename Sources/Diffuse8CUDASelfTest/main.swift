// diffuse8-cuda-selftest: the GPU tests (and benchmark) as a small stand-alone binary that needs no
// argument parser, so it can be built statically and copied to a GPU machine. Same as `diffuse8 cuda-selftest`,
// plus the whole-UNet modes (`--unet`, `--unet-bench`).
import Diffuse8
import Diffuse8Checks
#if canImport(Glibc)
import Glibc
#endif

let argumentList = Array(CommandLine.arguments.dropFirst())
let arguments = Set(argumentList)
if arguments.contains("--help") || arguments.contains("-h") {
    print("""
    usage: diffuse8-cuda-selftest [--large] [--only TEXT] [--bench] [--bench-only] [--bench-parts PART,...]
           diffuse8-cuda-selftest --unet DIR[:HxW] ...
           diffuse8-cuda-selftest --unet-bench DIR [--size HxW] [--reference FILE.safetensors] [--repeats N] [--no-graph] [--profile]
                                  [--quantize FORMAT:LEVEL] [--explain]
           diffuse8-cuda-selftest --text DIR ... | --pipeline DIR[:STEPS] ... | --vae DIR ... | --mixed-precision DIR ...
           diffuse8-cuda-selftest --calibrate DIR ... | --trajectory DIR[:STEPS[:SCHEDULER]] ...
           diffuse8-cuda-selftest --generate-bench DIR [--size HxW] [--steps N] [--repeats N] [--scheduler NAME] [--host-loop]
           (the whole-model modes take --bf16: BF16 storage instead of FP16)
      runs every CUDA kernel on random data and compares it with the CPU reference kernels
      --large       add 4096-token attention checks (slower CPU reference)
      --only TEXT   only the checks whose name contains TEXT, ignoring case (e.g. "layernorm", "8-bit GEGLU")
      --bench       also time GEMMs, attention and UNet blocks at model shapes
      --bench-only  only the benchmark
      --bench-parts only these parts of the benchmark: \(CUDABenchmark.Part.allCases.map(\.rawValue).joined(separator: ", "))
      --unet        FP16 CUDAUNet vs FP32 CPU UNet on each diffusers unet folder (batch 2, latents HxW,
                    default 16x16), limit 5e-3 relative L2
      --unet-bench  time CUDAUNet.forward (batch 2, default 64x64 latents, 77 tokens); prints one JSON line;
                    --reference takes its inputs and compares with its `output`; also times the forward
                    replayed as a CUDA graph unless --no-graph; --profile: ms per operation kind; --quantize int8:3 or
                    fp8:4: quantize the UNet first (recommended recipe, scales from 4 GPU forwards on random inputs: for
                    speed runs of random-weight models); --explain: per layer, the kernel, whether it ran in 8 bit, ms;
                    --separate-quantize: 8-bit inputs quantized in their own pass, not by LayerNorm/GEGLU;
                    --our-fp8-attention: level-4 self-attention through our kernel, not cuDNN's FP8 attention;
                    --rounded-qkv: level-4 Q/K/V that feed cuDNN's FP8 attention are rounded to their FP8 grids first,
                    not left to its quantize pass (every mode: DIFFUSE8_SKIP_QKV_ROUNDING=off);
                    DIFFUSE8_WGMMA_FP8_ATTENTION=on (every mode): that attention through our wgmma kernel, not cuDNN's;
                    --versus wgmma-attention|cudnn-attention|rounded-qkv|cudnn-convolution|geglu-quantize-pass|
                    qkv-quantize-pass|attention-quantize-pass|flash-cross-attention|single-half-transpose|
                    groupnorm-quantize-pass|proj-in-quantize-pass|upsample-quantize-pass|single-item-quantize-pass|
                    resnet-epilogue-passes|serial-launches (several joined by +): then that change too
                    (cudnn-convolution: 8-bit convolutions without our implicit-GEMM kernel; geglu-quantize-pass: the
                    fused GEGLU writes 16 bit and the FF output layer's quantize pass follows; qkv-quantize-pass: level
                    4's Q/K/V stacks write 16 bit and the FP8 attention's quantize pass follows; attention-quantize-pass:
                    level 4's FP8-probability attention kernels write 16 bit and `to_out.0`'s quantize pass follows;
                    flash-cross-attention: attention over at most 128 keys chooses among the flash kernels and cuDNN's,
                    without the short-key kernel; single-half-transpose: tokens go back to NCHW (8-bit convolutions'
                    results, proj_out) through 32×32 tiles of single halves, not the paired 64×64 form;
                    groupnorm-quantize-pass: GroupNorms write 16 bit and the 8-bit convolution's transposing
                    quantize pass, or proj_in's transpose and quantize pass, follow; proj-in-quantize-pass: only the
                    latter; upsample-quantize-pass: the upsamplers write their 16-bit result and the convolution's
                    transposing quantize pass follows; single-item-quantize-pass: each thread of the quantize pass
                    takes one item of eight values, not two; resnet-epilogue-passes: a resnet's time embedding and output are added in
                    passes of their own after its 8-bit convolutions; serial-launches: no kernel starts before the previous
                    one has ended), its graph and the first replayed in turn (both medians from
                    the same rounds); with
                    --unet, the parity check runs with that change instead
      --text        CUDA vs CPU text encoder(s) of each diffusers folder (limit 5e-3 relative L2)
      --pipeline    one image per folder, DIR[:STEPS[:SCHEDULER[:IMAGES]]] (default 20 steps, Euler, CFG 5, seed 0;
                    IMAGES: seeds 0..<IMAGES, judged by their mean PSNR) on the CPU (FP32) and the GPU (FP16): PSNR of
                    the GPU image vs the CPU image must be ≥ 40 dB (quantized folders: 35 dB), and the on-device
                    sampling loop must agree with host stepping
      --vae         CUDA vs CPU VAE decoder of each diffusers vae/ folder, plus GEMM attention checks
      --calibrate   calibration statistics (3 prompts x 8 steps) on the CPU and on the GPU: same layers, keys and
                    counts, amax and sampled rows within 1e-2 relative L2
      --trajectory  the CPU's denoising steps replayed through the CUDA UNet (per-step rel. L2, UNet limit) and
                    the GPU's host-stepped trajectory vs the CPU's at every step: where an image parts from the CPU's
      --mixed-precision  an FP16 and a BF16 pipeline of each folder in one process, used in turn: both images
                    ≥ 40 dB vs the CPU image, and the FP16 image unchanged after the BF16 pipeline ran
      --generate-bench  end-to-end text-to-image time on the GPU (default native size, 30 steps, 5 runs); JSON line
    exit status: 0 all passed, 1 a check failed, 2 no CUDA GPU/driver/library
    """)
    exit(0)
}

func value(after flag: String) -> String? {
    guard let i = argumentList.firstIndex(of: flag), i + 1 < argumentList.count else { return nil }
    return argumentList[i + 1]
}
/// HxW, each in 1...`limit` (latents by default), nil when absent; exits with a message when malformed.
func size(_ text: String?, limit: Int = ModelLimits.maximumSampleSize) -> (Int, Int)? {
    guard let text else { return nil }
    let parts = text.split(separator: "x")
    guard parts.count == 2, let h = Int(parts[0]), let w = Int(parts[1]), [h, w].allSatisfy({ (1...limit).contains($0) }) else {
        print("a size takes HxW, each in 1...\(limit), got \(text)")
        exit(1)
    }
    return (h, w)
}

/// `--repeats N` (1…10000), or `fallback` when absent; exits with a message when out of range.
func repeats(default fallback: Int) -> Int {
    guard let text = value(after: "--repeats") else { return fallback }
    guard let n = Int(text), (1...10_000).contains(n) else {
        print("--repeats takes a count in 1...10000, got \(text)")
        exit(1)
    }
    return n
}

/// The operands after `flag` up to the next flag.
func operands(after flag: String) -> [String] {
    guard let i = argumentList.firstIndex(of: flag) else { return [] }
    return Array(argumentList[(i + 1)...].prefix { !$0.hasPrefix("--") })
}

let precision: CUDADataType = arguments.contains("--bf16") ? .bfloat16 : .float16
if ["--text", "--pipeline", "--vae", "--generate-bench", "--mixed-precision", "--calibrate", "--trajectory"].contains(where: arguments.contains) {
    let kernels: CUDAKernels
    do { kernels = try CUDAKernels(storageType: precision) } catch {
        print("no CUDA GPU: \(error)")
        exit(CUDASelfTest.ExitCode.noCUDA.rawValue)
    }
    print("device    \(kernels.context.deviceName)")
    var failed = false
    func report(_ line: String, passed: Bool) {
        failed = failed || !passed
        print(line + (passed ? " ok" : " FAIL"))
        fflush(stdout)
    }
    let prompts = ["a large red circle above a small blue square on a white background", "", "a photo of an astronaut riding a horse"]
    for directory in operands(after: "--text") {
        let encoders = [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")].filter {
            fopen(directory + "/" + $0.0 + "/config.json", "r").map { fclose($0); return true } ?? false
        }
        for (encoder, tokenizer) in encoders {
            do {
                let p = try CUDAPipelineCheck.textParity(directory: directory, encoder: encoder, tokenizer: tokenizer, prompts: prompts, kernels: kernels)
                report("text parity \(p.directory): rel. L2 last \(p.last), penultimate \(p.penultimate), pooled \(p.pooled) (limit \(p.limit))", passed: p.passed)
            } catch { report("text parity \(directory)/\(encoder): \(error)", passed: false) }
        }
    }
    /// DIR[:STEPS[:SCHEDULER]] → the folder and its request (20 steps, Euler, CFG 5, seed 0 by default); nil for an
    /// unknown scheduler.
    func folderRequest(_ spec: String) -> (directory: String, request: GenerationRequest)? {
        let parts = spec.split(separator: ":").map(String.init)
        let steps = parts.count > 1 ? Int(parts[1]) ?? 0 : 20
        guard (1...ModelLimits.maximumSteps).contains(steps) else { return nil }
        var request = GenerationRequest(prompt: prompts[0], steps: steps, guidanceScale: 5, seed: 0)
        if parts.count > 2 {
            guard let kind = SchedulerKind(argument: parts[2]) else { return nil }
            request.scheduler = kind
        }
        return (parts[0], request)
    }
    for spec in operands(after: "--pipeline") {
        guard let (directory, request) = folderRequest(spec) else { report("image parity \(spec): expected DIR[:STEPS[:SCHEDULER[:IMAGES]]], steps in 1...\(ModelLimits.maximumSteps)", passed: false); continue }
        let parts = spec.split(separator: ":")
        let images = parts.count > 3 ? Int(parts[3]) ?? 0 : 1
        guard (1...64).contains(images) else { report("image parity \(spec): IMAGES must be in 1...64", passed: false); continue }
        let requests = (0..<images).map { seed in var r = request; r.seed = UInt64(seed); return r }
        do {
            let results = try CUDAPipelineCheck.imageParity(directory: directory, requests: requests, precision: precision)
            for (p, r) in zip(results, requests) {
                report("image parity \(p.directory) \(p.size.width)x\(p.size.height), \(r.steps) steps \(r.scheduler.rawValue), seed \(r.seed): PSNR \(p.psnr) dB (limit \(p.limit)), latents rel. L2 \(p.latentRelativeL2)"
                       + (p.deviceLoopVersusHostLoop.map { ", on-device vs host loop latents rel. L2 \($0) (limit \(p.deviceLoopLimit))" } ?? ""),
                       passed: images > 1 ? (p.deviceLoopVersusHostLoop ?? 0) <= p.deviceLoopLimit : p.passed)
            }
            if images > 1 {
                let mean = results.map(\.psnr).reduce(0, +) / Double(images), limit = results[0].limit
                report("image parity \(directory), mean of \(images) seeds: PSNR \(mean) dB (limit \(limit); lowest \(results.map(\.psnr).min() ?? 0))",
                       passed: mean >= limit)
            }
        } catch { report("image parity \(directory): \(error)", passed: false) }
    }
    for spec in operands(after: "--trajectory") {
        guard let (directory, request) = folderRequest(spec) else { report("trajectory \(spec): expected DIR[:STEPS[:SCHEDULER]], steps in 1...\(ModelLimits.maximumSteps)", passed: false); continue }
        do {
            let r = try CUDATrajectoryCheck.run(directory: directory, request: request, precision: precision)
            for s in r.steps {
                print("  step \(s.index) t=\(s.timestep): CUDA vs CPU UNet on the CPU input rel. L2 \(s.unetRelativeL2), GPU vs CPU trajectory input rel. L2 \(s.trajectoryRelativeL2)")
            }
            report("trajectory \(r.directory) \(request.steps) steps \(request.scheduler.rawValue): worst per-step UNet rel. L2 \(r.worstUNetStep) (limit \(r.limit)), "
                   + "final latents GPU vs CPU rel. L2 \(r.finalGap); CPU with UNet noise of the GPU's per-step size vs CPU \(r.perturbedCPUFinalGap)",
                   passed: r.passed)
        } catch { report("trajectory \(directory): \(error)", passed: false) }
    }
    for directory in operands(after: "--calibrate") {
        var options = CalibrationOptions(steps: 8)
        options.guidanceScale = 5
        let calibrationPrompts = [prompts[0], "a small green triangle left of a large yellow circle", prompts[2]]
        do {
            let p = try CUDAPipelineCheck.calibrationParity(directory: directory, prompts: calibrationPrompts, options: options, precision: precision)
            report("calibration parity \(directory): \(p.layers) layers, amax rel. L2 \(p.amaxRelativeL2), rows rel. L2 \(p.rowsRelativeL2) "
                   + "(limit \(CUDAPipelineCheck.CalibrationParity.limit)), same layers/keys/counts \(p.sameStructure); CPU \(p.cpuSeconds) s, GPU \(p.gpuSeconds) s",
                   passed: p.passed)
        } catch { report("calibration parity \(directory): \(error)", passed: false) }
    }
    for directory in operands(after: "--mixed-precision") {
        let request = GenerationRequest(prompt: prompts[0], steps: 20, guidanceScale: 5, seed: 0)
        do {
            let r = try CUDAPipelineCheck.mixedPrecision(directory: directory, request: request)
            report("mixed precision \(directory): FP16 \(r.fp16) dB, BF16 \(r.bf16) dB vs CPU (limit \(CUDAPipelineCheck.imagePSNRLimit)), "
                   + "FP16 repeated after BF16 identical: \(r.repeatIdentical)",
                   passed: r.fp16 >= CUDAPipelineCheck.imagePSNRLimit && r.bf16 >= CUDAPipelineCheck.imagePSNRLimit && r.repeatIdentical)
        } catch { report("mixed precision \(directory): \(error)", passed: false) }
    }
    let vaeDirectories = operands(after: "--vae")
    if arguments.contains("--vae") {
        for r in CUDASelfTest.vaeChecks(kernels: kernels, directories: vaeDirectories) {
            report("\(r.name) \(r.shape): rel. L2 \(r.relativeL2) (limit \(r.threshold))" + (r.nonFinite > 0 ? ", \(r.nonFinite) non-finite" : "")
                   + (r.error.map { " error: \($0)" } ?? ""), passed: r.passed)
        }
    }
    if let directory = value(after: "--generate-bench") {
        let (h, w) = size(value(after: "--size"), limit: ModelLimits.maximumImageSide) ?? (0, 0)
        let steps = Int(value(after: "--steps") ?? "30") ?? 0
        guard (1...ModelLimits.maximumSteps).contains(steps) else {
            print("--steps takes a count in 1...\(ModelLimits.maximumSteps), got \(value(after: "--steps") ?? "")")
            exit(1)
        }
        var request = GenerationRequest(prompt: prompts[2], steps: steps, guidanceScale: 5, seed: 0,
                                        width: w > 0 ? w : nil, height: h > 0 ? h : nil)
        if let name = value(after: "--scheduler") {
            guard let kind = SchedulerKind(argument: name) else { print("unknown scheduler \(name)"); exit(1) }
            request.scheduler = kind
        }
        do {
            let timing = try CUDAPipelineCheck.generationBenchmark(directory: directory, precision: precision, request: request,
                                                                   repeats: repeats(default: 5),
                                                                   hostLoop: arguments.contains("--host-loop")) { print($0); fflush(stdout) }
            print("GENERATE_BENCH " + timing.json)
        } catch { report("generation benchmark \(directory): \(error)", passed: false) }
    }
    exit(failed ? 1 : 0)
}

if arguments.contains("--unet") || arguments.contains("--unet-bench") {
    // --versus NAME[+NAME…]: the benchmark's second graph, or the parity check's only configuration
    var alternative: CUDAUNetCheck.Alternative?
    if let names = value(after: "--versus") {
        var changes: [(CUDABackend) -> Void] = []
        for name in names.split(separator: "+").map(String.init) {
            switch name {
            case "wgmma-attention": changes.append { $0.usesWGMMAFP8Attention = true }
            case "cudnn-attention": changes.append { $0.usesWGMMAFP8Attention = false }
            case "rounded-qkv": changes.append { $0.skipsQKVRoundingForCuDNN = false }
            case "cudnn-convolution": changes.append { $0.usesWGMMAConvolutions = false }
            case "geglu-quantize-pass": changes.append { $0.gegluWritesCodes = false }
            case "qkv-quantize-pass": changes.append { $0.qkvWritesAttentionCodes = false }
            case "attention-quantize-pass": changes.append { $0.attentionWritesCodes = false }
            case "single-half-transpose": changes.append { $0.kernels.pairedTransposeDisabled = true }
            case "flash-cross-attention": changes.append { $0.kernels.shortKeyAttentionDisabled = true }
            case "groupnorm-quantize-pass": changes.append { $0.groupNormWritesCodes = false; $0.groupNormWritesTokenCodes = false }
            case "proj-in-quantize-pass": changes.append { $0.groupNormWritesTokenCodes = false }
            case "upsample-quantize-pass": changes.append { $0.upsampleWritesCodes = false }
            case "single-item-quantize-pass": changes.append { $0.kernels.quantizePassItemsPerThread = 1 }
            case "resnet-epilogue-passes": changes.append { $0.fusesResnetEpilogues = false }
            case "serial-launches": changes.append { $0.kernels.compiler.overlapsLaunches = false }
            default:
                print("--versus takes wgmma-attention, cudnn-attention, rounded-qkv, cudnn-convolution, geglu-quantize-pass, qkv-quantize-pass, attention-quantize-pass, flash-cross-attention, single-half-transpose, groupnorm-quantize-pass, proj-in-quantize-pass, upsample-quantize-pass, single-item-quantize-pass, resnet-epilogue-passes or serial-launches (several joined by +), got \(name)")
                exit(1)
            }
        }
        alternative = .init(label: names) { backend in changes.forEach { $0(backend) } }
    }
    let kernels: CUDAKernels
    do { kernels = try CUDAKernels(storageType: precision) } catch {
        print("no CUDA GPU: \(error)")
        exit(CUDASelfTest.ExitCode.noCUDA.rawValue)
    }
    print("device    \(kernels.context.deviceName)")
    if let directory = value(after: "--unet-bench") {
        let (h, w) = size(value(after: "--size")) ?? (64, 64)
        do {
            var recipe: QuantizationRecipe?
            if let spec = value(after: "--quantize") {
                // FORMAT:LEVEL, e.g. int8:3 or fp8:4 (the recommended recipe otherwise).
                let parts = spec.split(separator: ":").map(String.init)
                guard parts.count == 2, let format = QuantizedFormat(rawValue: parts[0]) else {
                    print("--quantize takes FORMAT:LEVEL (int8:3, fp8:4), got \(spec)")
                    exit(1)
                }
                var r = QuantizationRecipe.recommended(for: format)
                r.level = try QuantizationLevel(parsing: parts[1])
                recipe = r
            }
            let timing = try CUDAUNetCheck.benchmark(directory: directory, kernels: kernels, height: h, width: w,
                                                     reference: value(after: "--reference"),
                                                     repeats: repeats(default: 20),
                                                     graph: !arguments.contains("--no-graph"),
                                                     profile: arguments.contains("--profile"), quantize: recipe,
                                                     explain: arguments.contains("--explain"),
                                                     quantizesInProducers: !arguments.contains("--separate-quantize"),
                                                     cudnnFP8Attention: !arguments.contains("--our-fp8-attention"),
                                                     unroundedQKV: !arguments.contains("--rounded-qkv") && CUDABackend.skipsQKVRoundingDefault,
                                                     alternative: alternative)
            if let report = timing.layerReport { print(CUDAUNetCheck.explain(report)) }
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
            let p = try CUDAUNetCheck.parity(directory: spec[0], kernels: kernels, height: h, width: w, alternative: alternative)
            failed = failed || !p.passed
            print("unet parity \(spec[0]) \(p.inputShape)\(alternative.map { " (\($0.label))" } ?? ""): rel. L2 \(p.relativeL2) (limit \(p.limit))"
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

var benchmarkParts = Set(CUDABenchmark.Part.allCases)
if arguments.contains("--bench-parts") {
    let list = value(after: "--bench-parts") ?? ""
    let names = list.split(separator: ",").map(String.init)
    let unknown = names.filter { CUDABenchmark.Part(rawValue: $0) == nil }
    guard !names.isEmpty, unknown.isEmpty else {
        print("--bench-parts takes a comma-separated list of \(CUDABenchmark.Part.allCases.map(\.rawValue).joined(separator: ", ")), got \(list)")
        exit(1)
    }
    benchmarkParts = Set(names.compactMap(CUDABenchmark.Part.init(rawValue:)))
}
if arguments.contains("--only") && (value(after: "--only") ?? "").isEmpty {
    print("--only takes a text that the names of the checks to run contain, e.g. --only LayerNorm")
    exit(1)
}
let code = CUDASelfTest.runReport(tests: !arguments.contains("--bench-only"), large: arguments.contains("--large"),
                                  only: arguments.contains("--only") ? value(after: "--only") : nil,
                                  benchmark: arguments.contains("--bench") || arguments.contains("--bench-only"),
                                  benchmarkParts: benchmarkParts)
exit(code.rawValue)
