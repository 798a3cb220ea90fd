/// Checks every loaded VAE layer against the channel counts the configuration implies, so a config that
/// does not belong to the weights is an error naming the tensor instead of a crash or wrong math.
enum VAEWeightValidation {
    typealias Check = ComponentWeightAudit

    static func conv(_ conv: Conv2d, out: Int, in input: Int, kernel: Int) throws {
        try Check.requireShape(conv.weight, [out, input, kernel, kernel], conv.name + ".weight")
        if let bias = conv.bias { try Check.requireShape(bias, [out], conv.name + ".bias") }
    }

    static func norm(_ norm: GroupNorm, channels: Int, _ name: String) throws {
        try Check.requireShape(norm.weight, [channels], name + ".weight")
        try Check.requireShape(norm.bias, [channels], name + ".bias")
    }

    /// A resnet from `input` to `output` channels; a 1×1 `conv_shortcut` exactly when they differ.
    static func resnet(_ block: ResnetBlock2D, in input: Int, out output: Int) throws {
        let name = String(block.conv1.name.dropLast(".conv1".count))
        try norm(block.norm1, channels: input, name + ".norm1")
        try conv(block.conv1, out: output, in: input, kernel: 3)
        try norm(block.norm2, channels: output, name + ".norm2")
        try conv(block.conv2, out: output, in: output, kernel: 3)
        switch (block.shortcut, input == output) {
        case (nil, true): break
        case (let shortcut?, false): try conv(shortcut, out: output, in: input, kernel: 1)
        case (nil, false):
            throw ComponentConfigurationError("VAE weights lack '\(name).conv_shortcut.weight', needed for \(input) → \(output) channels")
        case (_?, true):
            throw ComponentConfigurationError("VAE weights have '\(name).conv_shortcut.weight' although \(name) keeps \(input) channels")
        }
        if block.timeEmbeddingProjection != nil {
            throw ComponentConfigurationError("VAE weights have '\(name).time_emb_proj', which an AutoencoderKL resnet has not")
        }
    }

    static func midBlock(_ block: VAEMidBlock, channels: Int) throws {
        try resnet(block.firstResnet, in: channels, out: channels)
        if let attention = block.attention {
            let name = String(attention.toQuery.name.dropLast(".to_q".count))
            try norm(attention.groupNorm, channels: channels, name + ".group_norm")
            for linear in [attention.toQuery, attention.toKey, attention.toValue, attention.toOut] {
                try Check.requireShape(linear.weight, [channels, channels], linear.name + ".weight")
                if let bias = linear.bias { try Check.requireShape(bias, [channels], linear.name + ".bias") }
            }
        }
        try resnet(block.secondResnet, in: channels, out: channels)
    }

    static func encoder(_ e: VAEEncoder, _ c: VAEConfiguration) throws {
        let channels = c.blockOutChannels
        try conv(e.convIn, out: channels[0], in: c.inChannels, kernel: 3)
        for (i, block) in e.downBlocks.enumerated() {
            let input = i == 0 ? channels[0] : channels[i - 1], output = channels[i]
            for (j, r) in block.resnets.enumerated() { try resnet(r, in: j == 0 ? input : output, out: output) }
            if let down = block.downsampleConv { try conv(down, out: output, in: output, kernel: 3) }
        }
        try midBlock(e.midBlock, channels: channels.last!)
        try norm(e.normOut, channels: channels.last!, "encoder.conv_norm_out")
        try conv(e.convOut, out: 2 * c.latentChannels, in: channels.last!, kernel: 3)
    }

    static func decoder(_ d: VAEDecoder, _ c: VAEConfiguration) throws {
        let reversed = Array(c.blockOutChannels.reversed())
        try conv(d.convIn, out: reversed[0], in: c.latentChannels, kernel: 3)
        try midBlock(d.midBlock, channels: reversed[0])
        for (i, block) in d.upBlocks.enumerated() {
            let input = i == 0 ? reversed[0] : reversed[i - 1], output = reversed[i]
            for (j, r) in block.resnets.enumerated() { try resnet(r, in: j == 0 ? input : output, out: output) }
            if let up = block.upsampleConv { try conv(up, out: output, in: output, kernel: 3) }
        }
        try norm(d.normOut, channels: c.blockOutChannels[0], "decoder.conv_norm_out")
        try conv(d.convOut, out: c.outChannels, in: c.blockOutChannels[0], kernel: 3)
    }
}
