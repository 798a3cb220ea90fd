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

    /// x: [B, L, channels] tokens; the text context comes with the forward state.
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value) throws -> B.Value {
        let b = s.backend
        let a = selfAttention
        var h = try a.forward(s, b.layerNorm(x, norm1, readBy: [a.query, a.key, a.value]), cross: false, residual: x)
        h = try crossAttention.forward(s, b.layerNorm(h, norm2, readBy: [crossAttention.query]), cross: true, residual: h)
        return try feedForward.forward(b, b.layerNorm(h, norm3, readBy: [feedForward.projectIn]), residual: h)
    }

    var linearLayers: [Linear] { selfAttention.linearLayers + crossAttention.linearLayers + feedForward.linearLayers }
}
