/// diffusers' `ResnetBlock2D` (the "default" time-embedding norm): GroupNorm → SiLU → conv3×3,
/// plus the projected time embedding, GroupNorm → SiLU → conv3×3, plus a shortcut (1×1
/// `conv_shortcut` when channels change), divided by `output_scale_factor`.
/// The VAE uses the same block without a time embedding (`temb_channels: None`).
public final class ResnetBlock2D {
    public let norm1: GroupNorm
    public let conv1: Conv2d
    public let timeEmbeddingProjection: Linear?
    public let norm2: GroupNorm
    public let conv2: Conv2d
    public let shortcut: Conv2d?
    public let outputScaleFactor: Float

    /// Loads `<prefix>.norm1`, `.conv1`, `.time_emb_proj` (when present), `.norm2`, `.conv2`, `.conv_shortcut`.
    public init(_ store: TensorStore, _ prefix: String, groups: Int, epsilon: Float, outputScaleFactor: Float = 1) throws {
        norm1 = try GroupNorm(store, prefix + ".norm1", groups: groups, epsilon: epsilon)
        conv1 = try Conv2d(store, prefix + ".conv1", padding: 1)
        timeEmbeddingProjection = store.contains(prefix + ".time_emb_proj.weight") ? try Linear(store, prefix + ".time_emb_proj") : nil
        norm2 = try GroupNorm(store, prefix + ".norm2", groups: groups, epsilon: epsilon)
        conv2 = try Conv2d(store, prefix + ".conv2", padding: 1)
        shortcut = store.contains(prefix + ".conv_shortcut.weight") ? try Conv2d(store, prefix + ".conv_shortcut") : nil
        self.outputScaleFactor = outputScaleFactor
    }

    /// - Parameters:
    ///   - x: NCHW input.
    ///   - timeEmbedding: [N, temb_channels] (already the UNet's time embedding, before SiLU), or nil.
    public func callAsFunction(_ x: Tensor, timeEmbedding: Tensor? = nil) -> Tensor {
        var h = conv1(norm1(x, fusedSiLU: true))
        if let projection = timeEmbeddingProjection, let timeEmbedding {
            h = CPUKernels.addChannelBias(h, projection(CPUKernels.silu(timeEmbedding)))
        }
        h = conv2(norm2(h, fusedSiLU: true))
        let residual = shortcut.map { $0(x) } ?? x
        var out = CPUKernels.add(residual, h)
        if outputScaleFactor != 1 { out = CPUKernels.scale(out, 1 / outputScaleFactor) }
        return out
    }
}
