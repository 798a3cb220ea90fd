/// Checks every loaded VAE layer against the channel counts the configuration implies, so a config that
/// does not belong to the weights is an error naming the tensor instead of a crash or wrong math.
enum VAEWeightValidation {
    typealias Check = ComponentWeightAudit

    /// A resnet from `input` to `output` channels (no time embedding in the VAE).
    static func resnet(_ block: ResnetBlock2D, in input: Int, out output: Int) throws {
        try Check.check(block, in: input, out: output, timeEmbedding: nil)
    }

    static func midBlock(_ block: VAEMidBlock, channels: Int) throws {
        try resnet(block.firstResnet, in: channels, out: channels)
        if let attention = block.attention {
            let name = String(attention.toQuery.name.dropLast(".to_q".count))
            try Check.check(attention.groupNorm, channels: channels, name + ".group_norm")
            for linear in [attention.toQuery, attention.toKey, attention.toValue, attention.toOut] {
                try Check.check(linear, out: channels, in: channels)
            }
        }
        try resnet(block.secondResnet, in: channels, out: channels)
    }

    static func encoder(_ e: VAEEncoder, _ c: VAEConfiguration) throws {
        let channels = c.blockOutChannels
        try Check.check(e.convIn, out: channels[0], in: c.inChannels, kernel: 3)
        for (i, block) in e.downBlocks.enumerated() {
            let input = i == 0 ? channels[0] : channels[i - 1], output = channels[i]
            for (j, r) in block.resnets.enumerated() { try resnet(r, in: j == 0 ? input : output, out: output) }
            if let down = block.downsampleConv { try Check.check(down, out: output, in: output, kernel: 3) }
        }
        try midBlock(e.midBlock, channels: channels.last!)
        try Check.check(e.normOut, channels: channels.last!, "encoder.conv_norm_out")
        try Check.check(e.convOut, out: 2 * c.latentChannels, in: channels.last!, kernel: 3)
    }

    static func decoder(_ d: VAEDecoder, _ c: VAEConfiguration) throws {
        let reversed = Array(c.blockOutChannels.reversed())
        try Check.check(d.convIn, out: reversed[0], in: c.latentChannels, kernel: 3)
        try midBlock(d.midBlock, channels: reversed[0])
        for (i, block) in d.upBlocks.enumerated() {
            let input = i == 0 ? reversed[0] : reversed[i - 1], output = reversed[i]
            for (j, r) in block.resnets.enumerated() { try resnet(r, in: j == 0 ? input : output, out: output) }
            if let up = block.upsampleConv { try Check.check(up, out: output, in: output, kernel: 3) }
        }
        try Check.check(d.normOut, channels: c.blockOutChannels[0], "decoder.conv_norm_out")
        try Check.check(d.convOut, out: c.outChannels, in: c.blockOutChannels[0], kernel: 3)
    }
}
