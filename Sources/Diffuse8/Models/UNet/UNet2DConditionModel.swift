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
        var channels = first
        var down: [UNetDownBlock] = []
        for i in c.blockOutChannels.indices {
            down.append(try UNetDownBlock(loader, index: i, inChannels: channels, configuration: c))
            channels = c.blockOutChannels[i]
        }
        downBlocks = down
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

    /// One denoising evaluation, diffusers' `UNet2DConditionModel.forward(...).sample`.
    /// - Parameters:
    ///   - sample: [B, in_channels, H, W] noisy latents.
    ///   - timesteps: one timestep per batch entry (or one for all).
    ///   - encoderHiddenStates: [B, L, cross_attention_dim] text-encoder hidden states.
    ///   - textEmbeds: SDXL only, [B, pooled width] (the second text encoder's projected pooled output).
    ///   - timeIds: SDXL only, [B, k] micro-conditioning (k = 6 for SDXL base: original size, crop, target size).
    /// - Returns: [B, out_channels, H, W], the model prediction (noise, v or x0 depending on the scheduler).
    public func callAsFunction(sample: Tensor, timesteps: [Float], encoderHiddenStates: Tensor,
                               textEmbeds: Tensor? = nil, timeIds: Tensor? = nil) -> Tensor {
        let c = configuration
        precondition(sample.shape.count == 4 && sample.shape[1] == c.inChannels,
                     "UNet: sample must be [B, \(c.inChannels), H, W], got \(sample.shape)")
        let batch = sample.shape[0]
        precondition(encoderHiddenStates.shape.count == 3 && encoderHiddenStates.shape[0] == batch,
                     "UNet: encoderHiddenStates must be [\(batch), L, \(c.crossAttentionDim[0])], got \(encoderHiddenStates.shape)")
        precondition(timesteps.count == batch || timesteps.count == 1,
                     "UNet: \(timesteps.count) timesteps for a batch of \(batch)")
        let steps = timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch)

        var embedding = timeEmbedding(timeProjection(steps))
        if let additionEmbedding, let additionTimeProjection {
            guard let textEmbeds, let timeIds else {
                preconditionFailure("UNet: this model has addition_embed_type \"text_time\" (SDXL) and needs textEmbeds and timeIds")
            }
            precondition(textEmbeds.shape.first == batch && timeIds.shape.first == batch,
                         "UNet: textEmbeds \(textEmbeds.shape) and timeIds \(timeIds.shape) must have batch \(batch)")
            let timeIdFeatures = additionTimeProjection(timeIds.scalars).reshaped([batch, -1])
            let additionInput = Self.concatenateLastDimension(textEmbeds.reshaped([batch, -1]), timeIdFeatures)
            precondition(additionInput.shape[1] == additionEmbedding.linear1.inFeatures,
                         "UNet: textEmbeds width + time ids × \(additionTimeProjection.channels) = \(additionInput.shape[1]), but add_embedding expects \(additionEmbedding.linear1.inFeatures) (projection_class_embeddings_input_dim)")
            embedding = CPUKernels.add(embedding, additionEmbedding(additionInput))
        }

        let context = UNetBlockContext(timeEmbedding: embedding, encoderHiddenStates: encoderHiddenStates)
        var h = c.centerInputSample ? CPUKernels.map(sample) { 2 * $0 - 1 } : sample
        h = convIn(h)
        var skips = [h]
        for block in downBlocks {
            let (output, states) = block(h, context)
            h = output
            skips += states
        }
        h = midBlock(h, context)
        let overallFactor = 1 << (upBlocks.count - 1)
        let forwardUpsampleSize = sample.shape[2] % overallFactor != 0 || sample.shape[3] % overallFactor != 0
        for block in upBlocks {
            h = block(h, skips: &skips, context, forwardUpsampleSize: forwardUpsampleSize)
        }
        return convOut(convNormOut(h, fusedSiLU: true))
    }

    /// Every Linear layer (with its state-dict name), in execution order: `time_embedding`, `add_embedding`,
    /// then down, mid and up blocks (resnet `time_emb_proj`, then per transformer `proj_in` (linear
    /// projection), per block `attn1.to_q/k/v/to_out.0`, `attn2.…`, `ff.net.0.proj`, `ff.net.2`, `proj_out`).
    public var linearLayers: [Linear] {
        timeEmbedding.linearLayers + (additionEmbedding?.linearLayers ?? [])
            + downBlocks.flatMap(\.linearLayers) + midBlock.linearLayers + upBlocks.flatMap(\.linearLayers)
    }

    /// Every Conv2d layer (with its state-dict name), in execution order: `conv_in`, down blocks (resnet
    /// `conv1`, `conv2`, `conv_shortcut`; 1×1 `proj_in`/`proj_out` without linear projection; downsampler),
    /// mid block, up blocks (… upsampler), `conv_out`.
    public var convolutionLayers: [Conv2d] {
        [convIn] + downBlocks.flatMap(\.convolutionLayers) + midBlock.convolutionLayers
            + upBlocks.flatMap(\.convolutionLayers) + [convOut]
    }

    /// [B, a] ++ [B, b] → [B, a + b] (`torch.concat(dim=-1)` on 2-D tensors).
    static func concatenateLastDimension(_ a: Tensor, _ b: Tensor) -> Tensor {
        let rows = a.shape[0], wa = a.shape[1], wb = b.shape[1]
        return Tensor(shape: [rows, wa + wb]) { out in
            for r in 0..<rows {
                for i in 0..<wa { out[r * (wa + wb) + i] = a.scalars[r * wa + i] }
                for i in 0..<wb { out[r * (wa + wb) + wa + i] = b.scalars[r * wb + i] }
            }
        }
    }
}
