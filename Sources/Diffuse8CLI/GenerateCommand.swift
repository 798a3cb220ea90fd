import ArgumentParser
import Diffuse8
import Diffuse8PNG

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate an image from a text prompt (PNG with A1111-style parameters).")

    @Argument(help: "The prompt.")
    var prompt: String

    @Option(name: .long, help: "Negative prompt.")
    var negativePrompt: String?

    @Option(name: .long, help: "Denoising steps.")
    var steps: Int = 30

    @Option(name: .long, help: "Classifier-free guidance scale (≤ 1 disables guidance).")
    var cfg: Float = 7.5

    @Option(name: .long, help: "Seed of the torch-compatible CPU generator.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Image width in pixels (multiple of 8); default: the model's native size.")
    var width: Int?

    @Option(name: .long, help: "Image height in pixels (multiple of 8); default: the model's native size.")
    var height: Int?

    @Option(name: .long, help: "Sampler: \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scheduler: String = SchedulerKind.euler.rawValue

    @Option(name: .long, help: "Number of images, with seeds seed, seed+1, …")
    var batchCount: Int = 1

    @Option(name: .long, help: "A diffusers model folder or a single-file SD1.x/SDXL .safetensors checkpoint; default: the embedded default model.")
    var model: String?

    @Option(name: .long, help: "With a single-file --model: a diffusers folder of the same family for configurations, tokenizers and scheduler.")
    var config: String?

    @Option(name: .shortAndLong, help: "Output PNG path (with several images: NAME-1.png, NAME-2.png, …).")
    var output: String = "out.png"

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Where the networks run: cpu (FP32) or cuda (FP16 on an NVIDIA GPU, see docs/GPU.md).")
    var device: ComputeDevice = .cpu

    @Option(name: .long, help: "With --device cuda: fp16 (default) or bf16 storage (FP32 arithmetic either way).")
    var precision: GPUPrecision = .fp16

    func validate() throws {
        guard SchedulerKind(rawValue: scheduler) != nil else {
            throw ValidationError("unknown scheduler '\(scheduler)'; choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        try OptionLimits.seeds(seed, count: batchCount, "--batch-count")
        try OptionLimits.steps(steps)
        try OptionLimits.guidance(cfg)
        try OptionLimits.side(width, "--width")
        try OptionLimits.side(height, "--height")
        if let threads, !(1...OptionLimits.maximumThreads).contains(threads) {
            throw ValidationError("--threads \(threads) is outside 1...\(OptionLimits.maximumThreads)")
        }
        if precision != .fp16 && device != .cuda { throw ValidationError("--precision applies to --device cuda (the CPU computes in FP32)") }
        guard output.lowercased().hasSuffix(".png") else { throw ValidationError("--output must end in .png, got '\(output)'") }
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        let outputs = (1...batchCount).map { batchCount == 1 ? output : OutputPaths.numbered(output, $0) }
        for path in outputs { try OutputPaths.checkWritable(path) }

        let directory = try model ?? DefaultModel.locate()
        FileHandleStderr.write("loading \(directory) (\(device.rawValue))\n")
        let pipeline = try StableDiffusionPipeline(directory: directory, configDirectory: config, device: device, precision: precision.storageType)
        let kind = SchedulerKind(rawValue: scheduler)!
        for (index, path) in outputs.enumerated() {
            let request = GenerationRequest(
                prompt: prompt, negativePrompt: negativePrompt, steps: steps, guidanceScale: cfg,
                seed: seed + UInt64(index), width: width, height: height, scheduler: kind)
            try pipeline.validate(request)
            var bar = ProgressBar(label: batchCount > 1 ? "image \(index + 1)/\(batchCount)" : "")
            bar.restart()
            let result = try pipeline.generate(request) { bar.update(step: $0.step, of: $0.totalSteps) }
            for warning in result.warnings { FileHandleStderr.write("warning: \(warning)\n") }
            let t = result.timings
            FileHandleStderr.write("time \(Self.seconds(t.total)) s: text \(Self.seconds(t.encode)) s, denoise \(Self.seconds(t.denoise)) s, decode \(Self.seconds(t.decode)) s\n")
            let image = ImageConversion.pixelImages(fromDecoded: result.image)[0]
            let parameters = A1111Parameters(request: request, width: image.width, height: image.height,
                                              model: directory.split(separator: "/").last.map(String.init) ?? directory)
            try PNGEncoder.write(image, text: [("parameters", parameters.text)], to: path)
            print(path)
        }
    }

    static func seconds(_ v: Double) -> String { String((v * 1000).rounded() / 1000) }
}

extension ComputeDevice: ExpressibleByArgument {}
