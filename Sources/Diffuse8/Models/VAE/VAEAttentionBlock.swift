/// The attention in the VAE's mid block: diffusers' `Attention` built by `UNetMidBlock2D` with
/// `heads = 1`, `dim_head = channels`, `group_norm` (eps 1e-6), `residual_connection=True`,
/// `rescale_output_factor=1`, biases on `to_q`/`to_k`/`to_v`/`to_out.0`:
/// x + to_out(attention(group_norm(x) seen as H·W tokens)).
///
/// Also loads the legacy names (`query`, `key`, `value`, `proj_attn`) that old checkpoints use and
/// diffusers renames on load.
public final class VAEAttentionBlock {
    public let groupNorm: GroupNorm
    public let toQuery: Linear
    public let toKey: Linear
    public let toValue: Linear
    public let toOut: Linear

    /// Loads `<prefix>.group_norm`, `.to_q`, `.to_k`, `.to_v`, `.to_out.0` (or the legacy names).
    public init(_ store: TensorStore, _ prefix: String, groups: Int) throws {
        groupNorm = try GroupNorm(store, prefix + ".group_norm", groups: groups, epsilon: 1e-6)
        let legacy = !store.contains(prefix + ".to_q.weight") && store.contains(prefix + ".query.weight")
        toQuery = try Self.projection(store, prefix, legacy ? "query" : "to_q")
        toKey = try Self.projection(store, prefix, legacy ? "key" : "to_k")
        toValue = try Self.projection(store, prefix, legacy ? "value" : "to_v")
        toOut = try Self.projection(store, prefix, legacy ? "proj_attn" : "to_out.0")
    }

    /// x: NCHW → NCHW, on any backend (Q/K/V as one product when the plan stacks them).
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, plan: FusionPlan?) throws -> B.Value {
        let shape = b.shape(of: x), height = shape[2], width = shape[3]
        let tokens = try b.channelsToTokens(b.groupNorm(x, groupNorm, silu: false))
        let (q, k, v) = try b.selfAttentionProjections(tokens, query: toQuery, key: toKey, value: toValue, module: self, plan: plan)
        let attended = try b.attention(query: q, key: k, value: v, heads: 1, causal: false, fp8: false)
        return try b.tokensToChannels(b.linear(attended, toOut, residual: nil), height: height, width: width, residual: x)
    }

    /// A Linear; legacy checkpoints store these as 1×1 conv weights [out, in, 1, 1], flattened here.
    private static func projection(_ store: TensorStore, _ prefix: String, _ name: String) throws -> Linear {
        let layer = try Linear(store, prefix + "." + name)
        if layer.weight.rank == 4 { layer.weight = layer.weight.reshaped(Array(layer.weight.shape.prefix(2))) }
        return layer
    }
}
