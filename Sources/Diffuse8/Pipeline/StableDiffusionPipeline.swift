/// Text-to-image generation with a diffusers Stable Diffusion folder (SD1.x/2.x or SDXL), FP32 on the CPU.
///
/// Matches diffusers' `StableDiffusionPipeline` and `StableDiffusionXLPipeline` (`__call__` with default
/// `eta`, `guidance_rescale` 0, no `clip_skip`): same prompt encoding, same latents from the same seed,
/// same classifier-free guidance batch order ([negative, positive]), same scheduler steps, same VAE decode.
///
/// Limitations: text-to-image only; one image per call (use several seeds for more); no prompt
/// weighting; `force_upcast` has no effect since execution is FP32.
public final class StableDiffusionPipeline {
    public let folder: DiffusersFolder
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    let conditioning: TextConditioning
    let schedulerConfiguration: JSONValue
    /// SDXL: whether a missing negative prompt means zero embeddings (model_index `force_zeros_for_empty_prompt`).
    let zeroEmbeddingsForMissingNegativePrompt: Bool

    /// Loads every component of a diffusers folder. Throws an error naming the component or file at fault.
    public init(directory: String) throws {
        folder = try DiffusersFolder(path: directory)
        unet = try QuantizedModelFolder.loadUNet(directory: folder.folder(of: "unet"))  // plain or quantized (simulated)
        vae = try AutoencoderKL.load(directory: folder.folder(of: "vae"))
        var encoders = [TextConditioning.Encoder(
            tokenizer: try CLIPTokenizer(directory: folder.folder(of: "tokenizer")),
            model: try CLIPTextModel.load(directory: folder.folder(of: "text_encoder")))]
        if folder.family == .stableDiffusionXL {
            encoders.append(TextConditioning.Encoder(
                tokenizer: try CLIPTokenizer(directory: folder.folder(of: "tokenizer_2")),
                model: try CLIPTextModel.load(directory: folder.folder(of: "text_encoder_2"))))
        }
        conditioning = TextConditioning(encoders: encoders, usesPenultimateLayer: folder.family == .stableDiffusionXL)
        schedulerConfiguration = try folder.config(of: "scheduler")
        zeroEmbeddingsForMissingNegativePrompt = folder.family == .stableDiffusionXL
            && (folder.index["force_zeros_for_empty_prompt"]?.bool ?? true)
    }

    /// The pixel size the UNet was trained at (`sample_size` × VAE factor), used when a request gives none.
    public var nativeSize: Int { (unet.configuration.sampleSize ?? 64) * vae.downscaleFactor }

    /// Checks a request before any work is done; the message says what is wrong and what to do.
    public func validate(_ request: GenerationRequest) throws {
        let factor = vae.downscaleFactor
        for (name, value) in [("width", request.width ?? nativeSize), ("height", request.height ?? nativeSize)] {
            guard value > 0, value % factor == 0 else {
                throw PipelineError("\(name) \(value) is not a positive multiple of \(factor) (the VAE's downscale factor); "
                                    + "use e.g. \(max(factor, (value / factor) * factor))")
            }
        }
        guard request.steps >= 1 else { throw PipelineError("steps must be at least 1, got \(request.steps)") }
    }

    /// Generates one image. `progress` is called after every denoising step.
    public func generate(_ request: GenerationRequest, progress: ((StepProgress) -> Void)? = nil) throws -> GenerationResult {
        try validate(request)
        var warnings: [String] = []
        let conditioning = encodeConditioning(request, warnings: &warnings)
        let latents = try denoise(request, conditioning: conditioning, progress: progress)
        let scaling = vae.scalingFactor
        let image = vae.decode(CPUKernels.map(latents) { $0 / scaling })  // division, as diffusers does
        return GenerationResult(latents: latents, image: image, warnings: warnings)
    }

    /// The UNet's conditioning for `request`: prompt embeddings (and SDXL's pooled embeddings and time ids),
    /// batched [negative, positive] when guidance is on.
    public func encodeConditioning(_ request: GenerationRequest, warnings: inout [String]) -> UNetConditioning {
        let (width, height) = (request.width ?? nativeSize, request.height ?? nativeSize)
        let positive = conditioning.encode(request.prompt, warnings: &warnings)
        let negative: TextConditioning.Embeddings
        if request.negativePrompt == nil && zeroEmbeddingsForMissingNegativePrompt {
            negative = TextConditioning.zeros(like: positive)
        } else {
            negative = conditioning.encode(request.negativePrompt ?? "", warnings: &warnings)
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
        let factor = vae.downscaleFactor
        var latents = generator.randn([1, unet.configuration.inChannels, height / factor, width / factor])
        latents = CPUKernels.scale(latents, scheduler.initNoiseSigma)

        for (index, timestep) in scheduler.timesteps.enumerated() {
            let input = scheduler.scaleModelInput(c.guided ? Tensor.concatenate([latents, latents]) : latents, stepIndex: index)
            let output = unet(sample: input, timestep: Float(timestep), encoderHiddenStates: c.encoderHiddenStates,
                              textEmbeds: c.textEmbeds, timeIds: c.timeIds)
            observe?(index, Float(timestep), input, output)
            let noise = c.guided ? Self.guide(output, scale: request.guidanceScale) : output
            latents = scheduler.step(modelOutput: noise, stepIndex: index, sample: latents, generator: &generator)
            progress?(StepProgress(step: index + 1, totalSteps: scheduler.timesteps.count))
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
