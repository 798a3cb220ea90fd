import ArgumentParser
import Diffuse8
import Diffuse8Checks

/// `diffuse8 bench`: UNet forward-pass latency on the CPU or the GPU (or the CPU kernels alone), with the inputs a
/// text-to-image step feeds the UNet, or (`--generate`) whole text-to-image generations. Prints one JSON object
/// per measurement. See bench/README.md for the PyTorch comparison and docs/PERFORMANCE.md for measured numbers.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time UNet forward passes (or the CPU kernels) and print the median/min/max in ms as JSON.")

    @Option(name: .long, help: "A diffusers model folder (its unet/ is timed) or a unet folder.")
    var model: String?

    @Option(name: .long, help: "Batch size (2 = one classifier-free-guidance step).")
    var batch: Int = 2

    @Option(name: .long, help: "Latent height and width; default: the UNet config's sample_size.")
    var latent: Int?

    @Option(name: .long, help: "Untimed warm-up runs.")
    var warmup: Int = 1

    @Option(name: .long, help: "Timed runs (the median is reported).")
    var iterations: Int = 5

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    @Flag(name: .long, help: "Time the CPU kernels (GEMM, conv, attention, norms) at SD1.5 shapes instead of a UNet.")
    var kernels = false

    @Option(name: .long, help: "With --kernels: only the kernels whose name contains this text (e.g. winograd).")
    var only: String?

    @Flag(name: .long, help: "With --kernels: the 32×32 shapes instead of 64×64 (a quicker run).")
    var quick = false

    @Option(name: .long, help: "Where the UNet runs: cpu (FP32) or cuda (FP16, CUDA events, eager and CUDA-graph timings).")
    var device: ComputeDevice = .cpu

    @Flag(name: .long, help: "With --device cuda: per layer, the kernel that ran, whether it ran in 8 bit, and its time (one extra forward).")
    var explain = false

    @Option(name: .long, help: "With --device cuda: fp16 (default) or bf16 storage.")
    var precision: GPUPrecision = .fp16

    @Flag(name: .long, help: "Time whole text-to-image generations (text encoders, denoising loop, VAE) instead of one UNet call.")
    var generate = false

    @Option(name: .long, help: "With --generate: denoising steps.")
    var steps: Int = 30

    @Option(name: .long, help: "With --generate: image width and height in pixels; default: the model's native size.")
    var size: Int?

    @Option(name: .long, help: "With --generate: sampler, one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scheduler: String = SchedulerKind.euler.rawValue

    @Flag(name: .long, help: "With --generate --device cuda: step the scheduler on the host (to time what the on-device loop saves).")
    var hostLoop = false

    func validate() throws {
        guard SchedulerKind(rawValue: scheduler) != nil else {
            throw ValidationError("unknown scheduler '\(scheduler)'; choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard kernels || model != nil else { throw ValidationError("Give --model <folder> or --kernels.") }
        guard !explain || (device == .cuda && !generate) else { throw ValidationError("--explain needs --device cuda (and no --generate)") }
        guard (1...64).contains(batch), (1...10_000).contains(iterations), (0...1000).contains(warmup) else {
            throw ValidationError("--batch must be in 1...64, --iterations in 1...10000, --warmup in 0...1000")
        }
        if let latent, !(1...ModelLimits.maximumSampleSize).contains(latent) {
            throw ValidationError("--latent \(latent) is outside 1...\(ModelLimits.maximumSampleSize)")
        }
        try OptionLimits.steps(steps)
        try OptionLimits.side(size, "--size")
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        if kernels {
            for entry in KernelBenchmark.run(iterations: iterations, quick: quick, only: only) {
                print(entry.result.json.dropLast() + ", \"gflops_per_s\": \(Int(entry.gflopsPerSecond))}")
            }
            return
        }
        guard let model else { return }
        if generate {
            var request = GenerationRequest(prompt: "a photo of an astronaut riding a horse", steps: steps, guidanceScale: batch > 1 ? 5 : 1,
                                            seed: 0, width: size, height: size)
            request.scheduler = SchedulerKind(rawValue: scheduler) ?? .euler
            let timing = try CUDAPipelineCheck.generationBenchmark(directory: model, device: device, precision: precision.storageType,
                                                                   request: request, warmup: warmup,
                                                                   repeats: iterations, hostLoop: hostLoop) { FileHandleStderr.write($0 + "\n") }
            print(timing.json)
            return
        }
        if SingleFileCheckpoint.isFile(model) {
            throw ValidationError("\(model) is a single-file checkpoint; the UNet benchmark reads a diffusers or unet folder (bench --generate takes the file)")
        }
        let unetFolder = fileExists(model + "/unet/config.json") ? model + "/unet" : model
        guard fileExists(unetFolder + "/config.json") else {
            throw ValidationError("\(model): no config.json here or in \(model)/unet — pass a diffusers folder or a unet folder.")
        }
        if device == .cuda {
            let latentSize = try latent ?? UNetConfiguration(contentsOf: unetFolder + "/config.json").sampleSize ?? 64
            let kernels = try CUDAKernels(storageType: precision.storageType)
            let timing = try CUDAUNetCheck.benchmark(directory: unetFolder, kernels: kernels, batch: batch, height: latentSize,
                                                     width: latentSize, warmup: max(warmup, 1), repeats: iterations, explain: explain)
            if let report = timing.layerReport { print(CUDAUNetCheck.explain(report)) }
            FileHandleStderr.write("first forward \(FidelityEvaluation.fixed(timing.firstForwardSeconds, digits: 1)) s; \(kernels.context.tuning.summary)\n")
            print(timing.json)
            return
        }
        let benchmark = try UNetBenchmark(directory: unetFolder)
        let report = benchmark.run(UNetBenchmark.Options(batch: batch, latentSize: latent, warmup: warmup, iterations: iterations))
        print(report.json)
    }

    private func fileExists(_ path: String) -> Bool {
        guard let file = fopen(path, "r") else { return false }
        fclose(file)
        return true
    }
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
