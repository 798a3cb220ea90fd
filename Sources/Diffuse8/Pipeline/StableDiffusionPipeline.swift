/// Text-to-image generation with a diffusers Stable Diffusion folder (SD1.x/2.x or SDXL): FP32 on the CPU, or
/// FP16 or BF16 on an NVIDIA GPU (`device: .cuda`; the networks run there, the scheduler loop stays on the host in FP32).
///
/// Matches diffusers' `StableDiffusionPipeline` and `StableDiffusionXLPipeline` (`__call__` with default
/// `eta`, `guidance_rescale` 0, no `clip_skip`): same prompt encoding, same latents from the same seed,
/// same classifier-free guidance batch order ([negative, positive]), same scheduler steps, same VAE decode.
/// Prompts follow AUTOMATIC1111's emphasis syntax and 75-token chunking (`TextConditioning`; a plain prompt of up to
/// 75 tokens encodes exactly as in diffusers); with an init image it is `StableDiffusionImg2ImgPipeline`
/// (`ImageToImage`).
///
/// Limitations: one image per call (use several seeds for more); image-to-image runs the host loop (no device
/// sampling loop); `force_upcast` has no effect (CPU: FP32 anyway; CUDA: the VAE runs in the 16-bit storage type); quantized UNet
/// folders run their 8-bit layers as a simulation (quantize→dequantize around full-precision kernels) on both devices.
public final class StableDiffusionPipeline {
    /// The diffusers folder (for a single-file checkpoint: the folder its configurations come from).
    public let folder: DiffusersFolder
    /// What merging the LoRAs skipped (modules that match no layer), for the user.
    public let loraWarnings: [String]
    /// The single-file checkpoint the weights come from, if any.
    public let checkpoint: SingleFileCheckpoint?
    public let device: ComputeDevice
    /// The UNet on the chosen backend (calibration swaps in a recording one while it runs).
    public internal(set) var noisePredictor: any NoisePredictor
    /// The VAE decoder on the chosen backend.
    public let decoder: any LatentDecoder
    /// The VAE on the CPU, whose encoder turns image-to-image init images into latents.
    let imageEncoder: AutoencoderKL
    let conditioning: TextConditioning
    package let schedulerConfiguration: JSONValue
    /// SDXL: whether a missing negative prompt means zero embeddings (model_index `force_zeros_for_empty_prompt`).
    let zeroEmbeddingsForMissingNegativePrompt: Bool

    /// Loads every component of a diffusers folder onto `device`. Throws an error naming the component or file at
    /// fault (or, for `.cuda`, what is missing: GPU, driver, library). `precision`: the GPU storage type (FP16 or
    /// BF16; the CPU always runs FP32). The CUDA context is shared by the process: one precision per process.
    /// `forCalibration` (CUDA): weights are prepared unfused and the UNet's host weights kept, so that calibration can
    /// observe every layer and fingerprint the model.
    ///
    /// `directory` may also be a single-file checkpoint (`SingleFileCheckpoint`: SD1.x/SDXL `.safetensors` in the original
    /// key layout); its configurations, tokenizers and scheduler settings then come from the reference configurations of
    /// its family (`ReferenceConfigurations`, with the shipped `CLIPVocabulary`), as diffusers' `from_single_file` takes
    /// them from the family's reference model, or from the diffusers folder `configDirectory` of the same family when
    /// given (`from_single_file(config=…)`). Either way the file's tensor shapes are checked against them first.
    ///
    /// `loras`: LoRA files and their weights, merged into the full-precision UNet and text encoders before the networks
    /// go to the device (`LoRAMerge`); what did not match is in `loraWarnings`.
    ///
    /// `quantizedExecution`: how the CPU runs a quantized folder (default `QuantizedExecution.cpuDefault`; checks
    /// that compare with the simulation ask for `.simulated`).
    public init(directory: String, configDirectory: String? = nil, device: ComputeDevice = .cpu,
                precision: CUDADataType = .float16, forCalibration: Bool = false,
                loras: [(file: LoRAFile, weight: Float)] = [], quantizedExecution: QuantizedExecution? = nil) throws {
        let checkpoint = SingleFileCheckpoint.isFile(directory) ? try SingleFileCheckpoint(path: directory) : nil
        let folder = try DiffusersFolder(path: try checkpoint.map { try Self.configFolder(configDirectory, for: $0) } ?? directory)
        // the reference configurations' tokenizer folders hold settings only: the vocabulary is the shipped one
        let sharedVocabulary = checkpoint != nil && configDirectory == nil ? try CLIPVocabulary.locate() : nil
        if let checkpoint {
            try checkpoint.checkShapes(against: folder, described: configDirectory.map { "the configurations of the --config folder \($0)" }
                                           ?? "the \(ReferenceConfigurations.label(of: checkpoint.family)) reference configurations",
                                       advice: configDirectory == nil
                                           ? "a model of another architecture needs its diffusers folder (--model DIR, or --config DIR with the file)"
                                           : "give the --config folder of this model's architecture")
        }
        self.folder = folder
        self.checkpoint = checkpoint
        self.device = device
        let unetFolder = try folder.folder(of: "unet")
        guard precision != .float32 else { throw PipelineError("the GPU precision is fp16 or bf16 (FP32 runs on the CPU: --device cpu)") }
        // Plain or quantized; on the CPU a quantized folder runs natively — INT8 kernels, FP8 codes expanded per tile —
        // (simulated on request, for CUDA, and while LoRAs are merged into the simulated layers: those switch to
        // native execution afterwards).
        let native = device == .cpu && (quantizedExecution ?? QuantizedExecution.cpuDefault) == .native
        let unet = try checkpoint?.loadUNet(configDirectory: unetFolder)
            ?? QuantizedModelFolder.loadUNet(directory: unetFolder, execution: native && loras.isEmpty ? .native : .simulated)
        // a quantized UNet gets LoRAs re-quantized layer by layer with its stored statistics (QuantizedLoRAUpdate)
        let alphas = loras.isEmpty ? [:] : try QuantizedModelFolder.manifest(unetDirectory: unetFolder)?.alphaPerLayer ?? [:]
        let textModels = try (folder.family == .stableDiffusionXL ? ["text_encoder", "text_encoder_2"] : ["text_encoder"]).map { name in
            try checkpoint?.loadTextEncoder(index: name == "text_encoder" ? 0 : 1, configDirectory: folder.folder(of: name))
                ?? CLIPTextModel.load(directory: folder.folder(of: name))
        }
        var loraWarnings: [String] = []
        for (file, weight) in loras {
            let report = try LoRAMerge.merge(file, weight: weight, unet: unet, textEncoders: textModels, alphas: alphas)
            if !report.unmatched.isEmpty {
                loraWarnings.append("\(file.path): \(report.unmatched.count) of \(file.modules.count) modules match no layer and were skipped "
                                    + "(e.g. '\(report.unmatched[0])')")
            }
        }
        self.loraWarnings = loraWarnings
        if native && !loras.isEmpty { CPUNativeQuantization.installReplacingSimulation(in: unet) }
        // One backend holds every network's device weights.
        let backend: CUDABackend? = device == .cuda
            ? CUDABackend(kernels: try CUDAKernels(storageType: precision), fusesLayers: !forCalibration) : nil
        noisePredictor = try backend.map { CUDANoisePredictor(try CUDAUNet(unet, backend: $0, keepHostWeights: forCalibration)) } ?? unet
        let vae = try checkpoint?.loadVAE(configDirectory: folder.folder(of: "vae")) ?? AutoencoderKL.load(directory: folder.folder(of: "vae"))
        decoder = try backend.map { try CUDALatentDecoder(vae, backend: $0) } ?? vae
        imageEncoder = vae
        func textEncoder(_ name: String) throws -> any TextEncoder {
            let model = textModels[name == "text_encoder" ? 0 : 1]
            return try backend.map { try CUDACLIPTextModel(model, backend: $0) } ?? model
        }
        func tokenizer(_ name: String) throws -> CLIPTokenizer {
            try sharedVocabulary?.tokenizer(configDirectory: folder.folder(of: name)) ?? CLIPTokenizer(directory: folder.folder(of: name))
        }
        var encoders = [TextConditioning.Encoder(tokenizer: try tokenizer("tokenizer"), model: try textEncoder("text_encoder"))]
        if folder.family == .stableDiffusionXL {
            encoders.append(TextConditioning.Encoder(tokenizer: try tokenizer("tokenizer_2"),
                                                     model: try textEncoder("text_encoder_2")))
        }
        try PipelineCompatibility.check(folder, encoders: encoders, unet: unet.configuration, vae: vae.configuration)
        conditioning = TextConditioning(encoders: encoders, usesPenultimateLayer: folder.family == .stableDiffusionXL)
        schedulerConfiguration = try folder.config(of: "scheduler")
        zeroEmbeddingsForMissingNegativePrompt = folder.family == .stableDiffusionXL
            && (folder.index["force_zeros_for_empty_prompt"]?.bool ?? true)
    }

    /// The diffusers folder holding the configurations of a single-file checkpoint, checked against its family: the
    /// `--config` folder when given, else the family's reference configurations.
    static func configFolder(_ configDirectory: String?, for checkpoint: SingleFileCheckpoint) throws -> String {
        guard let configDirectory else { return try ReferenceConfigurations.folder(for: checkpoint.family) }
        let folder = try DiffusersFolder(path: configDirectory)
        guard folder.family == checkpoint.family else {
            throw PipelineError("\(checkpoint.path) is a \(checkpoint.family) checkpoint but the --config folder \(configDirectory) is \(folder.family); give a \(checkpoint.family) folder")
        }
        return configDirectory
    }

    /// The FP32 CPU UNet (calibration, quantization and evaluation work on it); nil on a CUDA pipeline.
    public var unet: UNet2DConditionModel? { noisePredictor as? UNet2DConditionModel }

    /// `unet`, or an error saying this needs the CPU pipeline.
    public func cpuUNet() throws -> UNet2DConditionModel {
        guard let unet else { throw PipelineError("this needs the FP32 CPU UNet; load the pipeline with device .cpu") }
        return unet
    }

    /// The pixel size the UNet was trained at (`sample_size` × VAE factor), used when a request gives none.
    public var nativeSize: Int { (noisePredictor.configuration.sampleSize ?? 64) * decoder.configuration.downscaleFactor }

    /// Checks a request before any work is done; the message says what is wrong and what to do.
    public func validate(_ request: GenerationRequest) throws {
        let factor = decoder.configuration.downscaleFactor
        for (name, value) in [("width", request.width ?? nativeSize), ("height", request.height ?? nativeSize)] {
            guard value > 0, value % factor == 0 else {
                throw PipelineError("\(name) \(value) is not a positive multiple of \(factor) (the VAE's downscale factor); "
                                    + "use e.g. \(max(factor, (value / factor) * factor))")
            }
        }
        guard request.steps >= 1 else { throw PipelineError("steps must be at least 1, got \(request.steps)") }
        guard request.clipSkip >= 1 else { throw PipelineError("clip skip must be at least 1 (1 = the last layer), got \(request.clipSkip)") }
        try GenerationLimits.check(request)
        if let image = request.initImage {
            let expected = [1, decoder.configuration.inChannels, request.height ?? nativeSize, request.width ?? nativeSize]
            guard image.shape == expected else {
                throw PipelineError("the init image is \(image.shape) (N, C, H, W) but this request needs \(expected); resize it to the output size")
            }
            _ = try ImageToImage.startIndex(steps: request.steps, strength: request.strength)
        }
    }

    /// Generates one image. `progress` is called after every denoising step.
    public func generate(_ request: GenerationRequest, progress: ((StepProgress) -> Void)? = nil) throws -> GenerationResult {
        try validate(request)
        var warnings: [String] = []
        let clock = ContinuousClock()
        func seconds(since start: ContinuousClock.Instant) -> Double {
            let d = clock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        var timings = GenerationTimings()
        var start = clock.now
        let conditioning = try encodeConditioning(request, warnings: &warnings)
        timings.encode = seconds(since: start)
        start = clock.now
        let latents = try denoise(request, conditioning: conditioning, progress: progress)
        timings.denoise = seconds(since: start)
        start = clock.now
        let scaling = decoder.configuration.scalingFactor
        let image = try decoder.decodeLatents(CPUKernels.map(latents) { $0 / scaling })  // division, as diffusers does
        timings.decode = seconds(since: start)
        if let warning = Self.overflowWarning(latents: latents, image: image, device: device) { warnings.append(warning) }
        return GenerationResult(latents: latents, image: image, warnings: warnings, timings: timings)
    }

    /// A warning when the latents or the decoded image hold non-finite values (they would become black pixels):
    /// in 16-bit GPU storage that is an overflow — the original SDXL VAE overflows FP16, which is why diffusers
    /// decodes it in FP32 (`force_upcast`).
    static func overflowWarning(latents: Tensor, image: Tensor, device: ComputeDevice) -> String? {
        let badLatents = latents.scalars.contains { !$0.isFinite }
        guard badLatents || image.scalars.contains(where: { !$0.isFinite }) else { return nil }
        let part = badLatents ? "the denoised latents" : "the decoded image"
        let advice = device == .cuda
            ? "likely a 16-bit overflow: try --precision bf16 (FP32's range) or an FP16-safe VAE (e.g. sdxl-vae-fp16-fix), or --device cpu"
            : "check the model weights"
        return "\(part) contain non-finite values (shown as black pixels); \(advice)"
    }

    /// The UNet's conditioning for `request`: prompt embeddings (and SDXL's pooled embeddings and time ids),
    /// batched [negative, positive] when guidance is on.
    public func encodeConditioning(_ request: GenerationRequest, warnings: inout [String]) throws -> UNetConditioning {
        let (width, height) = (request.width ?? nativeSize, request.height ?? nativeSize)
        let positive: TextConditioning.Embeddings, negative: TextConditioning.Embeddings
        if request.clipSkip > 1 && folder.family == .stableDiffusionXL {
            warnings.append("clip skip \(request.clipSkip) is not applied to SDXL (its encoders already condition on the penultimate layer)")
        }
        if request.negativePrompt == nil && zeroEmbeddingsForMissingNegativePrompt {
            positive = try conditioning.encode(request.prompt, clipSkip: request.clipSkip, warnings: &warnings)
            negative = TextConditioning.zeros(like: positive)
        } else {
            (positive, negative) = try conditioning.encodePair(request.prompt, request.negativePrompt ?? "", clipSkip: request.clipSkip)
        }
        let guided = request.guidanceScale > 1
        let context = guided ? Tensor.concatenate([negative.hiddenStates, positive.hiddenStates]) : positive.hiddenStates
        let batch = guided ? 2 : 1

        var textEmbeds: Tensor?, timeIds: Tensor?
        if let pooled = positive.pooled {
            textEmbeds = guided ? Tensor.concatenate([negative.pooled!, pooled]) : pooled
            let original = request.originalSize ?? (height, width), target = request.targetSize ?? (height, width)
            let ids: [Float] = [original.height, original.width, request.cropTopLeft.top, request.cropTopLeft.left,
                                target.height, target.width].map(Float.init)
            timeIds = Tensor(shape: [batch, 6], scalars: Array([[Float]](repeating: ids, count: batch).joined()))
        }
        return UNetConditioning(encoderHiddenStates: context, textEmbeds: textEmbeds, timeIds: timeIds, guided: guided)
    }

    /// The denoising loop: initial latents from the seed, then one UNet call and one scheduler step per
    /// timestep. Returns the final latents. `observe` sees every step's scaled UNet input and output (used by
    /// evaluation to run other UNets on the same trajectory).
    public func denoise(_ request: GenerationRequest, conditioning c: UNetConditioning,
                        progress: ((StepProgress) -> Void)? = nil,
                        observe: ((_ stepIndex: Int, _ timestep: Float, _ input: Tensor, _ output: Tensor) -> Void)? = nil) throws -> Tensor {
        let (width, height) = (request.width ?? nativeSize, request.height ?? nativeSize)
        var scheduler = try request.scheduler.makeScheduler(config: schedulerConfiguration, steps: request.steps)
        var generator = TorchGenerator(seed: request.seed)
        let factor = decoder.configuration.downscaleFactor
        var latents: Tensor
        var startIndex = 0
        if let image = request.initImage {
            // image-to-image: the host loop runs from the first kept step (device loops start at step 0)
            startIndex = try ImageToImage.startIndex(steps: scheduler.timesteps.count, strength: request.strength)
            latents = try ImageToImage.startLatents(image: image, vae: imageEncoder, scheduler: scheduler, startIndex: startIndex,
                                                    generator: &generator)
        } else {
            latents = generator.randn([1, noisePredictor.configuration.inChannels, height / factor, width / factor])
            latents = CPUKernels.scale(latents, scheduler.initNoiseSigma)
        }
        if observe == nil, startIndex == 0, let steps = scheduler.samplerSteps() {
            // Backends that can run the whole loop on the device (CUDA: no host round trip per step) do so. The noise
            // of ancestral steps is drawn now from a copy of the generator, in the order the host loop would draw it.
            var noiseGenerator = generator
            let noise = steps.map { $0.noiseScale != 0 ? noiseGenerator.randn(latents.shape) : nil }
            let plan = SamplingPlan(latents: latents, timesteps: scheduler.timesteps.map(Float.init), steps: steps, noise: noise,
                                    guidanceScale: request.guidanceScale)
            if let final = try noisePredictor.runSamplingLoop(plan, conditioning: c, progress: {
                progress?(StepProgress(step: $0, totalSteps: steps.count))
            }) {
                return final
            }
        }
        var sampleShape = latents.shape
        sampleShape[0] = c.guided ? 2 : 1
        let unet = try noisePredictor.makeDenoiser(conditioning: c, sampleShape: sampleShape)

        for (index, timestep) in scheduler.timesteps.enumerated() where index >= startIndex {
            try request.cancellation?.check()
            let input = scheduler.scaleModelInput(c.guided ? Tensor.concatenate([latents, latents]) : latents, stepIndex: index)
            let output = try unet(input, Float(timestep))
            observe?(index, Float(timestep), input, output)
            let noise = c.guided ? Self.guide(output, scale: request.guidanceScale) : output
            latents = scheduler.step(modelOutput: noise, stepIndex: index, sample: latents, generator: &generator)
            progress?(StepProgress(step: index + 1 - startIndex, totalSteps: scheduler.timesteps.count - startIndex))
        }
        return latents
    }

    /// Classifier-free guidance: uncond + s·(cond − uncond) on a [2, ...] batch ordered [negative, positive].
    static func guide(_ output: Tensor, scale: Float) -> Tensor {
        let half = output.count / 2
        var shape = output.shape
        shape[0] = 1
        return Tensor(shape: shape) { out in
            output.scalars.withUnsafeBufferPointer { p in
                for i in 0..<half { out[i] = p[i] + scale * (p[half + i] - p[i]) }
            }
        }
    }
}
