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

    /// Loads `<prefix>.group_norm`, `.to_q`, `.to_k`, `.to_v`, `.to_out.0` (or the legacy names), each checked
    /// against `channels`.
    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, groups: Int) throws {
        groupNorm = try loader.groupNorm(prefix + ".group_norm", channels: channels, groups: groups, epsilon: 1e-6)
        let legacy = !loader.contains(prefix + ".to_q.weight") && loader.contains(prefix + ".query.weight")
        func projection(_ name: String, legacy legacyName: String) throws -> Linear {
            let layer = try Linear(loader, prefix + "." + (legacy ? legacyName : name))
            // Legacy checkpoints store these as 1×1 conv weights [out, in, 1, 1].
            if layer.weight.rank == 4 { layer.weight = layer.weight.reshaped(Array(layer.weight.shape.prefix(2))) }
            try ComponentWeightAudit.check(layer, out: channels, in: channels)
            return layer
        }
        toQuery = try projection("to_q", legacy: "query")
        toKey = try projection("to_k", legacy: "key")
        toValue = try projection("to_v", legacy: "value")
        toOut = try projection("to_out.0", legacy: "proj_attn")
    }

    /// x: NCHW → NCHW, on any backend (Q/K/V as one product when the plan stacks them).
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, plan: FusionPlan?) throws -> B.Value {
        let shape = b.shape(of: x), height = shape[2], width = shape[3]
        let tokens = try b.channelsToTokens(b.groupNorm(x, groupNorm, silu: false))
        let (q, k, v) = try b.selfAttentionProjections(tokens, query: toQuery, key: toKey, value: toValue, module: self, plan: plan)
        let attended = try b.attention(query: q, key: k, value: v, heads: 1, causal: false, fp8: false)
        return try b.tokensToChannels(b.linear(attended, toOut, residual: nil), height: height, width: width, residual: x)
    }

    /// `to_q`, `to_k`, `to_v`, `to_out.0`.
    var linearLayers: [Linear] { [toQuery, toKey, toValue, toOut] }
}
