/// diffusers' `UNet2DConditionModel` in FP16 (or BF16, the context's `storageType`) on an NVIDIA GPU: the device twin of the CPU model
/// `UNet2DConditionModel` (SD1.x conv `proj_in`/`proj_out` and SDXL linear projections + `text_time`
/// addition embedding).
///
/// It mirrors `UNet2DConditionModel.callAsFunction` block by block (time embedding, `conv_in`, down blocks
/// collecting skips, mid block, up blocks popping them, `conv_norm_out` → SiLU → `conv_out`) and MUST change
/// with it: the two are to be unified behind a backend protocol later, and until then every change of the
/// CPU forward has to be made here too (the parity check in `CUDASelfTest.unetParity` catches drift).
///
/// Built from a loaded CPU model: every weight is uploaded once in the storage type. Fusions (same results up to FP16
/// rounding): self-attention `to_q/to_k/to_v` as one GEMM read in place by the attention kernel; every
/// cross-attention's `to_k/to_v` of the whole UNet as one GEMM on the text context per forward; every resnet's
/// `time_emb_proj` as one GEMM per forward, with conv1's bias folded in; conv2 bias + shortcut bias + residual
/// (+ `output_scale_factor`) in one pass; residual adds of the transformer blocks inside the GEMMs (β = 1);
/// 1×1 `proj_in`/`proj_out` as GEMMs on tokens; tokens → NCHW fused with the transformer's residual add;
/// 3×3 convolutions may run channels-last (weights uploaded in both layouts until `releaseUnusedWeightLayouts`).
/// Activations stay on the device. `CUDAUNetGraph` replays the forward as a CUDA graph.
///
/// Limitations: one timestep for the whole batch; one cross-attention width; no `center_input_sample`, no
/// `downsample_padding: 0`, latent sizes must be multiples of 2^(up blocks − 1) (no forwarded upsample size);
/// like the CPU model no masks, ControlNet residuals or class labels. Not thread-safe (one `CUDAKernels`).
public final class CUDAUNet {
    public let configuration: UNetConfiguration
    public let kernels: CUDAKernels
    public var context: CUDAContext { kernels.context }

    let timeProjection: SinusoidalTimestepProjection
    let timeLinear1: CUDALinearWeights
    let timeLinear2: CUDALinearWeights
    let additionTimeProjection: SinusoidalTimestepProjection?
    let additionLinear1: CUDALinearWeights?
    let additionLinear2: CUDALinearWeights?
    /// Every resnet's `time_emb_proj` (+ its conv1 bias), stacked: [Σ channels, temb].
    let timeVectorProjection: CUDALinearWeights
    /// Every cross-attention's `to_k`, `to_v`, stacked: [Σ 2·channels, cross_attention_dim]; nil without transformers.
    let contextProjection: CUDALinearWeights?
    let convIn: CUDAConvolutionWeights
    let downBlocks: [CUDADownBlock]
    let midBlock: CUDAMidBlock
    let upBlocks: [CUDAUpBlock]
    let convNormOut: CUDANormWeights
    let convOut: CUDAConvolutionWeights

    /// When set (non-nil), `forward` brackets every operation with CUDA events and adds its milliseconds here,
    /// per kind ("conv 3x3", "attention self", …). The events synchronise: for breakdowns, not for timing totals.
    public var profile: [String: Double]?

    /// Uploads `model`'s weights (FP16) to `kernels`' device. The CPU model can be dropped afterwards.
    public init(_ model: UNet2DConditionModel, kernels: CUDAKernels? = nil) throws {
        let kernels = try kernels ?? CUDAKernels()
        let context = kernels.context
        let c = model.configuration
        if c.centerInputSample { throw CUDAError.invalidArgument("CUDAUNet: center_input_sample is not supported") }
        if c.downsamplePadding != 1 { throw CUDAError.invalidArgument("CUDAUNet: downsample_padding \(c.downsamplePadding) is not supported (only 1)") }
        self.configuration = c
        self.kernels = kernels
        timeProjection = model.timeProjection
        timeLinear1 = try CUDALinearWeights(context, model.timeEmbedding.linear1)
        timeLinear2 = try CUDALinearWeights(context, model.timeEmbedding.linear2)
        additionTimeProjection = model.additionTimeProjection
        additionLinear1 = try model.additionEmbedding.map { try CUDALinearWeights(context, $0.linear1) }
        additionLinear2 = try model.additionEmbedding.map { try CUDALinearWeights(context, $0.linear2) }
        convIn = try CUDAConvolutionWeights(context, model.convIn)

        var builder = CUDAUNetBuilder(context: context)
        downBlocks = try model.downBlocks.map { block in
            CUDADownBlock(resnets: try block.resnets.map { try builder.resnet($0) },
                          attentions: try block.attentions.map { try builder.transformer($0) },
                          downsampler: try block.downsampler.map { try CUDAConvolutionWeights(context, $0.conv) })
        }
        let mid = model.midBlock
        midBlock = CUDAMidBlock(resnets: try mid.resnets.map { try builder.resnet($0) },
                                attentions: try mid.attentions.map { try builder.transformer($0) })
        upBlocks = try model.upBlocks.map { block in
            CUDAUpBlock(resnets: try block.resnets.map { try builder.resnet($0) },
                        attentions: try block.attentions.map { try builder.transformer($0) },
                        upsampler: try block.upsampler.map { try CUDAConvolutionWeights(context, $0.conv) })
        }
        timeVectorProjection = try CUDALinearWeights(context, stacking: builder.timeProjections)
        contextProjection = builder.contextProjections.isEmpty ? nil : try CUDALinearWeights(context, stacking: builder.contextProjections)
        convNormOut = try CUDANormWeights(context, model.convNormOut)
        convOut = try CUDAConvolutionWeights(context, model.convOut)
    }

    /// Loads a diffusers `unet/` folder through the CPU model (FP32 in host memory while uploading).
    public static func load(directory: String, kernels: CUDAKernels? = nil) throws -> CUDAUNet {
        try CUDAUNet(UNet2DConditionModel.load(directory: directory), kernels: kernels)
    }

    /// The host-side inputs of one evaluation, uploaded: sinusoidal timestep features [B, block_out_channels[0]]
    /// and (SDXL) `add_time_proj` features of the time ids [B, k · addition_time_embed_dim].
    struct Conditioning {
        var timeFeatures: CUDATensor
        var timeIdFeatures: CUDATensor?
    }

    func conditioning(batch: Int, timestep: Float, timeIds: Tensor?) throws -> Conditioning {
        let timeFeatures = try context.upload(timeProjection(Array(repeating: timestep, count: batch)))
        var timeIdFeatures: CUDATensor?
        if let additionTimeProjection {
            guard let timeIds, timeIds.shape.first == batch else {
                throw CUDAError.invalidArgument("CUDAUNet: this model has addition_embed_type \"text_time\" (SDXL) and needs timeIds [\(batch), k], got \(timeIds?.shape ?? [])")
            }
            timeIdFeatures = try context.upload(additionTimeProjection(timeIds.scalars).reshaped([batch, -1]))
        }
        return Conditioning(timeFeatures: timeFeatures, timeIdFeatures: timeIdFeatures)
    }

    /// One denoising evaluation, diffusers' `UNet2DConditionModel.forward(...).sample` in FP16.
    /// - Parameters:
    ///   - sample: [B, in_channels, H, W] FP16 latents on the device.
    ///   - timestep: the same timestep for every batch entry.
    ///   - encoderHiddenStates: [B, L, cross_attention_dim] FP16.
    ///   - textEmbeds: SDXL only, [B, pooled width] FP16 (text_encoder_2's projected pooled output).
    ///   - timeIds: SDXL only, [B, k] on the host (k = 6 for SDXL base).
    /// - Returns: [B, out_channels, H, W] FP16 on the device (queued; `download` waits).
    public func forward(sample: CUDATensor, timestep: Float, encoderHiddenStates: CUDATensor,
                        textEmbeds: CUDATensor? = nil, timeIds: Tensor? = nil) throws -> CUDATensor {
        let inputs = try conditioning(batch: sample.shape[0], timestep: timestep, timeIds: timeIds)
        return try forward(sample: sample, conditioning: inputs, encoderHiddenStates: encoderHiddenStates, textEmbeds: textEmbeds)
    }

    /// The device part of `forward`: only kernel launches and device-to-device copies (capturable in a CUDA graph).
    func forward(sample: CUDATensor, conditioning inputs: Conditioning, encoderHiddenStates: CUDATensor,
                 textEmbeds: CUDATensor?) throws -> CUDATensor {
        let c = configuration, k = kernels
        guard sample.shape.count == 4, sample.shape[1] == c.inChannels else {
            throw CUDAError.invalidArgument("CUDAUNet: sample must be [B, \(c.inChannels), H, W], got \(sample.shape)")
        }
        let batch = sample.shape[0]
        guard encoderHiddenStates.shape.count == 3, encoderHiddenStates.shape[0] == batch else {
            throw CUDAError.invalidArgument("CUDAUNet: encoderHiddenStates must be [\(batch), L, \(c.crossAttentionDim[0])], got \(encoderHiddenStates.shape)")
        }
        let factor = 1 << (upBlocks.count - 1)
        guard sample.shape[2] % factor == 0, sample.shape[3] % factor == 0 else {
            throw CUDAError.invalidArgument("CUDAUNet: latent size \(sample.shape[2])×\(sample.shape[3]) must be a multiple of \(factor)")
        }

        var embedding = try k.linear(k.silu(k.linear(inputs.timeFeatures, weight: timeLinear1.weight, bias: timeLinear1.bias)),
                                     weight: timeLinear2.weight, bias: timeLinear2.bias)
        if let additionLinear1, let additionLinear2 {
            guard let textEmbeds, let timeIdFeatures = inputs.timeIdFeatures, textEmbeds.shape.first == batch else {
                throw CUDAError.invalidArgument("CUDAUNet: this model has addition_embed_type \"text_time\" (SDXL) and needs textEmbeds [\(batch), width] and timeIds")
            }
            let additionInput = try concatenateRows(textEmbeds.reshaped([batch, -1]), timeIdFeatures)
            guard additionInput.shape[1] == additionLinear1.weight.shape[1] else {
                throw CUDAError.invalidArgument("CUDAUNet: textEmbeds width + time id features = \(additionInput.shape[1]), but add_embedding expects \(additionLinear1.weight.shape[1])")
            }
            let hidden = try k.silu(k.linear(additionInput, weight: additionLinear1.weight, bias: additionLinear1.bias))
            embedding = try k.linear(hidden, weight: additionLinear2.weight, bias: additionLinear2.bias, residual: embedding)
        }
        let timeVectors = try k.linear(k.silu(embedding), weight: timeVectorProjection.weight, bias: timeVectorProjection.bias)
        let contextKV = try contextProjection.map { try k.linear(encoderHiddenStates, weight: $0.weight, bias: $0.bias) }
        let state = ForwardState(timeVectors: timeVectors, contextKV: contextKV, contextLength: encoderHiddenStates.shape[1])

        var h = try convolution(sample, convIn)
        var skips = [h]
        for block in downBlocks {
            for (j, resnet) in block.resnets.enumerated() {
                h = try self.resnet(resnet, h, state)
                if !block.attentions.isEmpty { h = try transformer(block.attentions[j], h, state) }
                skips.append(h)
            }
            if let downsampler = block.downsampler {
                h = try convolution(h, downsampler)
                skips.append(h)
            }
        }
        h = try resnet(midBlock.resnets[0], h, state)
        for (attention, resnet) in zip(midBlock.attentions, midBlock.resnets.dropFirst()) {
            h = try transformer(attention, h, state)
            h = try self.resnet(resnet, h, state)
        }
        for block in upBlocks {
            for (j, resnet) in block.resnets.enumerated() {
                let skip = skips.removeLast(), input = h
                h = try self.resnet(resnet, op("concat") { try k.concatChannels(input, skip) }, state)
                if !block.attentions.isEmpty { h = try transformer(block.attentions[j], h, state) }
            }
            if let upsampler = block.upsampler {
                let input = h
                h = try convolution(op("upsample") { try k.upsampleNearest2x(input) }, upsampler)
            }
        }
        return try convolution(groupNorm(h, convNormOut, silu: true), convOut)
    }

    /// Per-forward tensors every block reads.
    struct ForwardState {
        /// [B, Σ channels]: every resnet's time_emb_proj(silu(temb)) + conv1 bias.
        let timeVectors: CUDATensor
        /// [B, Lc, Σ 2·channels]: every cross-attention's keys and values.
        let contextKV: CUDATensor?
        let contextLength: Int
    }

    /// Runs `body`, timing it into `profile` under `kind` when profiling.
    private func op<T>(_ kind: String, _ body: () throws -> T) throws -> T {
        guard profile != nil else { return try body() }
        let start = try CUDAEvent(context), end = try CUDAEvent(context)
        try start.record(on: context.stream)
        let result = try body()
        try end.record(on: context.stream)
        profile![kind, default: 0] += try end.milliseconds(since: start)
        return result
    }

    private func convolution(_ x: CUDATensor, _ w: CUDAConvolutionWeights) throws -> CUDATensor {
        try op(w.weight.shape[2] == 1 ? "conv 1x1" : "conv 3x3") {
            let y = try kernels.conv2d(x, weight: w.weight, bias: w.bias, stride: w.stride, padding: w.padding,
                                       weightChannelsLast: w.weightChannelsLast, forceChannelsLast: w.onlyChannelsLast)
            w.lastPath = kernels.lastConvolutionPath
            return y
        }
    }

    /// Every convolution layer's weights.
    private var convolutionWeights: [CUDAConvolutionWeights] {
        let resnets = downBlocks.flatMap(\.resnets) + midBlock.resnets + upBlocks.flatMap(\.resnets)
        return [convIn, convOut] + resnets.flatMap { [$0.conv1, $0.conv2] + ($0.shortcut.map { [$0] } ?? []) }
            + downBlocks.compactMap(\.downsampler) + upBlocks.compactMap(\.upsampler)
    }

    /// Frees, for every 3×3 convolution, the weight layout (NCHW or channels-last) its measured fastest path does
    /// not use (both are uploaded because the choice is made per shape on first use): −1.0 GB for SD1.5, −0.6 GB
    /// for SDXL. Call after one `forward` at the latent size you will use; later calls at other sizes keep each
    /// layer on the layout it kept. Returns the bytes freed (back to the allocator's cache).
    @discardableResult
    public func releaseUnusedWeightLayouts() -> Int { CUDAConvolutionWeights.releaseUnusedLayouts(convolutionWeights) }

    private func groupNorm(_ x: CUDATensor, _ n: CUDANormWeights, silu: Bool) throws -> CUDATensor {
        try op("groupNorm") { try kernels.groupNorm(x, groups: n.groups, weight: n.weight, bias: n.bias, epsilon: n.epsilon, fusedSiLU: silu) }
    }

    private func layerNorm(_ x: CUDATensor, _ n: CUDANormWeights) throws -> CUDATensor {
        try op("layerNorm") { try kernels.layerNorm(x, weight: n.weight, bias: n.bias, epsilon: n.epsilon) }
    }

    private func linear(_ x: CUDATensor, _ w: CUDALinearWeights, residual: CUDATensor? = nil) throws -> CUDATensor {
        try op("GEMM (linear)") { try kernels.linear(x, weight: w.weight, bias: w.bias, residual: residual) }
    }

    /// `ResnetBlock2D.callAsFunction` with the UNet's time embedding.
    private func resnet(_ r: CUDAResnet, _ x: CUDATensor, _ state: ForwardState) throws -> CUDATensor {
        var h = try convolution(groupNorm(x, r.norm1, silu: true), r.conv1)
        h = try op("element-wise") { try kernels.addChannelVector(h, state.timeVectors, offset: r.timeOffset, stride: state.timeVectors.shape[1]) }
        h = try convolution(groupNorm(h, r.norm2, silu: true), r.conv2)
        let residual = try r.shortcut.map { try convolution(x, $0) } ?? x
        return try op("element-wise") { try kernels.biasResidual(h, bias: r.outputBias, residual: residual, scale: r.outputScale) }
    }

    /// `Transformer2DModel.callAsFunction` (both projection kinds on tokens).
    private func transformer(_ t: CUDATransformer, _ x: CUDATensor, _ state: ForwardState) throws -> CUDATensor {
        let k = kernels
        let batch = x.shape[0], tokenCount = x.shape[2] * x.shape[3]
        let normed = try groupNorm(x, t.norm, silu: false)
        var tokens = try linear(op("transpose") { try k.channelsToTokens(normed) }, t.projectIn)
        for b in t.blocks {
            let channels = b.channels
            let qkv = try linear(layerNorm(tokens, b.norm1), b.selfQKV)
            let selfAttended = try op("attention self") { try withExtendedLifetime(qkv) {
                try k.attention(query: qkv.address, queryStride: 3 * channels, key: qkv.address + UInt64(channels * 2),
                                value: qkv.address + UInt64(channels * 4), keyValueStride: 3 * channels, batch: batch,
                                queries: tokenCount, keys: tokenCount, channels: channels, heads: b.heads)
            } }
            tokens = try linear(selfAttended, b.selfOut, residual: tokens)

            guard let kv = state.contextKV else { throw CUDAError.invalidArgument("CUDAUNet: no context projection") }
            let query = try linear(layerNorm(tokens, b.norm2), b.crossQuery)
            let crossAttended = try op("attention cross") { try withExtendedLifetime((query, kv)) {
                try k.attention(query: query.address, queryStride: channels, key: kv.address + UInt64(b.contextOffset * 2),
                                value: kv.address + UInt64((b.contextOffset + channels) * 2), keyValueStride: kv.shape[2],
                                batch: batch, queries: tokenCount, keys: state.contextLength, channels: channels, heads: b.heads)
            } }
            tokens = try linear(crossAttended, b.crossOut, residual: tokens)

            let projected = try linear(layerNorm(tokens, b.norm3), b.feedForwardIn)
            tokens = try linear(op("GEGLU") { try k.geglu(projected) }, b.feedForwardOut, residual: tokens)
        }
        let projected = try linear(tokens, t.projectOut)
        return try op("transpose") { try k.tokensToChannelsAdding(projected, residual: x) }
    }

    /// [B, a] ++ [B, b] → [B, a + b] by device-to-device row copies.
    private func concatenateRows(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor {
        let rows = a.shape[0], wa = a.shape[1], wb = b.shape[1]
        let y = try context.empty([rows, wa + wb])
        try context.makeCurrent()
        for r in 0..<rows {
            let base = y.address + UInt64(r * (wa + wb) * 2)
            try context.copy(from: a.address + UInt64(r * wa * 2), to: base, bytes: wa * 2)
            try context.copy(from: b.address + UInt64(r * wb * 2), to: base + UInt64(wa * 2), bytes: wb * 2)
        }
        return y
    }
}
