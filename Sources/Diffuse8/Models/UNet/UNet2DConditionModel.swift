/// diffusers' `UNet2DConditionModel` (SD1.x/2.x and SDXL layouts), FP32 on the CPU kernels, with weights
/// named exactly as in diffusers' state dict.
///
/// Forward pass as in diffusers: sinusoidal `time_proj` → `time_embedding`; for `addition_embed_type:
/// "text_time"` (SDXL) `add_time_proj` of every time id, concatenated after `text_embeds`, → `add_embedding`,
/// added to the time embedding; `conv_in`; down blocks (collecting skip states); mid block; up blocks (each
/// resnet on the skip-concatenated features); `conv_norm_out` → SiLU → `conv_out`.
///
/// Loading checks every weight's shape against the configuration and rejects weight files with tensors the
/// model does not use. Limitations: see `UNetConfiguration` (unsupported config keys are rejected there);
/// no attention masks, no ControlNet/adapter residuals, no class labels.
public final class UNet2DConditionModel {
    public let configuration: UNetConfiguration
    public let timeProjection: SinusoidalTimestepProjection
    public let timeEmbedding: TimestepEmbedding
    /// SDXL's `add_time_proj` (sinusoidal per time id), present with `text_time`.
    public let additionTimeProjection: SinusoidalTimestepProjection?
    /// SDXL's `add_embedding`, present with `text_time`.
    public let additionEmbedding: TimestepEmbedding?
    public let convIn: Conv2d
    public let downBlocks: [UNetDownBlock]
    public let midBlock: UNetMidBlock
    public let upBlocks: [UNetUpBlock]
    public let convNormOut: GroupNorm
    public let convOut: Conv2d

    /// Builds the model from `configuration`, reading every weight from `weights` by its diffusers name.
    /// Throws `ComponentWeightsError` when a tensor is missing, has the wrong shape, or is left unused.
    public init(configuration c: UNetConfiguration, weights: TensorStore) throws {
        configuration = c
        let loader = ComponentWeightAudit(weights, component: "UNet")
        let first = c.blockOutChannels[0]
        timeProjection = SinusoidalTimestepProjection(channels: first, flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift)
        timeEmbedding = try TimestepEmbedding(loader, "time_embedding", inChannels: first, timeEmbeddingDim: c.timeEmbeddingDim)
        if c.usesTextTimeEmbedding, let timeIdWidth = c.additionTimeEmbedDim, let inputWidth = c.projectionClassEmbeddingsInputDim {
            additionTimeProjection = SinusoidalTimestepProjection(channels: timeIdWidth, flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift)
            additionEmbedding = try TimestepEmbedding(loader, "add_embedding", inChannels: inputWidth, timeEmbeddingDim: c.timeEmbeddingDim)
        } else {
            additionTimeProjection = nil
            additionEmbedding = nil
        }
        convIn = try loader.conv("conv_in", in: c.inChannels, out: first, kernel: 3, padding: 1)
        downBlocks = try c.blockOutChannels.indices.map { try UNetDownBlock(loader, index: $0, configuration: c) }
        midBlock = try UNetMidBlock(loader, configuration: c)
        upBlocks = try c.blockOutChannels.indices.map { try UNetUpBlock(loader, index: $0, configuration: c) }
        convNormOut = try loader.groupNorm("conv_norm_out", channels: first, groups: c.normNumGroups, epsilon: c.normEpsilon)
        convOut = try loader.conv("conv_out", in: first, out: c.outChannels, kernel: 3, padding: 1)
        try loader.requireAllUsed()
    }

    /// Loads a diffusers `unet/` folder: `config.json` and the weights `ComponentWeights` finds
    /// (`diffusion_pytorch_model.safetensors`, its sharded index, or the `fp16` variants).
    public static func load(directory: String) throws -> UNet2DConditionModel {
        let configuration = try UNetConfiguration(contentsOf: directory + "/config.json")
        return try UNet2DConditionModel(configuration: configuration, weights: ComponentWeights.open(directory: directory))
    }

    /// One denoising evaluation with the same timestep for the whole batch. See `callAsFunction(sample:timesteps:...)`.
    public func callAsFunction(sample: Tensor, timestep: Float, encoderHiddenStates: Tensor,
                               textEmbeds: Tensor? = nil, timeIds: Tensor? = nil) -> Tensor {
        self(sample: sample, timesteps: Array(repeating: timestep, count: sample.shape[0]),
             encoderHiddenStates: encoderHiddenStates, textEmbeds: textEmbeds, timeIds: timeIds)
    }

    /// One denoising evaluation in FP32 on the CPU, diffusers' `UNet2DConditionModel.forward(...).sample`
    /// (inputs that do not fit the model stop the program: use `evaluate` for a thrown error).
    /// - Parameters:
    ///   - sample: [B, in_channels, H, W] noisy latents.
    ///   - timesteps: one timestep per batch entry (or one for all).
    ///   - encoderHiddenStates: [B, L, cross_attention_dim] text-encoder hidden states.
    ///   - textEmbeds: SDXL only, [B, pooled width] (the second text encoder's projected pooled output).
    ///   - timeIds: SDXL only, [B, k] micro-conditioning (k = 6 for SDXL base: original size, crop, target size).
    /// - Returns: [B, out_channels, H, W], the model prediction (noise, v or x0 depending on the scheduler).
    public func callAsFunction(sample: Tensor, timesteps: [Float], encoderHiddenStates: Tensor,
                               textEmbeds: Tensor? = nil, timeIds: Tensor? = nil) -> Tensor {
        CPUBackend.unchecked {
            try evaluate(sample: sample, timesteps: timesteps, encoderHiddenStates: encoderHiddenStates,
                         textEmbeds: textEmbeds, timeIds: timeIds)
        }
    }

    /// `callAsFunction(sample:timesteps:...)` with a thrown error for inputs that do not fit the model.
    public func evaluate(sample: Tensor, timesteps: [Float], encoderHiddenStates: Tensor,
                         textEmbeds: Tensor? = nil, timeIds: Tensor? = nil) throws -> Tensor {
        let batch = sample.shape.first ?? 0
        guard timesteps.count == batch || timesteps.count == 1 else {
            throw ModelBackendError("UNet: \(timesteps.count) timesteps for a batch of \(batch)")
        }
        let features = try timeFeatures(timesteps: timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch),
                                        timeIds: timeIds)
        return try forward(CPUBackend.shared, sample: sample, timeFeatures: features.time, timeIdFeatures: features.timeIds,
                           encoderHiddenStates: encoderHiddenStates, textEmbeds: textEmbeds)
    }

    /// The host-computed inputs of one evaluation: sinusoidal features of the timesteps [B, block_out_channels[0]]
    /// and, for SDXL (`text_time`), of every time id ([B, k · addition_time_embed_dim]).
    public func timeFeatures(timesteps: [Float], timeIds: Tensor?) throws -> (time: Tensor, timeIds: Tensor?) {
        let time = timeProjection(timesteps)
        guard let additionTimeProjection else { return (time, nil) }
        guard let timeIds, timeIds.shape.count == 2, timeIds.shape[0] == timesteps.count else {
            throw ModelBackendError("UNet: this model has addition_embed_type \"text_time\" (SDXL) and needs timeIds [\(timesteps.count), k], got \(timeIds?.shape ?? [])")
        }
        return (time, additionTimeProjection(timeIds.scalars).reshaped([timesteps.count, -1]))
    }

    /// The one forward pass of this model, on any backend (diffusers' `UNet2DConditionModel.forward(...).sample`).
    /// `timeFeatures`/`timeIdFeatures` come from `timeFeatures(timesteps:timeIds:)`; the backend's fusion plan for this
    /// model (if it prepared one) decides which layers run fused.
    public func forward<B: ModelBackend>(_ b: B, sample: B.Value, timeFeatures: B.Value, timeIdFeatures: B.Value?,
                                         encoderHiddenStates: B.Value, textEmbeds: B.Value?) throws -> B.Value {
        let c = configuration
        let shape = b.shape(of: sample)
        guard shape.count == 4, shape[1] == c.inChannels, shape[2] > 0, shape[3] > 0 else {
            throw ModelBackendError("UNet: sample must be [B, \(c.inChannels), H, W], got \(shape)")
        }
        let batch = shape[0]
        let contextShape = b.shape(of: encoderHiddenStates)
        guard contextShape.count == 3, contextShape[0] == batch else {
            throw ModelBackendError("UNet: encoderHiddenStates must be [\(batch), L, \(c.crossAttentionDim[0])], got \(contextShape)")
        }
        guard b.shape(of: timeFeatures).first == batch else {
            throw ModelBackendError("UNet: time features \(b.shape(of: timeFeatures)) for a batch of \(batch)")
        }
        let plan = b.fusionPlan(for: self)

        var embedding = try timeEmbedding.forward(b, timeFeatures)
        if let additionEmbedding {
            guard let textEmbeds, let timeIdFeatures, b.shape(of: textEmbeds).first == batch, b.shape(of: timeIdFeatures).first == batch else {
                throw ModelBackendError("UNet: this model has addition_embed_type \"text_time\" (SDXL) and needs textEmbeds [\(batch), width] and timeIds [\(batch), k]")
            }
            let additionInput = try b.concatColumns(b.reshape(textEmbeds, [batch, b.shape(of: textEmbeds).reduce(1, *) / batch]), timeIdFeatures)
            let width = b.shape(of: additionInput)[1]
            guard width == additionEmbedding.linear1.inFeatures else {
                throw ModelBackendError("UNet: textEmbeds width + time id features = \(width), but add_embedding expects \(additionEmbedding.linear1.inFeatures) (projection_class_embeddings_input_dim)")
            }
            embedding = try additionEmbedding.forward(b, additionInput, residual: embedding)
        }
        let activated = try b.silu(embedding)
        let state = UNetForwardState(
            backend: b, plan: plan, activatedTimeEmbedding: activated,
            timeVectors: try plan?.timeProjection.map { try b.stackedLinear(activated, $0) },
            context: encoderHiddenStates,
            contextKV: try plan?.contextProjections.map { try b.stackedLinear(encoderHiddenStates, $0) } ?? [])

        var h = try b.conv2d(c.centerInputSample ? b.affine(sample, scale: 2, shift: -1) : sample, convIn)
        var skips = [h]
        for block in downBlocks { h = try block.forward(state, h, skips: &skips) }
        h = try midBlock.forward(state, h)
        let overallFactor = 1 << (upBlocks.count - 1)
        let forwardUpsampleSize = shape[2] % overallFactor != 0 || shape[3] % overallFactor != 0
        for block in upBlocks {
            h = try block.forward(state, h, skips: &skips, forwardUpsampleSize: forwardUpsampleSize)
        }
        return try b.conv2d(b.groupNorm(h, convNormOut, silu: true), convOut)
    }

    /// Every Linear layer (with its state-dict name), in execution order: `time_embedding`, `add_embedding`,
    /// then down, mid and up blocks (resnet `time_emb_proj`, then per transformer `proj_in` (linear
    /// projection), per block `attn1.to_q/k/v/to_out.0`, `attn2.…`, `ff.net.0.proj`, `ff.net.2`, `proj_out`).
    public var linearLayers: [Linear] {
        timeEmbedding.linearLayers + (additionEmbedding?.linearLayers ?? []) + blocks.flatMap(\.linearLayers)
    }

    /// Every GroupNorm: the resnets' `norm1`/`norm2`, the transformers' `norm`, `conv_norm_out`.
    public var groupNorms: [GroupNorm] { resnets.flatMap { [$0.norm1, $0.norm2] } + transformers.map(\.norm) + [convNormOut] }

    /// Every LayerNorm (`norm1`–`norm3` of each transformer block).
    public var layerNorms: [LayerNorm] { transformers.flatMap(\.blocks).flatMap { [$0.norm1, $0.norm2, $0.norm3] } }

    /// The down, mid and up blocks, in execution order.
    private var blocks: [any UNetResnetAttentionBlock] { downBlocks as [any UNetResnetAttentionBlock] + [midBlock] + upBlocks }

    /// Every `Transformer2DModel`, in execution order.
    var transformers: [Transformer2DModel] { blocks.flatMap(\.attentions) }

    /// Every resnet, in execution order.
    var resnets: [ResnetBlock2D] { blocks.flatMap(\.resnets) }

    /// Drops the host copies of the Linear and Conv2d weights once a backend has its own (`CUDAUNet` does this after
    /// uploading: −10 GB of host memory for SDXL). Layer shapes stay known; the CPU can no longer run the model.
    public func releaseHostWeights() {
        for layer in linearLayers { layer.releaseHostWeight() }
        for layer in convolutionLayers { layer.releaseHostWeight() }
    }

    /// Every Conv2d layer (with its state-dict name), in execution order: `conv_in`, down blocks (resnet
    /// `conv1`, `conv2`, `conv_shortcut`; 1×1 `proj_in`/`proj_out` without linear projection; downsampler),
    /// mid block, up blocks (… upsampler), `conv_out`.
    public var convolutionLayers: [Conv2d] { [convIn] + blocks.flatMap(\.convolutionLayers) + [convOut] }
}
