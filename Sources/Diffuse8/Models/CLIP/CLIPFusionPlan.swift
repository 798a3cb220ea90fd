/// The fusions of a CLIP text encoder for backends that fuse: each layer's `q_proj`/`k_proj`/`v_proj` as one
/// [3·hidden, hidden] product that causal attention reads in place (same function as the three layers).
public final class CLIPFusionPlan {
    /// Per `CLIPAttention` module: Q, K, V stacked.
    public let selfProjections: [ObjectIdentifier: LinearStack]

    public init(_ encoder: CLIPTextModel) throws {
        var stacks: [ObjectIdentifier: LinearStack] = [:]
        for layer in encoder.layers {
            let a = layer.selfAttention
            stacks[ObjectIdentifier(a)] = try LinearStack([a.queryProjection, a.keyProjection, a.valueProjection])
        }
        selfProjections = stacks
    }
}
