/// diffusers' VAE `Decoder` (`norm_type="group"`): conv_in → mid block → up blocks
/// (`UpDecoderBlock2D`: layers_per_block + 1 resnets, then nearest 2× upsample + conv3×3 except in the
/// last block; channels `block_out_channels` reversed) → conv_norm_out (eps 1e-6) → SiLU → conv_out.
public final class VAEDecoder {
    /// One `UpDecoderBlock2D`.
    public struct UpBlock {
        public let resnets: [ResnetBlock2D]
        /// `upsamplers.0` (nearest 2×, then its conv); nil in the last block.
        public let upsampler: Upsample2D?
    }

    public let convIn: Conv2d
    public let midBlock: VAEMidBlock
    public let upBlocks: [UpBlock]
    public let normOut: GroupNorm
    public let convOut: Conv2d

    /// Loads `<prefix>.conv_in`, `.mid_block`, `.up_blocks.<i>`, `.conv_norm_out`, `.conv_out`, checking every
    /// shape against the configuration.
    init(_ loader: ComponentWeightAudit, _ prefix: String, configuration c: VAEConfiguration) throws {
        let channels = Array(c.blockOutChannels.reversed()), groups = c.normNumGroups
        convIn = try loader.conv(prefix + ".conv_in", in: c.latentChannels, out: channels[0], kernel: 3, padding: 1)
        midBlock = try VAEMidBlock(loader, prefix + ".mid_block", channels: channels[0], groups: groups, addAttention: c.midBlockAddAttention)
        upBlocks = try channels.indices.map { i in
            let block = prefix + ".up_blocks.\(i)", input = channels[max(i - 1, 0)], output = channels[i]
            let resnets = try (0...c.layersPerBlock).map {
                try loader.resnet("\(block).resnets.\($0)", in: $0 == 0 ? input : output, out: output, groups: groups, epsilon: 1e-6)
            }
            let last = i == channels.count - 1
            return UpBlock(resnets: resnets, upsampler: last ? nil : try Upsample2D(loader, block + ".upsamplers.0", channels: output))
        }
        normOut = try loader.groupNorm(prefix + ".conv_norm_out", channels: channels.last!, groups: groups, epsilon: 1e-6)
        convOut = try loader.conv(prefix + ".conv_out", in: channels.last!, out: c.outChannels, kernel: 3, padding: 1)
    }

    /// z: [N, latent_channels, h, w] (after post_quant_conv) → [N, out_channels, h·f, w·f], on any backend.
    func forward<B: ModelBackend>(_ b: B, _ z: B.Value, plan: FusionPlan?) throws -> B.Value {
        var h = try midBlock.forward(b, b.conv2d(z, convIn), plan: plan)
        for block in upBlocks {
            for resnet in block.resnets { h = try resnet.forward(b, h, time: nil) }
            if let upsampler = block.upsampler { h = try upsampler.forward(b, h) }
        }
        return try b.conv2d(b.groupNorm(h, normOut, silu: true), convOut)
    }
}
