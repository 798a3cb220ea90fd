/// What the UNet's down, mid and up blocks share: resnets, each followed by a `Transformer2DModel` when the block
/// has attentions, and an optional down- or upsampler after the last one.
protocol UNetResnetAttentionBlock {
    var resnets: [ResnetBlock2D] { get }
    /// Empty for blocks without cross-attention; at most one per resnet.
    var attentions: [Transformer2DModel] { get }
    /// The down- or upsampler's conv, nil when the block has none.
    var resamplingConv: Conv2d? { get }
}

extension UNetResnetAttentionBlock {
    /// Resnet `j` on x, then transformer `j` when the block has one.
    func forwardLayer<B: ModelBackend>(_ j: Int, _ s: UNetForwardState<B>, _ x: B.Value) throws -> B.Value {
        let h = try resnets[j].forward(s.backend, x, time: s.time(for: resnets[j]))
        return j < attentions.count ? try attentions[j].forward(s, h) : h
    }

    /// The block's Linear layers, in execution order.
    var linearLayers: [Linear] {
        resnets.indices.flatMap { resnets[$0].linearLayers + ($0 < attentions.count ? attentions[$0].linearLayers : []) }
    }

    /// The block's Conv2d layers, in execution order.
    var convolutionLayers: [Conv2d] {
        resnets.indices.flatMap { resnets[$0].convolutionLayers + ($0 < attentions.count ? attentions[$0].convolutionLayers : []) }
            + (resamplingConv.map { [$0] } ?? [])
    }
}
