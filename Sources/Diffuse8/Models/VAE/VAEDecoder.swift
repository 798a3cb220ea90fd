/// diffusers' VAE `Decoder` (`norm_type="group"`): conv_in → mid block → up blocks
/// (`UpDecoderBlock2D`: layers_per_block + 1 resnets, then nearest 2× upsample + conv3×3 except in the
/// last block; channels `block_out_channels` reversed) → conv_norm_out (eps 1e-6) → SiLU → conv_out.
public final class VAEDecoder {
    /// One `UpDecoderBlock2D`.
    public struct UpBlock {
        public let resnets: [ResnetBlock2D]
        /// `upsamplers.0.conv`, applied after nearest 2× upsampling; nil in the last block.
        public let upsampleConv: Conv2d?
    }

    public let convIn: Conv2d
    public let midBlock: VAEMidBlock
    public let upBlocks: [UpBlock]
    public let normOut: GroupNorm
    public let convOut: Conv2d

    /// Loads `<prefix>.conv_in`, `.mid_block`, `.up_blocks.<i>`, `.conv_norm_out`, `.conv_out`.
    public init(_ store: TensorStore, _ prefix: String, configuration c: VAEConfiguration) throws {
        let groups = c.normNumGroups
        convIn = try Conv2d(store, prefix + ".conv_in", padding: 1)
        midBlock = try VAEMidBlock(store, prefix + ".mid_block", groups: groups, addAttention: c.midBlockAddAttention)
        let levels = c.blockOutChannels.count
        upBlocks = try (0..<levels).map { i in
            let block = prefix + ".up_blocks.\(i)"
            let resnets = try (0...c.layersPerBlock).map {
                try ResnetBlock2D(store, block + ".resnets.\($0)", groups: groups, epsilon: 1e-6)
            }
            let upsample = i < levels - 1 ? try Conv2d(store, block + ".upsamplers.0.conv", padding: 1) : nil
            return UpBlock(resnets: resnets, upsampleConv: upsample)
        }
        normOut = try GroupNorm(store, prefix + ".conv_norm_out", groups: groups, epsilon: 1e-6)
        convOut = try Conv2d(store, prefix + ".conv_out", padding: 1)
    }

    /// z: [N, latent_channels, h, w] (after post_quant_conv) → [N, out_channels, h·f, w·f], on any backend.
    func forward<B: ModelBackend>(_ b: B, _ z: B.Value, plan: FusionPlan?) throws -> B.Value {
        var h = try midBlock.forward(b, b.conv2d(z, convIn), plan: plan)
        for block in upBlocks {
            for resnet in block.resnets { h = try resnet.forward(b, h, time: nil) }
            if let conv = block.upsampleConv {
                let shape = b.shape(of: h)
                h = try b.conv2d(b.upsampleNearest(h, height: 2 * shape[2], width: 2 * shape[3]), conv)
            }
        }
        return try b.conv2d(b.groupNorm(h, normOut, silu: true), convOut)
    }
}
