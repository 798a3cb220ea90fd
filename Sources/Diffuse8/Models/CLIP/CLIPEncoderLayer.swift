/// transformers' `CLIPEncoderLayer` (pre-norm): x + attn(layer_norm1(x)), then + mlp(layer_norm2(·)),
/// where the MLP is `fc1` → activation (`hidden_act`) → `fc2`.
public final class CLIPEncoderLayer {
    public let layerNorm1: LayerNorm
    public let selfAttention: CLIPAttention
    public let layerNorm2: LayerNorm
    public let fc1: Linear
    public let fc2: Linear
    public let activation: CLIPTextConfiguration.Activation

    /// Loads `<prefix>.layer_norm1`, `.self_attn.*`, `.layer_norm2`, `.mlp.fc1`, `.mlp.fc2`.
    public init(_ store: TensorStore, _ prefix: String, configuration: CLIPTextConfiguration) throws {
        layerNorm1 = try LayerNorm(store, prefix + ".layer_norm1", epsilon: configuration.layerNormEpsilon)
        selfAttention = try CLIPAttention(store, prefix + ".self_attn", heads: configuration.numAttentionHeads)
        layerNorm2 = try LayerNorm(store, prefix + ".layer_norm2", epsilon: configuration.layerNormEpsilon)
        fc1 = try Linear(store, prefix + ".mlp.fc1")
        fc2 = try Linear(store, prefix + ".mlp.fc2")
        activation = configuration.hiddenAct
        let hidden = configuration.hiddenSize, inner = configuration.intermediateSize
        try ComponentWeightAudit.check(layerNorm1, channels: hidden, prefix + ".layer_norm1")
        try ComponentWeightAudit.check(layerNorm2, channels: hidden, prefix + ".layer_norm2")
        let attention = selfAttention
        for (linear, out, input) in [(attention.queryProjection, hidden, hidden), (attention.keyProjection, hidden, hidden),
                                     (attention.valueProjection, hidden, hidden), (attention.outputProjection, hidden, hidden),
                                     (fc1, inner, hidden), (fc2, hidden, inner)] {
            try ComponentWeightAudit.check(linear, out: out, in: input)
        }
    }

    /// x: [batch, tokens, hidden] → same shape.
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, plan: FusionPlan?) throws -> B.Value {
        let attended = try selfAttention.forward(b, b.layerNorm(x, layerNorm1), residual: x, plan: plan)
        var h = try b.linear(b.layerNorm(attended, layerNorm2), fc1, residual: nil)
        switch activation {
        case .quickGELU: h = try b.quickGELU(h)
        case .gelu: h = try b.gelu(h)
        }
        return try b.linear(h, fc2, residual: attended)
    }

    var linearLayers: [Linear] {
        [selfAttention.queryProjection, selfAttention.keyProjection, selfAttention.valueProjection,
         selfAttention.outputProjection, fc1, fc2]
    }
}
