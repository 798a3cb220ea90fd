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

    /// Loads `<prefix>.q_proj`, `.k_proj`, `.v_proj`, `.out_proj`.
    public init(_ store: TensorStore, _ prefix: String, heads: Int) throws {
        queryProjection = try Linear(store, prefix + ".q_proj")
        keyProjection = try Linear(store, prefix + ".k_proj")
        valueProjection = try Linear(store, prefix + ".v_proj")
        outputProjection = try Linear(store, prefix + ".out_proj")
        self.heads = heads
    }

    /// Causal self-attention of x [batch, tokens, hidden] with `out_proj` adding `residual`.
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, residual: B.Value, plan: FusionPlan?) throws -> B.Value {
        let (q, k, v) = try b.selfAttentionProjections(x, query: queryProjection, key: keyProjection, value: valueProjection,
                                                       module: self, plan: plan)
        let attended = try b.attention(query: q, key: k, value: v, heads: heads, causal: true, fp8: false)
        return try b.linear(attended, outputProjection, residual: residual)
    }

    /// Causal scaled dot-product attention (`F.scaled_dot_product_attention(is_causal=True)`) on heads
    /// split from the channel dimension. q, k, v: [B, L, H·D] → [B, L, H·D]. Query i attends to keys 0…i.
    public static func causalAttention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int) -> Tensor {
        CPUKernels.attention(query: q, key: k, value: v, heads: heads, causal: true)
    }
}
