/// diffusers' VAE `Encoder` (`double_z=True`): conv_in → down blocks (`DownEncoderBlock2D`:
/// layers_per_block resnets, then, except in the last block, `Downsample2D` with `padding=0`: an
/// asymmetric zero pad (left 0, right 1, top 0, bottom 1) and a stride-2 conv3×3) → mid block →
/// conv_norm_out (eps 1e-6) → SiLU → conv_out (2 × latent_channels: mean and log-variance).
public final class VAEEncoder {
    /// One `DownEncoderBlock2D`.
    public struct DownBlock {
        public let resnets: [ResnetBlock2D]
        /// `downsamplers.0.conv` (stride 2, no padding of its own); nil in the last block.
        public let downsampleConv: Conv2d?
    }

    public let convIn: Conv2d
    public let downBlocks: [DownBlock]
    public let midBlock: VAEMidBlock
    public let normOut: GroupNorm
    public let convOut: Conv2d

    /// Loads `<prefix>.conv_in`, `.down_blocks.<i>`, `.mid_block`, `.conv_norm_out`, `.conv_out`.
    public init(_ store: TensorStore, _ prefix: String, configuration c: VAEConfiguration) throws {
        let groups = c.normNumGroups
        convIn = try Conv2d(store, prefix + ".conv_in", padding: 1)
        let levels = c.blockOutChannels.count
        downBlocks = try (0..<levels).map { i in
            let block = prefix + ".down_blocks.\(i)"
            let resnets = try (0..<c.layersPerBlock).map {
                try ResnetBlock2D(store, block + ".resnets.\($0)", groups: groups, epsilon: 1e-6)
            }
            let downsample = i < levels - 1 ? try Conv2d(store, block + ".downsamplers.0.conv", stride: 2, padding: 0) : nil
            return DownBlock(resnets: resnets, downsampleConv: downsample)
        }
        midBlock = try VAEMidBlock(store, prefix + ".mid_block", groups: groups, addAttention: c.midBlockAddAttention)
        normOut = try GroupNorm(store, prefix + ".conv_norm_out", groups: groups, epsilon: 1e-6)
        convOut = try Conv2d(store, prefix + ".conv_out", padding: 1)
    }

    /// image: [N, in_channels, H, W] → [N, 2 × latent_channels, H/f, W/f] (before quant_conv), on any backend.
    func forward<B: ModelBackend>(_ b: B, _ image: B.Value, plan: FusionPlan?) throws -> B.Value {
        var h = try b.conv2d(image, convIn)
        for block in downBlocks {
            for resnet in block.resnets { h = try resnet.forward(b, h, time: nil) }
            if let conv = block.downsampleConv { h = try b.conv2d(b.padRightBottom(h), conv) }
        }
        return try b.conv2d(b.groupNorm(midBlock.forward(b, h, plan: plan), normOut, silu: true), convOut)
    }
}
