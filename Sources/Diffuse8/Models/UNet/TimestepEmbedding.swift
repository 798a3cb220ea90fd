/// diffusers' `TimestepEmbedding` with the default SiLU and no condition projection:
/// `linear_2(silu(linear_1(x)))`. Used for `time_embedding` and SDXL's `add_embedding`.
public final class TimestepEmbedding {
    public let linear1: Linear
    public let linear2: Linear

    init(_ loader: ComponentWeightAudit, _ prefix: String, inChannels: Int, timeEmbeddingDim: Int) throws {
        linear1 = try loader.linear(prefix + ".linear_1", in: inChannels, out: timeEmbeddingDim)
        linear2 = try loader.linear(prefix + ".linear_2", in: timeEmbeddingDim, out: timeEmbeddingDim)
    }

    /// `linear_2(silu(linear_1(x)))` + residual (when given).
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, residual: B.Value? = nil) throws -> B.Value {
        try b.linear(b.silu(b.linear(x, linear1, residual: nil)), linear2, residual: residual)
    }

    var linearLayers: [Linear] { [linear1, linear2] }
}
