/// Everything that determines one text-to-image generation. With the same model, the same request
/// gives the same image as diffusers' `StableDiffusionPipeline` / `StableDiffusionXLPipeline` called
/// with these arguments and `generator=torch.Generator("cpu").manual_seed(seed)`.
public struct GenerationRequest: Sendable {
    /// The text to draw.
    public var prompt: String
    /// Text to steer away from (the unconditional half of classifier-free guidance). `nil` means "no
    /// negative prompt": SD1.x encodes the empty string, SDXL uses zero embeddings when the model's
    /// `force_zeros_for_empty_prompt` is set (as diffusers does).
    public var negativePrompt: String?
    /// Number of denoising steps.
    public var steps: Int
    /// Classifier-free guidance scale; ≤ 1 disables guidance (one UNet batch instead of two).
    public var guidanceScale: Float
    /// Seed of the CPU torch generator that draws the initial latents and any ancestral noise.
    public var seed: UInt64
    /// Image size in pixels; multiples of the VAE's downscale factor (8 for SD models). `nil` = the
    /// model's native size (`unet.sample_size` × VAE factor).
    public var width: Int?
    public var height: Int?
    /// Sampling method.
    public var scheduler: SchedulerKind
    /// SDXL micro-conditioning: the `original_size` (height, width) the model is told the image had;
    /// `nil` = the output size.
    public var originalSize: (height: Int, width: Int)?
    /// SDXL micro-conditioning: `crops_coords_top_left` (top, left).
    public var cropTopLeft: (top: Int, left: Int)
    /// SDXL micro-conditioning: `target_size` (height, width); `nil` = the output size.
    public var targetSize: (height: Int, width: Int)?
    /// A1111's "Clip skip": condition SD1.x/2.x on `hidden_states[-clipSkip]` of the text encoder (through its final
    /// layer norm); 1 = the last layer (diffusers' `clip_skip` is this minus 1). Not applied to SDXL.
    public var clipSkip: Int = 1
    /// Image-to-image: the init image, [1, 3, H, W] with pixels in [-1, 1] and H, W the output size (`ImageToImage`).
    public var initImage: Tensor?
    /// Image-to-image: how much of the run is denoised, in [0, 1] (A1111's "Denoising strength").
    public var strength: Float = 0.75
    /// When set and cancelled, the denoising loop stops before its next step with `GenerationCancelled`.
    public var cancellation: GenerationCancellation?

    public init(prompt: String, negativePrompt: String? = nil, steps: Int = 30, guidanceScale: Float = 7.5,
                seed: UInt64 = 0, width: Int? = nil, height: Int? = nil, scheduler: SchedulerKind = .euler,
                originalSize: (height: Int, width: Int)? = nil, cropTopLeft: (top: Int, left: Int) = (0, 0),
                targetSize: (height: Int, width: Int)? = nil) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.steps = steps
        self.guidanceScale = guidanceScale
        self.seed = seed
        self.width = width
        self.height = height
        self.scheduler = scheduler
        self.originalSize = originalSize
        self.cropTopLeft = cropTopLeft
        self.targetSize = targetSize
    }
}

/// What one generation produced.
public struct GenerationResult: Sendable {
    /// Final latents (before dividing by the VAE scaling factor), [1, 4, h, w].
    public var latents: Tensor
    /// Decoded image, NCHW in [-1, 1] (the VAE's output).
    public var image: Tensor
    /// Warnings for the user (e.g. a prompt truncated to the 77-token context).
    public var warnings: [String]
    /// Wall-clock seconds of each phase (each ends with its results on the host, so GPU work is included).
    public var timings = GenerationTimings()
}

/// Where one generation's time went, in seconds.
public struct GenerationTimings: Sendable {
    /// Tokenizing and running the text encoder(s).
    public var encode: Double = 0
    /// The denoising loop (UNet evaluations, guidance, scheduler steps).
    public var denoise: Double = 0
    /// The VAE decode.
    public var decode: Double = 0
    public var total: Double { encode + denoise + decode }
}

/// Progress of the denoising loop, reported after each step.
public struct StepProgress: Sendable {
    public var step: Int
    public var totalSteps: Int
}

/// The UNet's conditioning inputs for one request, batched [negative, positive] when `guided`.
public struct UNetConditioning: Sendable {
    /// [batch, 77, cross_attention_dim] prompt embeddings.
    public var encoderHiddenStates: Tensor
    /// SDXL: [batch, projection_dim] pooled text embeddings; nil for SD1.x/2.x.
    public var textEmbeds: Tensor?
    /// SDXL: [batch, 6] micro-conditioning (original size, crop top-left, target size); nil for SD1.x/2.x.
    public var timeIds: Tensor?
    /// Whether classifier-free guidance is on (batch 2).
    public var guided: Bool
}
