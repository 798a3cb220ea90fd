/// diffusers' `BasicTransformerBlock` as the UNet builds it (`norm_type="layer_norm"`, LayerNorm eps 1e-5,
/// self-attention then cross-attention then GEGLU feed-forward, each pre-normed with a residual add).
///
/// Limitations: no `only_cross_attention`, no attention masks, no GLIGEN fuser, no chunked feed-forward.
public final class BasicTransformerBlock {
    public let norm1: LayerNorm
    public let selfAttention: MultiHeadAttention
    public let norm2: LayerNorm
    public let crossAttention: MultiHeadAttention
    public let norm3: LayerNorm
    public let feedForward: FeedForward

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, contextChannels: Int, heads: Int) throws {
        norm1 = try loader.layerNorm(prefix + ".norm1", channels: channels, epsilon: 1e-5)
        selfAttention = try MultiHeadAttention(loader, prefix + ".attn1", channels: channels, contextChannels: channels, heads: heads)
        norm2 = try loader.layerNorm(prefix + ".norm2", channels: channels, epsilon: 1e-5)
        crossAttention = try MultiHeadAttention(loader, prefix + ".attn2", channels: channels, contextChannels: contextChannels, heads: heads)
        norm3 = try loader.layerNorm(prefix + ".norm3", channels: channels, epsilon: 1e-5)
        feedForward = try FeedForward(loader, prefix + ".ff", channels: channels)
    }

    /// x: [B, L, channels] tokens; context: [B, Lc, contextChannels].
    public func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        var h = CPUKernels.add(selfAttention(norm1(x)), x)
        h = CPUKernels.add(crossAttention(norm2(h), context: context), h)
        return CPUKernels.add(feedForward(norm3(h)), h)
    }

    var linearLayers: [Linear] { selfAttention.linearLayers + crossAttention.linearLayers + feedForward.linearLayers }
}
