/// diffusers' `AutoencoderKL` (0.42.1) in FP32 on the CPU: the SD1.x / SDXL VAE.
///
/// `decode` is `vae.decode(z).sample` (post_quant_conv → decoder); `encode` is
/// `vae.encode(x).latent_dist` (encoder → quant_conv → split into mean and clamped log-variance).
/// Scaling by `scalingFactor` is the caller's job, as in diffusers' pipelines.
/// Weights are diffusers' state-dict names (`encoder.*`, `decoder.*`, `quant_conv`, `post_quant_conv`).
/// Limitations: no tiling or slicing (memory grows with the image), FP32 only (so `force_upcast` is moot).
public final class AutoencoderKL {
    public let configuration: VAEConfiguration
    public let encoder: VAEEncoder
    public let decoder: VAEDecoder
    public let quantConv: Conv2d?
    public let postQuantConv: Conv2d?

    /// Builds the model and checks the weights against the configuration: every tensor's shape, and that
    /// no tensor is left unused (a wrong `layers_per_block` or `use_quant_conv` is an error, not silent).
    public init(configuration: VAEConfiguration, weights store: TensorStore) throws {
        self.configuration = configuration
        let weights = ComponentWeightAudit(store, component: "AutoencoderKL")
        encoder = try VAEEncoder(weights, "encoder", configuration: configuration)
        decoder = try VAEDecoder(weights, "decoder", configuration: configuration)
        let latent = configuration.latentChannels
        quantConv = configuration.useQuantConv ? try weights.conv("quant_conv", in: 2 * latent, out: 2 * latent, kernel: 1) : nil
        postQuantConv = configuration.usePostQuantConv ? try weights.conv("post_quant_conv", in: latent, out: latent, kernel: 1) : nil
        try weights.requireAllUsed()
    }

    /// Loads `<directory>/config.json` and the weights `ComponentWeights` finds
    /// (`diffusion_pytorch_model.safetensors`, its sharded index, or the `fp16` variants).
    public static func load(directory: String) throws -> AutoencoderKL {
        let configuration = try VAEConfiguration(directory: directory)
        return try AutoencoderKL(configuration: configuration, weights: ComponentWeights.open(directory: directory))
    }

    /// `config.scaling_factor`: the pipeline divides latents by it before `decode`.
    public var scalingFactor: Float { configuration.scalingFactor }

    /// Image pixels per latent pixel along each side (8 for SD1.x / SDXL).
    public var downscaleFactor: Int { configuration.downscaleFactor }

    /// latents [N, latent_channels, h, w], already divided by `scalingFactor` → image [N, out_channels, h·f, w·f]
    /// in roughly [-1, 1] (not clamped), exactly `vae.decode(z).sample`; FP32 on the CPU.
    public func decode(_ latents: Tensor) -> Tensor {
        CPUBackend.unchecked { try decode(CPUBackend.shared, latents) }
    }

    /// `decode` on any backend: post_quant_conv (when configured) → decoder.
    public func decode<B: ModelBackend>(_ b: B, _ latents: B.Value) throws -> B.Value {
        let shape = b.shape(of: latents)
        guard shape.count == 4, shape[1] == configuration.latentChannels, shape[2] > 0, shape[3] > 0 else {
            throw ModelBackendError("VAE decode: latents \(shape) must be [N, \(configuration.latentChannels), h, w]")
        }
        let z = try postQuantConv.map { try b.conv2d(latents, $0) } ?? latents
        return try decoder.forward(b, z, plan: b.fusionPlan(for: self))
    }

    /// `vae.encode(image)` before the split into mean and log-variance: encoder → quant_conv, on any backend.
    public func encodeMoments<B: ModelBackend>(_ b: B, _ image: B.Value) throws -> B.Value {
        let shape = b.shape(of: image)
        guard shape.count == 4, shape[1] == configuration.inChannels, shape[2] > 0, shape[3] > 0 else {
            throw ModelBackendError("VAE encode: image \(shape) must be [N, \(configuration.inChannels), H, W]")
        }
        let h = try encoder.forward(b, image, plan: b.fusionPlan(for: self))
        return try quantConv.map { try b.conv2d(h, $0) } ?? h
    }

    /// Every resnet (encoder, then decoder).
    var resnets: [ResnetBlock2D] {
        encoder.downBlocks.flatMap(\.resnets) + encoder.midBlock.resnets + decoder.midBlock.resnets + decoder.upBlocks.flatMap(\.resnets)
    }

    /// The mid-block attentions (encoder, decoder).
    var attentions: [VAEAttentionBlock] { [encoder.midBlock.attention, decoder.midBlock.attention].compactMap { $0 } }

    /// Every Conv2d.
    public var convolutionLayers: [Conv2d] {
        [encoder.convIn, encoder.convOut, decoder.convIn, decoder.convOut]
            + encoder.downBlocks.compactMap(\.downsampler?.conv) + decoder.upBlocks.compactMap(\.upsampler?.conv)
            + [quantConv, postQuantConv].compactMap { $0 } + resnets.flatMap(\.convolutionLayers)
    }

    /// Every Linear (the mid-block attentions' projections).
    public var linearLayers: [Linear] { attentions.flatMap(\.linearLayers) }

    /// Every GroupNorm.
    public var groupNorms: [GroupNorm] {
        resnets.flatMap { [$0.norm1, $0.norm2] } + attentions.map(\.groupNorm) + [encoder.normOut, decoder.normOut]
    }

    /// image [N, in_channels, H, W] in [-1, 1], H and W multiples of `downscaleFactor` → the latent
    /// distribution's mean and (clamped) log-variance, each [N, latent_channels, H/f, W/f].
    public func encode(_ image: Tensor) -> (mean: Tensor, logVariance: Tensor) {
        let distribution = latentDistribution(image)
        return (distribution.mean, distribution.logVariance)
    }

    /// `vae.encode(image).latent_dist`, with `mode()` and a generator-free `sample(noise:)`.
    public func latentDistribution(_ image: Tensor) -> DiagonalGaussianDistribution {
        let moments = CPUBackend.unchecked { try encodeMoments(CPUBackend.shared, image) }
        // torch.chunk(moments, 2, dim=1): per image, the first half of the channels is the mean, the second the
        // log-variance, so as [2N, C/2, h, w] rows alternate between the two.
        let n = moments.shape[0], halves = moments.reshaped([2 * n, moments.shape[1] / 2, moments.shape[2], moments.shape[3]])
        func rows(_ offset: Int) -> Tensor { Tensor.concatenate((0..<n).map { halves.slice(2 * $0 + offset, 2 * $0 + offset + 1) }) }
        return DiagonalGaussianDistribution(mean: rows(0), logVariance: CPUKernels.map(rows(1)) { min(max($0, -30), 20) })
    }
}
