/// diffusers' `CrossAttnDownBlock2D` (resnet + `Transformer2DModel` pairs) and `DownBlock2D` (resnets only),
/// both with an optional trailing `Downsample2D`. Emits skip states for the up path: one per resnet(+attention) and
/// one after the downsampler.
public final class UNetDownBlock: UNetResnetAttentionBlock {
    public let resnets: [ResnetBlock2D]
    /// Empty for `DownBlock2D`.
    public let attentions: [Transformer2DModel]
    public let downsampler: Downsample2D?

    /// Down block `i`: from the previous block's channels (block 0: its own) to `block_out_channels[i]`.
    init(_ loader: ComponentWeightAudit, index i: Int, configuration c: UNetConfiguration) throws {
        let prefix = "down_blocks.\(i)"
        let input = c.blockOutChannels[max(i - 1, 0)], out = c.blockOutChannels[i]
        resnets = try (0..<c.layersPerBlock[i]).map { j in
            try loader.resnet("\(prefix).resnets.\(j)", in: j == 0 ? input : out, out: out,
                              timeEmbedding: c.timeEmbeddingDim, groups: c.normNumGroups, epsilon: c.normEpsilon,
                              outputScaleFactor: c.resnetOutputScaleFactor)
        }
        attentions = c.downBlockTypes[i] == .plain ? [] : try (0..<c.layersPerBlock[i]).map {
            try Transformer2DModel(loader, "\(prefix).attentions.\($0)", channels: out, level: i, configuration: c)
        }
        let isFinal = i == c.blockOutChannels.count - 1
        downsampler = isFinal ? nil : try Downsample2D(loader, "\(prefix).downsamplers.0", channels: out, padding: c.downsamplePadding)
    }

    var resamplingConv: Conv2d? { downsampler?.conv }

    /// Appends its skip states to `skips` and returns its output.
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value, skips: inout [B.Value]) throws -> B.Value {
        var h = x
        for j in resnets.indices {
            h = try forwardLayer(j, s, h)
            skips.append(h)
        }
        if let downsampler {
            h = try downsampler.forward(s.backend, h)
            skips.append(h)
        }
        return h
    }
}
