/// diffusers' VAE `Encoder` (`double_z=True`): conv_in → down blocks (`DownEncoderBlock2D`:
/// layers_per_block resnets, then, except in the last block, `Downsample2D` with `padding=0`: an
/// asymmetric zero pad (left 0, right 1, top 0, bottom 1) and a stride-2 conv3×3) → mid block →
/// conv_norm_out (eps 1e-6) → SiLU → conv_out (2 × latent_channels: mean and log-variance).
public final class VAEEncoder {
    /// One `DownEncoderBlock2D`.
    public struct DownBlock {
        public let resnets: [ResnetBlock2D]
        /// `downsamplers.0` (padding 0); nil in the last block.
        public let downsampler: Downsample2D?
    }

    public let convIn: Conv2d
    public let downBlocks: [DownBlock]
    public let midBlock: VAEMidBlock
    public let normOut: GroupNorm
    public let convOut: Conv2d

    /// Loads `<prefix>.conv_in`, `.down_blocks.<i>`, `.mid_block`, `.conv_norm_out`, `.conv_out`, checking every
    /// shape against the configuration.
    init(_ loader: ComponentWeightAudit, _ prefix: String, configuration c: VAEConfiguration) throws {
        let channels = c.blockOutChannels, groups = c.normNumGroups
        convIn = try loader.conv(prefix + ".conv_in", in: c.inChannels, out: channels[0], kernel: 3, padding: 1)
        downBlocks = try channels.indices.map { i in
            let block = prefix + ".down_blocks.\(i)", input = channels[max(i - 1, 0)], output = channels[i]
            let resnets = try (0..<c.layersPerBlock).map {
                try loader.resnet("\(block).resnets.\($0)", in: $0 == 0 ? input : output, out: output, groups: groups, epsilon: 1e-6)
            }
            let last = i == channels.count - 1
            return DownBlock(resnets: resnets,
                             downsampler: last ? nil : try Downsample2D(loader, block + ".downsamplers.0", channels: output, padding: 0))
        }
        midBlock = try VAEMidBlock(loader, prefix + ".mid_block", channels: channels.last!, groups: groups, addAttention: c.midBlockAddAttention)
        normOut = try loader.groupNorm(prefix + ".conv_norm_out", channels: channels.last!, groups: groups, epsilon: 1e-6)
        convOut = try loader.conv(prefix + ".conv_out", in: channels.last!, out: 2 * c.latentChannels, kernel: 3, padding: 1)
    }

    /// image: [N, in_channels, H, W] → [N, 2 × latent_channels, H/f, W/f] (before quant_conv), on any backend.
    func forward<B: ModelBackend>(_ b: B, _ image: B.Value, plan: FusionPlan?) throws -> B.Value {
        var h = try b.conv2d(image, convIn)
        for block in downBlocks {
            for resnet in block.resnets { h = try resnet.forward(b, h, time: nil) }
            if let downsampler = block.downsampler { h = try downsampler.forward(b, h) }
        }
        return try b.conv2d(b.groupNorm(midBlock.forward(b, h, plan: plan), normOut, silu: true), convOut)
    }
}
