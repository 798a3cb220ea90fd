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

    /// FP32 on the CPU. `timeEmbedding`: [N, temb_channels], the UNet's time embedding before SiLU, or nil (VAE).
    public func callAsFunction(_ x: Tensor, timeEmbedding: Tensor? = nil) -> Tensor {
        let backend = CPUBackend.shared
        return CPUBackend.unchecked { try forward(backend, x, time: timeEmbedding.map { .activatedEmbedding(backend.silu($0)) }) }
    }

    /// The block on any backend. `time`: what the UNet adds after conv1 (nil for the VAE's resnets).
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, time: ResnetTimeInput<B.Value>?) throws -> B.Value {
        let normed = try b.groupNorm(x, norm1, silu: true, readBy: conv1)
        let h: B.Value
        switch time {
        case nil:
            h = try b.conv2d(normed, conv1)
        case .activatedEmbedding(let embedding)?:
            guard let projection = timeEmbeddingProjection else { throw ModelBackendError("\(conv1.name): this resnet has no time_emb_proj") }
            h = try b.conv2d(normed, conv1, addingChannelVector: b.linear(embedding, projection, residual: nil), offset: 0)
        case .stacked(let vectors, let offset)?:
            h = try b.conv2d(normed, conv1, addingChannelVector: vectors, offset: offset)
        }
        let residual = try shortcut.map { try b.conv2d(x, $0) } ?? x
        return try b.resnetOutput(convolving: b.groupNorm(h, norm2, silu: true, readBy: conv2), conv2, residual: residual, block: self)
    }

    /// Its quantizable layers in execution order: `time_emb_proj` (UNet resnets only); conv1, conv2, conv_shortcut.
    var linearLayers: [Linear] { timeEmbeddingProjection.map { [$0] } ?? [] }
    var convolutionLayers: [Conv2d] { [conv1, conv2] + (shortcut.map { [$0] } ?? []) }
}

/// What a UNet resnet adds to its conv1 output: its projection of the time embedding.
enum ResnetTimeInput<Value> {
    /// silu(temb) [B, temb_channels]: the block projects it with its own `time_emb_proj`.
    case activatedEmbedding(Value)
    /// Every resnet's projection (+ its conv1 bias, folded by the fusion plan) at once [B, Σ C]; this block's
    /// channels start at `offset`.
    case stacked(Value, offset: Int)
}
