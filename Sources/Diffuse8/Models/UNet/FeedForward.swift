/// diffusers' `FeedForward` with `activation_fn="geglu"` (the UNet default), mult 4, no dropout:
/// `ff.net.0.proj` (Linear to 2 × inner) → GEGLU (`a * gelu(gate)`, exact erf GELU) → `ff.net.2` (Linear back).
public final class FeedForward {
    public let projectIn: Linear
    public let projectOut: Linear

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, multiplier: Int = 4) throws {
        let inner = channels * multiplier
        projectIn = try loader.linear(prefix + ".net.0.proj", in: channels, out: 2 * inner)
        projectOut = try loader.linear(prefix + ".net.2", in: inner, out: channels)
    }

    /// `ff.net.2(geglu(ff.net.0.proj(x)))` + residual on tokens [..., channels].
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, residual: B.Value) throws -> B.Value {
        try b.linear(b.gegluProjection(x, projectIn, readBy: projectOut), projectOut, residual: residual)
    }

    var linearLayers: [Linear] { [projectIn, projectOut] }
}
