/// transformers' `CLIPEncoderLayer` (pre-norm): x + attn(layer_norm1(x)), then + mlp(layer_norm2(·)),
/// where the MLP is `fc1` → activation (`hidden_act`) → `fc2`.
public final class CLIPEncoderLayer {
    public let layerNorm1: LayerNorm
    public let selfAttention: CLIPAttention
    public let layerNorm2: LayerNorm
    public let fc1: Linear
    public let fc2: Linear
    public let activation: CLIPTextConfiguration.Activation

    /// Loads `<prefix>.layer_norm1`, `.self_attn.*`, `.layer_norm2`, `.mlp.fc1`, `.mlp.fc2`, checking every shape
    /// against the configuration.
    init(_ loader: ComponentWeightAudit, _ prefix: String, configuration c: CLIPTextConfiguration) throws {
        let hidden = c.hiddenSize
        layerNorm1 = try loader.layerNorm(prefix + ".layer_norm1", channels: hidden, epsilon: c.layerNormEpsilon)
        selfAttention = try CLIPAttention(loader, prefix + ".self_attn", hidden: hidden, heads: c.numAttentionHeads)
        layerNorm2 = try loader.layerNorm(prefix + ".layer_norm2", channels: hidden, epsilon: c.layerNormEpsilon)
        fc1 = try loader.linear(prefix + ".mlp.fc1", in: hidden, out: c.intermediateSize)
        fc2 = try loader.linear(prefix + ".mlp.fc2", in: c.intermediateSize, out: hidden)
        activation = c.hiddenAct
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

    var linearLayers: [Linear] { selfAttention.linearLayers + [fc1, fc2] }
}
