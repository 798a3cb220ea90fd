/// transformers' `CLIPAttention` as the text model runs it: multi-head self-attention with a causal
/// mask (token i sees tokens 0…i), `q_proj`/`k_proj`/`v_proj`/`out_proj` with biases, scale head_dim^-½.
///
/// No padding mask: like diffusers' pipelines, which call the text encoder without an attention_mask.
public final class CLIPAttention {
    public let queryProjection: Linear
    public let keyProjection: Linear
    public let valueProjection: Linear
    public let outputProjection: Linear
    public let heads: Int

    /// Loads `<prefix>.q_proj`, `.k_proj`, `.v_proj`, `.out_proj`, each [hidden, hidden].
    init(_ loader: ComponentWeightAudit, _ prefix: String, hidden: Int, heads: Int) throws {
        queryProjection = try loader.linear(prefix + ".q_proj", in: hidden, out: hidden)
        keyProjection = try loader.linear(prefix + ".k_proj", in: hidden, out: hidden)
        valueProjection = try loader.linear(prefix + ".v_proj", in: hidden, out: hidden)
        outputProjection = try loader.linear(prefix + ".out_proj", in: hidden, out: hidden)
        self.heads = heads
    }

    /// Causal self-attention of x [batch, tokens, hidden] with `out_proj` adding `residual`.
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, residual: B.Value, plan: FusionPlan?) throws -> B.Value {
        let (q, k, v) = try b.selfAttentionProjections(x, query: queryProjection, key: keyProjection, value: valueProjection,
                                                       module: self, plan: plan)
        let attended = try b.attention(query: q, key: k, value: v, heads: heads, causal: true, fp8: false)
        return try b.linear(attended, outputProjection, residual: residual)
    }

    var linearLayers: [Linear] { [queryProjection, keyProjection, valueProjection, outputProjection] }
}
