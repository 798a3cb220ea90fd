/// Everything a UNet block needs besides its input, for one forward on one backend: the time embedding every
/// resnet adds, the text context every transformer attends to, and the tensors the fusion plan computes once per
/// forward (all resnets' time projections, all cross-attention keys/values).
struct UNetForwardState<B: ModelBackend> {
    let backend: B
    /// The backend's fusion plan for this UNet, or nil when it runs every layer as it is.
    let plan: FusionPlan?
    /// silu(temb) [B, timeEmbeddingDim].
    let activatedTimeEmbedding: B.Value
    /// [B, Σ C]: every fused resnet's time projection (+ conv1 bias).
    let timeVectors: B.Value?
    /// [B, Lc, crossAttentionDim] text-encoder hidden states.
    let context: B.Value
    /// Per context stack of the plan: [B, Lc, Σ 2·C] keys and values.
    let contextKV: [B.Value]

    func time(for resnet: ResnetBlock2D) -> ResnetTimeInput<B.Value> {
        if let timeVectors, let offset = plan?.timeOffsets[ObjectIdentifier(resnet)] { return .stacked(timeVectors, offset: offset) }
        return .activatedEmbedding(activatedTimeEmbedding)
    }
}

/// diffusers' `CrossAttnDownBlock2D` (resnet + `Transformer2DModel` pairs) and `DownBlock2D` (resnets only),
/// both with an optional trailing `Downsample2D`. Returns its output and the skip states it emits: one per
/// resnet(+attention) and one after the downsampler.
public final class UNetDownBlock {
    public let resnets: [ResnetBlock2D]
    /// Empty for `DownBlock2D`.
    public let attentions: [Transformer2DModel]
    public let downsampler: Downsample2D?

    init(_ loader: ComponentWeightAudit, index i: Int, inChannels: Int, configuration c: UNetConfiguration) throws {
        let prefix = "down_blocks.\(i)"
        let out = c.blockOutChannels[i]
        resnets = try (0..<c.layersPerBlock[i]).map { j in
            try loader.resnet("\(prefix).resnets.\(j)", in: j == 0 ? inChannels : out, out: out,
                              timeEmbedding: c.timeEmbeddingDim, groups: c.normNumGroups, epsilon: c.normEpsilon,
                              outputScaleFactor: c.resnetOutputScaleFactor)
        }
        attentions = c.downBlockTypes[i] == .plain ? [] : try (0..<c.layersPerBlock[i]).map { j in
            try Transformer2DModel(loader, "\(prefix).attentions.\(j)", channels: out, heads: c.attentionHeads[i],
                                   layers: c.transformerLayersPerBlock[i], contextChannels: c.crossAttentionDim[i],
                                   groups: c.normNumGroups, useLinearProjection: c.useLinearProjection)
        }
        let isFinal = i == c.blockOutChannels.count - 1
        downsampler = isFinal ? nil : try Downsample2D(loader, "\(prefix).downsamplers.0", channels: out, padding: c.downsamplePadding)
    }

    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value) throws -> (output: B.Value, skips: [B.Value]) {
        var h = x
        var skips: [B.Value] = []
        for (j, resnet) in resnets.enumerated() {
            h = try resnet.forward(s.backend, h, time: s.time(for: resnet))
            if j < attentions.count { h = try attentions[j].forward(s, h) }
            skips.append(h)
        }
        if let downsampler {
            h = try downsampler.forward(s.backend, h)
            skips.append(h)
        }
        return (h, skips)
    }

    var linearLayers: [Linear] {
        zip(resnets.indices, resnets).flatMap { j, r in UNetResnetLayers.linear(r) + (attentions.isEmpty ? [] : attentions[j].linearLayers) }
    }

    var convolutionLayers: [Conv2d] {
        zip(resnets.indices, resnets).flatMap { j, r in UNetResnetLayers.convolution(r) + (attentions.isEmpty ? [] : attentions[j].convolutionLayers) }
            + (downsampler.map { [$0.conv] } ?? [])
    }
}

/// diffusers' `UNetMidBlock2DCrossAttn`: resnet, then (`Transformer2DModel`, resnet) once (diffusers'
/// `num_layers=1`); resnet outputs are divided by `mid_block_scale_factor`.
public final class UNetMidBlock {
    public let resnets: [ResnetBlock2D]
    public let attentions: [Transformer2DModel]

    init(_ loader: ComponentWeightAudit, configuration c: UNetConfiguration) throws {
        let channels = c.blockOutChannels.last!
        resnets = try (0..<2).map {
            try loader.resnet("mid_block.resnets.\($0)", in: channels, out: channels, timeEmbedding: c.timeEmbeddingDim,
                              groups: c.normNumGroups, epsilon: c.normEpsilon, outputScaleFactor: c.midBlockScaleFactor)
        }
        attentions = [try Transformer2DModel(loader, "mid_block.attentions.0", channels: channels, heads: c.attentionHeads.last!,
                                             layers: c.transformerLayersPerBlock.last!, contextChannels: c.crossAttentionDim.last!,
                                             groups: c.normNumGroups, useLinearProjection: c.useLinearProjection)]
    }

    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value) throws -> B.Value {
        var h = try resnets[0].forward(s.backend, x, time: s.time(for: resnets[0]))
        for (attention, resnet) in zip(attentions, resnets.dropFirst()) {
            h = try attention.forward(s, h)
            h = try resnet.forward(s.backend, h, time: s.time(for: resnet))
        }
        return h
    }

    var linearLayers: [Linear] {
        UNetResnetLayers.linear(resnets[0]) + zip(attentions, resnets.dropFirst()).flatMap { $0.linearLayers + UNetResnetLayers.linear($1) }
    }

    var convolutionLayers: [Conv2d] {
        UNetResnetLayers.convolution(resnets[0]) + zip(attentions, resnets.dropFirst()).flatMap { $0.convolutionLayers + UNetResnetLayers.convolution($1) }
    }
}

/// diffusers' `CrossAttnUpBlock2D` / `UpBlock2D`: each resnet reads the running features concatenated
/// (channels) with the last unused skip state, optionally followed by a `Transformer2DModel`; then an optional
/// `Upsample2D`. Up block `i` mirrors down block `n−1−i` and has one more resnet.
public final class UNetUpBlock {
    public let resnets: [ResnetBlock2D]
    /// Empty for `UpBlock2D`.
    public let attentions: [Transformer2DModel]
    public let upsampler: Upsample2D?

    init(_ loader: ComponentWeightAudit, index i: Int, configuration c: UNetConfiguration) throws {
        let prefix = "up_blocks.\(i)"
        let reversedChannels = Array(c.blockOutChannels.reversed())
        let n = reversedChannels.count
        let out = reversedChannels[i]
        let previousOut = reversedChannels[max(i - 1, 0)]
        let skipIn = reversedChannels[min(i + 1, n - 1)]
        let layers = c.upBlockLayers(i)
        resnets = try (0..<layers).map { j in
            let skipChannels = j == layers - 1 ? skipIn : out
            let runningChannels = j == 0 ? previousOut : out
            return try loader.resnet("\(prefix).resnets.\(j)", in: runningChannels + skipChannels, out: out,
                                     timeEmbedding: c.timeEmbeddingDim, groups: c.normNumGroups, epsilon: c.normEpsilon,
                                     outputScaleFactor: c.resnetOutputScaleFactor)
        }
        let mirrored = n - 1 - i
        attentions = c.upBlockTypes[i] == .plain ? [] : try (0..<layers).map { j in
            try Transformer2DModel(loader, "\(prefix).attentions.\(j)", channels: out, heads: c.attentionHeads[mirrored],
                                   layers: c.transformerLayersPerBlock[mirrored], contextChannels: c.crossAttentionDim[mirrored],
                                   groups: c.normNumGroups, useLinearProjection: c.useLinearProjection)
        }
        upsampler = i == n - 1 ? nil : try Upsample2D(loader, "\(prefix).upsamplers.0", channels: out)
    }

    /// `skips`: the down path's skip states; this block consumes (pops) one per resnet from the end.
    /// `forwardUpsampleSize`: upsample to the size of the next skip state instead of 2× (diffusers does this
    /// when the latent size is not a multiple of 2^upsamplers).
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value, skips: inout [B.Value],
                                  forwardUpsampleSize: Bool) throws -> B.Value {
        let b = s.backend
        var h = x
        for (j, resnet) in resnets.enumerated() {
            guard let skip = skips.popLast() else { throw ModelBackendError("UNet: up block ran out of skip states") }
            h = try resnet.forward(b, b.concatChannels(h, skip), time: s.time(for: resnet))
            if j < attentions.count { h = try attentions[j].forward(s, h) }
        }
        if let upsampler {
            let size = forwardUpsampleSize ? skips.last.map { b.shape(of: $0) }.map { (height: $0[2], width: $0[3]) } : nil
            h = try upsampler.forward(b, h, size: size)
        }
        return h
    }

    var linearLayers: [Linear] {
        zip(resnets.indices, resnets).flatMap { j, r in UNetResnetLayers.linear(r) + (attentions.isEmpty ? [] : attentions[j].linearLayers) }
    }

    var convolutionLayers: [Conv2d] {
        zip(resnets.indices, resnets).flatMap { j, r in UNetResnetLayers.convolution(r) + (attentions.isEmpty ? [] : attentions[j].convolutionLayers) }
            + (upsampler.map { [$0.conv] } ?? [])
    }
}
