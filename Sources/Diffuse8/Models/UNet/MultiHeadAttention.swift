/// diffusers' `Attention` as the UNet's transformer blocks use it (default `AttnProcessor2_0`, no norms, no
/// masks, no residual inside): `to_out.0(sdpa(to_q(x), to_k(c), to_v(c)))` with `heads` heads of
/// `channels / heads` each and scale 1/√head_dim. `c` is `x` for self-attention (`attn1`) and the text
/// encoder's hidden states for cross-attention (`attn2`).
///
/// `upcast_attention` / `upcast_softmax` only matter in FP16 and have no effect here.
public final class MultiHeadAttention {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let output: Linear
    public let heads: Int
    /// Level-4 FP8 attention (Q, K, V and the softmax probabilities in FP8), set by the quantized-model loader.
    public var usesFP8Attention = false
    /// Level 4: the amax the softmax probabilities are rounded to FP8 with (calibrated; 1 for folders without one).
    public var fp8ProbabilityAmax: Float = 1

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, contextChannels: Int, heads: Int) throws {
        query = try loader.linear(prefix + ".to_q", in: channels, out: channels, bias: false)
        key = try loader.linear(prefix + ".to_k", in: contextChannels, out: channels, bias: false)
        value = try loader.linear(prefix + ".to_v", in: contextChannels, out: channels, bias: false)
        output = try loader.linear(prefix + ".to_out.0", in: channels, out: channels)
        self.heads = heads
    }

    /// Self-attention (`attn1`) or, with `cross`, attention to the text context (`attn2`) of the normed tokens
    /// x [B, L, C], `to_out.0` adding `residual`. Keys and values of the context come from the plan when it computed
    /// them once per forward.
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value, cross: Bool, residual: B.Value) throws -> B.Value {
        let b = s.backend, channels = query.outFeatures
        let q, k, v: Columns<B.Value>
        if !cross {
            (q, k, v) = try b.selfAttentionProjections(x, query: query, key: key, value: value, module: self, plan: s.plan)
        } else if let slot = s.plan?.contextSlots[ObjectIdentifier(self)], slot.stack < s.contextKV.count {
            let kv = s.contextKV[slot.stack]
            (q, k, v) = (Columns(try b.linear(x, query, residual: nil), width: channels),
                         Columns(kv, offset: slot.offset, width: channels), Columns(kv, offset: slot.offset + channels, width: channels))
        } else {
            (q, k, v) = (Columns(try b.linear(x, query, residual: nil), width: channels),
                         Columns(try b.linear(s.context, key, residual: nil), width: channels),
                         Columns(try b.linear(s.context, value, residual: nil), width: channels))
        }
        let context = usesFP8Attention
            ? try b.fp8Attention(query: q, key: k, value: v, heads: heads, probabilityAmax: fp8ProbabilityAmax, module: self)
            : try b.attention(query: q, key: k, value: v, heads: heads, module: self)
        return try b.linear(context, output, residual: residual)
    }

    var linearLayers: [Linear] { [query, key, value, output] }

    /// The module's state-dict prefix ("….attn1"), from its query projection's name.
    public var name: String { query.name.hasSuffix(".to_q") ? String(query.name.dropLast(".to_q".count)) : query.name }
}
