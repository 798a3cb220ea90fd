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

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, contextChannels: Int, heads: Int) throws {
        query = try loader.linear(prefix + ".to_q", in: channels, out: channels, bias: false)
        key = try loader.linear(prefix + ".to_k", in: contextChannels, out: channels, bias: false)
        value = try loader.linear(prefix + ".to_v", in: contextChannels, out: channels, bias: false)
        output = try loader.linear(prefix + ".to_out.0", in: channels, out: channels)
        self.heads = heads
    }

    /// x: [B, L, channels]; context: [B, Lc, contextChannels], or nil for self-attention.
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let c = context ?? x
        let attended = CPUKernels.attention(query: query(x), key: key(c), value: value(c), heads: heads)
        return output(attended)
    }

    var linearLayers: [Linear] { [query, key, value, output] }
}
