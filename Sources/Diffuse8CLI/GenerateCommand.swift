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

    @Option(name: .long, help: "With a single-file --model: a diffusers folder of the same family whose configurations, tokenizers and scheduler replace the family's reference ones (models/configs).")
    var config: String?

    @Option(name: .long, help: "A1111's clip skip: condition on the text encoder's N-th layer from the end (1 = last; SD1.x only).")
    var clipSkip: Int = 1

    @Option(name: .long, help: "Image-to-image: a PNG to start from (resized to --width/--height when given and different).")
    var initImage: String?

    @Option(name: .long, help: "Image-to-image: denoising strength in [0, 1] (how much of the run is denoised; default 0.75).")
    var strength: Float?

    @Option(name: .long, help: "A LoRA to merge, FILE or FILE:WEIGHT (weight default 1; repeatable).")
    var lora: [String] = []

    @Option(name: .long, help: "Folder of LoRA files for the prompt's <lora:NAME:WEIGHT> tags (NAME.safetensors).")
    var loraDir: String?

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
        guard (1...OptionLimits.maximumClipSkip).contains(clipSkip) else {
            throw ValidationError("--clip-skip \(clipSkip) is outside 1...\(OptionLimits.maximumClipSkip)")
        }
        if let strength {
            guard strength.isFinite, (0...1).contains(strength) else { throw ValidationError("--strength \(strength) is outside [0, 1]") }
            guard initImage != nil else { throw ValidationError("--strength applies to image-to-image (--init-image)") }
        }
        guard output.lowercased().hasSuffix(".png") else { throw ValidationError("--output must end in .png, got '\(output)'") }
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        let outputs = (1...batchCount).map { batchCount == 1 ? output : OutputPaths.numbered(output, $0) }
        for path in outputs { try OutputPaths.checkWritable(path) }

        let directory = try model ?? DefaultModel.locate()
        FileHandleStderr.write("loading \(directory) (\(device.rawValue))\n")
        let (encodedPrompt, tags) = try LoRAPromptTags.extract(prompt)
        var loras = try lora.map { try Self.parseLoRA($0) }
        loras += try tags.map { (try LoRAFile(path: LoRAPromptTags.file(named: $0.name, in: loraDir)), $0.weight) }
        let pipeline = try StableDiffusionPipeline(directory: directory, configDirectory: config, device: device,
                                                   precision: precision.storageType, loras: loras)
        for warning in pipeline.loraWarnings { FileHandleStderr.write("warning: \(warning)\n") }
        let kind = SchedulerKind(rawValue: scheduler)!
        let start = try initImage.map { try loadInitImage($0, pipeline: pipeline) }
        for (index, path) in outputs.enumerated() {
            var request = GenerationRequest(
                prompt: encodedPrompt, negativePrompt: negativePrompt, steps: steps, guidanceScale: cfg,
                seed: seed + UInt64(index), width: start?.width ?? width, height: start?.height ?? height, scheduler: kind)
            request.clipSkip = clipSkip
            request.initImage = start?.tensor
            request.strength = strength ?? request.strength
            try pipeline.validate(request)
            var bar = ProgressBar(label: batchCount > 1 ? "image \(index + 1)/\(batchCount)" : "")
            bar.restart()
            let result = try pipeline.generate(request) { bar.update(step: $0.step, of: $0.totalSteps) }
            for warning in result.warnings { FileHandleStderr.write("warning: \(warning)\n") }
            let t = result.timings
            FileHandleStderr.write("time \(Self.seconds(t.total)) s: text \(Self.seconds(t.encode)) s, denoise \(Self.seconds(t.denoise)) s, decode \(Self.seconds(t.decode)) s\n")
            let image = ImageConversion.pixelImages(fromDecoded: result.image)[0]
            var recorded = request
            recorded.prompt = prompt + lora.map { " <lora:\(Self.loraName($0)):\(Self.loraWeight($0))>" }.joined()  // A1111 keeps the tags
            let parameters = A1111Parameters(request: recorded, width: image.width, height: image.height,
                                              model: Self.modelName(directory))
            try PNGEncoder.write(image, text: [("parameters", parameters.text)], to: path)
            print(path)
        }
    }

    /// The init image as a tensor of the output size: without --width/--height the PNG's size rounded down to a
    /// multiple of 8 (diffusers), else --width × --height (A1111's "Just resize"); a resize is reported.
    func loadInitImage(_ path: String, pipeline: StableDiffusionPipeline) throws -> (tensor: Tensor, width: Int, height: Int) {
        let image = try PNGDecoder.read(path: path).image
        let factor = pipeline.decoder.configuration.downscaleFactor
        let w = width ?? (image.width / factor) * factor, h = height ?? (image.height / factor) * factor
        guard w > 0, h > 0 else {
            throw ValidationError("--init-image \(path) is \(image.width)x\(image.height); it must be at least \(factor)x\(factor)")
        }
        if w != image.width || h != image.height {
            FileHandleStderr.write("note: init image \(path) (\(image.width)x\(image.height)) resized to \(w)x\(h)\n")
        }
        return (ImageConversion.initImageTensor(ImageConversion.resized(image, width: w, height: h)), w, h)
    }

    /// `FILE` or `FILE:WEIGHT` (the last colon separates the weight when what follows is a number).
    static func parseLoRA(_ argument: String) throws -> (file: LoRAFile, weight: Float) {
        (try LoRAFile(path: loraPath(argument)), loraWeight(argument))
    }

    static func loraPath(_ argument: String) -> String {
        if let colon = argument.lastIndex(of: ":"), Float(argument[argument.index(after: colon)...]) != nil {
            return String(argument[..<colon])
        }
        return argument
    }

    static func loraWeight(_ argument: String) -> Float {
        guard let colon = argument.lastIndex(of: ":") else { return 1 }
        return Float(argument[argument.index(after: colon)...]) ?? 1
    }

    /// The model's name in the PNG parameters: the folder name, or a checkpoint's file name without `.safetensors`
    /// (A1111's "Model:" value).
    static func modelName(_ path: String) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return name.hasSuffix(".safetensors") && name != ".safetensors" ? String(name.dropLast(".safetensors".count)) : name
    }

    /// The LoRA's name as A1111 writes it in tags: the file name without `.safetensors`.
    static func loraName(_ argument: String) -> String {
        let file = loraPath(argument).split(separator: "/").last.map(String.init) ?? argument
        return file.hasSuffix(".safetensors") ? String(file.dropLast(".safetensors".count)) : file
    }

    static func seconds(_ v: Double) -> String { String((v * 1000).rounded() / 1000) }
}

extension ComputeDevice: ExpressibleByArgument {}
