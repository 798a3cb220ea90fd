/// diffusers' `CrossAttnUpBlock2D` / `UpBlock2D`: each resnet reads the running features concatenated
/// (channels) with the last unused skip state, optionally followed by a `Transformer2DModel`; then an optional
/// `Upsample2D`. Up block `i` mirrors down block `n−1−i` and has one more resnet.
public final class UNetUpBlock: UNetResnetAttentionBlock {
    public let resnets: [ResnetBlock2D]
    /// Empty for `UpBlock2D`.
    public let attentions: [Transformer2DModel]
    public let upsampler: Upsample2D?

    init(_ loader: ComponentWeightAudit, index i: Int, configuration c: UNetConfiguration) throws {
        let prefix = "up_blocks.\(i)"
        let channels = Array(c.blockOutChannels.reversed()), n = channels.count, out = channels[i], layers = c.upBlockLayers(i)
        resnets = try (0..<layers).map { j in
            // The running features (the previous block's output at first) concatenated with a skip state (the last
            // one comes from the mirrored down block's input).
            let running = j == 0 ? channels[max(i - 1, 0)] : out, skip = j == layers - 1 ? channels[min(i + 1, n - 1)] : out
            return try loader.resnet("\(prefix).resnets.\(j)", in: running + skip, out: out,
                                     timeEmbedding: c.timeEmbeddingDim, groups: c.normNumGroups, epsilon: c.normEpsilon,
                                     outputScaleFactor: c.resnetOutputScaleFactor)
        }
        attentions = c.upBlockTypes[i] == .plain ? [] : try (0..<layers).map {
            try Transformer2DModel(loader, "\(prefix).attentions.\($0)", channels: out, level: n - 1 - i, configuration: c)
        }
        upsampler = i == n - 1 ? nil : try Upsample2D(loader, "\(prefix).upsamplers.0", channels: out)
    }

    var resamplingConv: Conv2d? { upsampler?.conv }

    /// `skips`: the down path's skip states; this block consumes (pops) one per resnet from the end.
    /// `forwardUpsampleSize`: upsample to the size of the next skip state instead of 2× (diffusers does this
    /// when the latent size is not a multiple of 2^upsamplers).
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value, skips: inout [B.Value],
                                  forwardUpsampleSize: Bool) throws -> B.Value {
        let b = s.backend
        var h = x
        for j in resnets.indices {
            guard let skip = skips.popLast() else { throw ModelBackendError("UNet: up block ran out of skip states") }
            h = try forwardLayer(j, s, b.concatChannels(h, skip))
        }
        if let upsampler {
            let size = forwardUpsampleSize ? skips.last.map { b.shape(of: $0) }.map { (height: $0[2], width: $0[3]) } : nil
            h = try upsampler.forward(b, h, size: size)
        }
        return h
    }
}
