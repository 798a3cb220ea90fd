/// diffusers' `UNetMidBlock2DCrossAttn`: resnet, then (`Transformer2DModel`, resnet) once (diffusers'
/// `num_layers=1`); resnet outputs are divided by `mid_block_scale_factor`.
public final class UNetMidBlock: UNetResnetAttentionBlock {
    public let resnets: [ResnetBlock2D]
    public let attentions: [Transformer2DModel]

    init(_ loader: ComponentWeightAudit, configuration c: UNetConfiguration) throws {
        let channels = c.blockOutChannels.last!
        resnets = try (0..<2).map {
            try loader.resnet("mid_block.resnets.\($0)", in: channels, out: channels, timeEmbedding: c.timeEmbeddingDim,
                              groups: c.normNumGroups, epsilon: c.normEpsilon, outputScaleFactor: c.midBlockScaleFactor)
        }
        attentions = [try Transformer2DModel(loader, "mid_block.attentions.0", channels: channels,
                                             level: c.blockOutChannels.count - 1, configuration: c)]
    }

    var resamplingConv: Conv2d? { nil }

    /// resnets.0 → attentions.0 → resnets.1.
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value) throws -> B.Value {
        try resnets.indices.reduce(x) { h, j in try forwardLayer(j, s, h) }
    }
}
