/// diffusers' `AutoencoderKL.decode` (`vae.decode(z).sample`) in FP16 (or BF16) on an NVIDIA GPU: the device twin of the
/// CPU `AutoencoderKL.decode` / `VAEDecoder` (SD1.x and SDXL VAEs).
///
/// It mirrors the CPU decoder layer by layer and must change with it: `post_quant_conv` (when the config has
/// it) → `conv_in` → mid block (`ResnetBlock2D` → single-head `Attention` with group norm and residual →
/// `ResnetBlock2D`) → `UpDecoderBlock2D`s (layers_per_block + 1 resnets without time embedding, 1×1
/// `conv_shortcut` when channels change, `output_scale_factor`; nearest 2× upsample + conv3×3 except in the last
/// block) → `conv_norm_out` + SiLU → `conv_out`. Every weight is uploaded once in the context's storage type
/// (FP16 or BF16); activations stay on the
/// device. Fusions (same results up to FP16 rounding): GroupNorm + SiLU in one kernel; conv2 bias + shortcut bias +
/// residual (+ output scale) in one pass; the attention's `to_q/to_k/to_v` as one GEMM read in place; tokens →
/// NCHW fused with the attention's residual add. The mid-block attention (one head of dim = channels, 512 for
/// SD/SDXL) runs through `CUDAKernels.gemmAttention` (the fused kernels have no such head dim).
///
/// Limitations: 16-bit storage only. diffusers upcasts the SDXL VAE to FP32 (`force_upcast: true` in its config)
/// because the original SDXL VAE's activations overflow FP16 (inf/NaN images); this class does not — run such
/// weights with BF16 storage (FP32's range), an FP16-safe VAE (e.g. madebyollin's `sdxl-vae-fp16-fix`) or the CPU. No tiling or slicing:
/// memory grows with the image (the mid-block attention's logits alone are 512 MiB per image at 1024²).
/// `force_upcast` is not looked at. Not thread-safe (one `CUDAKernels`).
public final class CUDAVAEDecoder {
    public let configuration: VAEConfiguration
    public let kernels: CUDAKernels
    public var context: CUDAContext { kernels.context }

    /// A VAE `ResnetBlock2D` (no time embedding): conv2's and the shortcut's biases are added together with the
    /// residual in one pass.
    struct Resnet {
        let norm1: CUDANormWeights
        let conv1: CUDAConvolutionWeights
        let norm2: CUDANormWeights
        let conv2: CUDAConvolutionWeights
        let shortcut: CUDAConvolutionWeights?
        /// conv2.bias + conv_shortcut.bias.
        let outputBias: CUDATensor
        let outputScale: Float
    }

    /// The mid block's `Attention` (heads = 1, dim_head = channels): q/k/v stacked as one [3C, C] GEMM.
    struct Attention {
        let norm: CUDANormWeights
        let queryKeyValue: CUDALinearWeights
        let output: CUDALinearWeights
        let channels: Int
    }

    struct UpBlock {
        let resnets: [Resnet]
        /// The conv after nearest 2× upsampling; nil in the last block.
        let upsampler: CUDAConvolutionWeights?
    }

    let postQuantConv: CUDAConvolutionWeights?
    let convIn: CUDAConvolutionWeights
    let midResnets: (Resnet, Resnet)
    let midAttention: Attention?
    let upBlocks: [UpBlock]
    let convNormOut: CUDANormWeights
    let convOut: CUDAConvolutionWeights

    /// Uploads the decoder half of `vae` (post_quant_conv + decoder) in the storage type to `kernels`' device. The CPU model
    /// can be dropped afterwards; its encoder is not uploaded.
    public init(_ vae: AutoencoderKL, kernels: CUDAKernels) throws {
        self.configuration = vae.configuration
        self.kernels = kernels
        let context = kernels.context
        let decoder = vae.decoder
        func resnet(_ r: ResnetBlock2D) throws -> Resnet {
            var outputBias = r.conv2.bias?.scalars ?? [Float](repeating: 0, count: r.conv2.outChannels)
            if let shortcutBias = r.shortcut?.bias?.scalars { outputBias = zip(outputBias, shortcutBias).map { $0 + $1 } }
            return Resnet(norm1: try CUDANormWeights(context, r.norm1), conv1: try CUDAConvolutionWeights(context, r.conv1),
                          norm2: try CUDANormWeights(context, r.norm2),
                          conv2: try CUDAConvolutionWeights(context, r.conv2, withBias: false),
                          shortcut: try r.shortcut.map { try CUDAConvolutionWeights(context, $0, withBias: false) },
                          outputBias: try context.upload(Tensor(shape: [outputBias.count], scalars: outputBias)),
                          outputScale: 1 / r.outputScaleFactor)
        }
        postQuantConv = try vae.postQuantConv.map { try CUDAConvolutionWeights(context, $0) }
        convIn = try CUDAConvolutionWeights(context, decoder.convIn)
        let mid = decoder.midBlock
        midResnets = (try resnet(mid.firstResnet), try resnet(mid.secondResnet))
        midAttention = try mid.attention.map { a in
            Attention(norm: try CUDANormWeights(context, a.groupNorm),
                      queryKeyValue: try CUDALinearWeights(context, stacking: [a.toQuery, a.toKey, a.toValue]),
                      output: try CUDALinearWeights(context, a.toOut), channels: a.toQuery.outFeatures)
        }
        upBlocks = try decoder.upBlocks.map { block in
            UpBlock(resnets: try block.resnets.map(resnet),
                    upsampler: try block.upsampleConv.map { try CUDAConvolutionWeights(context, $0) })
        }
        convNormOut = try CUDANormWeights(context, decoder.normOut)
        convOut = try CUDAConvolutionWeights(context, decoder.convOut)
    }

    /// Loads a diffusers `vae/` folder through the CPU model (FP32 in host memory while uploading).
    public static func load(directory: String, kernels: CUDAKernels) throws -> CUDAVAEDecoder {
        try CUDAVAEDecoder(AutoencoderKL.load(directory: directory), kernels: kernels)
    }

    /// Image pixels per latent pixel along each side (8 for SD1.x / SDXL).
    public var downscaleFactor: Int { configuration.downscaleFactor }

    /// latents [N, latent_channels, h, w] FP16 on the device, ALREADY divided by `scaling_factor` (as for the CPU
    /// `AutoencoderKL.decode`) → image [N, out_channels, h·f, w·f] FP16 in roughly [-1, 1], not clamped: exactly
    /// `vae.decode(z).sample`. Queued on the stream (`download` waits).
    public func decode(_ latents: CUDATensor) throws -> CUDATensor {
        guard latents.dtype == context.storageType, latents.shape.count == 4, latents.shape[1] == configuration.latentChannels else {
            throw CUDAError.invalidArgument("CUDAVAEDecoder.decode: latents must be \(context.storageType) [N, \(configuration.latentChannels), h, w], "
                                            + "got \(latents.dtype) \(latents.shape)")
        }
        let k = kernels
        var h = try postQuantConv.map { try convolution(latents, $0) } ?? latents
        h = try convolution(h, convIn)
        h = try resnet(midResnets.0, h)
        if let midAttention { h = try attention(midAttention, h) }
        h = try resnet(midResnets.1, h)
        for block in upBlocks {
            for r in block.resnets { h = try resnet(r, h) }
            if let upsampler = block.upsampler { h = try convolution(k.upsampleNearest2x(h), upsampler) }
        }
        return try convolution(groupNorm(h, convNormOut, silu: true), convOut)
    }

    /// Every convolution layer's weights.
    private var convolutionWeights: [CUDAConvolutionWeights] {
        let resnets = [midResnets.0, midResnets.1] + upBlocks.flatMap(\.resnets)
        return [convIn, convOut] + (postQuantConv.map { [$0] } ?? [])
            + resnets.flatMap { [$0.conv1, $0.conv2] + ($0.shortcut.map { [$0] } ?? []) } + upBlocks.compactMap(\.upsampler)
    }

    /// Like `CUDAUNet.releaseUnusedWeightLayouts`: after one `decode` at the size you will use, frees for every 3×3
    /// convolution the weight layout (NCHW or channels-last) its measured fastest path does not use. Returns the bytes freed.
    @discardableResult
    public func releaseUnusedWeightLayouts() -> Int { CUDAConvolutionWeights.releaseUnusedLayouts(convolutionWeights) }

    private func convolution(_ x: CUDATensor, _ w: CUDAConvolutionWeights) throws -> CUDATensor {
        let y = try kernels.conv2d(x, weight: w.weight, bias: w.bias, stride: w.stride, padding: w.padding,
                                   weightChannelsLast: w.weightChannelsLast, forceChannelsLast: w.onlyChannelsLast)
        w.lastPath = kernels.lastConvolutionPath
        return y
    }

    private func groupNorm(_ x: CUDATensor, _ n: CUDANormWeights, silu: Bool) throws -> CUDATensor {
        try kernels.groupNorm(x, groups: n.groups, weight: n.weight, bias: n.bias, epsilon: n.epsilon, fusedSiLU: silu)
    }

    /// `ResnetBlock2D.callAsFunction` without time embedding: (shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))))
    /// / output_scale_factor.
    private func resnet(_ r: Resnet, _ x: CUDATensor) throws -> CUDATensor {
        var h = try convolution(groupNorm(x, r.norm1, silu: true), r.conv1)
        h = try convolution(groupNorm(h, r.norm2, silu: true), r.conv2)
        let residual = try r.shortcut.map { try convolution(x, $0) } ?? x
        return try kernels.biasResidual(h, bias: r.outputBias, residual: residual, scale: r.outputScale)
    }

    /// `VAEAttentionBlock.callAsFunction`: x + to_out(attention(group_norm(x) as H·W tokens)), one head.
    private func attention(_ a: Attention, _ x: CUDATensor) throws -> CUDATensor {
        let k = kernels
        let batch = x.shape[0], tokenCount = x.shape[2] * x.shape[3], c = a.channels
        let tokens = try k.channelsToTokens(groupNorm(x, a.norm, silu: false))
        let qkv = try k.linear(tokens, weight: a.queryKeyValue.weight, bias: a.queryKeyValue.bias)
        let attended = try withExtendedLifetime(qkv) {
            try k.gemmAttention(query: qkv.address, queryStride: 3 * c, key: qkv.address + UInt64(c * 2),
                                value: qkv.address + UInt64(c * 4), keyValueStride: 3 * c, batch: batch,
                                queries: tokenCount, keys: tokenCount, channels: c, heads: 1)
        }
        let projected = try k.linear(attended, weight: a.output.weight, bias: a.output.bias)
        return try k.tokensToChannelsAdding(projected, residual: x)
    }
}
