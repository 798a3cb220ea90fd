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

    /// x: [batch, tokens, hidden] → [batch, tokens, hidden].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let attended = Self.causalAttention(query: queryProjection(x), key: keyProjection(x),
                                            value: valueProjection(x), heads: heads)
        return outputProjection(attended)
    }

    /// Causal scaled dot-product attention (`F.scaled_dot_product_attention(is_causal=True)`) on heads
    /// split from the channel dimension. q, k, v: [B, L, H·D] → [B, L, H·D]. Query i attends to keys 0…i.
    public static func causalAttention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int) -> Tensor {
        CPUKernels.attention(query: q, key: k, value: v, heads: heads, causal: true)
    }
}
