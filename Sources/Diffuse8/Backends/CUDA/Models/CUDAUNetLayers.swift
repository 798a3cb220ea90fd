/// Device-resident FP16 weights of the UNet's layers, uploaded once from the CPU model (`CUDAUNet`).
/// Layouts are those the CUDA kernels want: Linear weights [out, in] (cuBLASLt reads them transposed),
/// 1×1 convolutions stored as Linear weights (they run on the token layout), fused projections stacked
/// along the output dimension.
struct CUDALinearWeights {
    let weight: CUDATensor
    let bias: CUDATensor?

    var outFeatures: Int { weight.shape[0] }

    /// Uploads `weight` [out, in] (a 1×1 conv weight [out, in, 1, 1] is reshaped) and `bias`.
    init(_ context: CUDAContext, weight: Tensor, bias: Tensor?) throws {
        let w = weight.shape.count == 4 ? weight.reshaped([weight.shape[0], weight.shape[1]]) : weight
        self.weight = try context.upload(w)
        self.bias = try bias.map { try context.upload($0) }
    }

    init(_ context: CUDAContext, _ linear: Linear) throws {
        try self.init(context, weight: linear.weight, bias: linear.bias)
    }

    /// Several Linear layers with the same input as one GEMM: weights stacked along the output dimension
    /// (`to_q`/`to_k`/`to_v` → one [3C, in] weight). Biases are stacked too, zeros standing in for missing ones.
    init(_ context: CUDAContext, stacking layers: [Linear]) throws {
        let inFeatures = layers[0].inFeatures
        precondition(layers.allSatisfy { $0.inFeatures == inFeatures }, "stacked Linear layers must share their input width")
        let rows = layers.map(\.outFeatures).reduce(0, +)
        weight = try context.upload(Tensor(shape: [rows, inFeatures], scalars: layers.flatMap(\.weight.scalars)))
        if layers.contains(where: { $0.bias != nil }) {
            let scalars = layers.flatMap { $0.bias?.scalars ?? [Float](repeating: 0, count: $0.outFeatures) }
            bias = try context.upload(Tensor(shape: [rows], scalars: scalars))
        } else {
            bias = nil
        }
    }
}

final class CUDAConvolutionWeights {
    /// [O, C, kh, kw]. After `releaseUnusedLayout` with the channels-last path chosen, only a shape: its buffer
    /// is then `weightChannelsLast`'s and `onlyChannelsLast` is set.
    private(set) var weight: CUDATensor
    /// The weight as [O, kh, kw, C] for cuDNN's channels-last convolutions (3×3 with channel counts that are
    /// multiples of 8); `CUDAKernels.conv2d` then also tries that path.
    private(set) var weightChannelsLast: CUDATensor?
    private(set) var onlyChannelsLast = false
    /// The path `CUDAKernels.conv2d` took last time for this layer.
    var lastPath: CUDAKernels.ConvolutionPath?
    let bias: CUDATensor?
    let stride: Int
    let padding: Int

    init(_ context: CUDAContext, _ conv: Conv2d, withBias: Bool = true) throws {
        weight = try context.upload(conv.weight)
        let w = conv.weight.shape
        weightChannelsLast = w[2] > 1 && w[0] % 8 == 0 && w[1] % 8 == 0
            ? try context.upload(CUDAKernels.channelsLastWeight(conv.weight)) : nil
        bias = withBias ? try conv.bias.map { try context.upload($0) } : nil
        stride = conv.stride
        padding = conv.padding
    }

    /// `releaseUnusedLayout` on each; returns the bytes freed (back to the allocator's cache).
    static func releaseUnusedLayouts(_ weights: [CUDAConvolutionWeights]) -> Int {
        var freed = 0
        for w in weights {
            let before = (w.weightChannelsLast?.byteCount ?? 0) + (w.onlyChannelsLast ? 0 : w.weight.byteCount)
            w.releaseUnusedLayout()
            freed += before - (w.weightChannelsLast?.byteCount ?? 0) - (w.onlyChannelsLast ? 0 : w.weight.byteCount)
        }
        return freed
    }

    /// Frees the layout the last call did not use (both are kept until the per-shape choice is known).
    func releaseUnusedLayout() {
        guard let lastPath, let last = weightChannelsLast, !onlyChannelsLast else { return }
        if lastPath == .cudnnChannelsLast {
            weight = CUDATensor(buffer: last.buffer, shape: weight.shape, dtype: weight.dtype)
            onlyChannelsLast = true
        } else {
            weightChannelsLast = nil
        }
    }
}

struct CUDANormWeights {
    let weight: CUDATensor
    let bias: CUDATensor
    let groups: Int
    let epsilon: Float

    init(_ context: CUDAContext, _ norm: GroupNorm) throws {
        weight = try context.upload(norm.weight)
        bias = try context.upload(norm.bias)
        groups = norm.groups
        epsilon = norm.epsilon
    }

    init(_ context: CUDAContext, _ norm: LayerNorm) throws {
        weight = try context.upload(norm.weight)
        bias = try context.upload(norm.bias)
        groups = 1
        epsilon = norm.epsilon
    }
}

/// `ResnetBlock2D` on the device. The conv biases are folded away: conv1's into its time-embedding
/// projection (one vector per image added after conv1), conv2's and the shortcut's into one bias added
/// together with the residual.
struct CUDAResnet {
    let norm1: CUDANormWeights
    let conv1: CUDAConvolutionWeights
    /// Where this block's `time_emb_proj(silu(temb)) + conv1.bias` starts in the row of all blocks' projections.
    let timeOffset: Int
    let norm2: CUDANormWeights
    let conv2: CUDAConvolutionWeights
    let shortcut: CUDAConvolutionWeights?
    /// conv2.bias + conv_shortcut.bias.
    let outputBias: CUDATensor
    let outputScale: Float
}

/// `BasicTransformerBlock` on the device: self-attention from one [3C, C] QKV GEMM; cross-attention keys
/// and values come from the UNet-wide context projection (`CUDAUNet.contextProjection`) at `contextOffset`.
struct CUDATransformerBlock {
    let norm1: CUDANormWeights
    let selfQKV: CUDALinearWeights
    let selfOut: CUDALinearWeights
    let norm2: CUDANormWeights
    let crossQuery: CUDALinearWeights
    let contextOffset: Int
    let crossOut: CUDALinearWeights
    let norm3: CUDANormWeights
    let feedForwardIn: CUDALinearWeights
    let feedForwardOut: CUDALinearWeights
    let heads: Int
    let channels: Int
}

/// `Transformer2DModel`: both proj_in/proj_out kinds run as GEMMs on tokens (a 1×1 conv on NCHW followed by
/// NCHW → tokens equals NCHW → tokens followed by the Linear with the same weight).
struct CUDATransformer {
    let norm: CUDANormWeights
    let projectIn: CUDALinearWeights
    let blocks: [CUDATransformerBlock]
    let projectOut: CUDALinearWeights
}

struct CUDADownBlock {
    let resnets: [CUDAResnet]
    let attentions: [CUDATransformer]
    let downsampler: CUDAConvolutionWeights?
}

struct CUDAMidBlock {
    let resnets: [CUDAResnet]
    let attentions: [CUDATransformer]
}

struct CUDAUpBlock {
    let resnets: [CUDAResnet]
    let attentions: [CUDATransformer]
    let upsampler: CUDAConvolutionWeights?
}

/// Collects the layers that are fused across the whole UNet while the blocks are converted: every
/// resnet's `time_emb_proj` (one GEMM on silu(temb)) and every cross-attention's `to_k`/`to_v` (one GEMM on
/// the text context).
struct CUDAUNetBuilder {
    let context: CUDAContext
    var timeProjections: [Linear] = []
    var contextProjections: [Linear] = []
    var contextWidth: Int?

    init(context: CUDAContext) { self.context = context }

    mutating func resnet(_ r: ResnetBlock2D) throws -> CUDAResnet {
        guard let projection = r.timeEmbeddingProjection else {
            throw CUDAError.invalidArgument("CUDAUNet: resnet \(r.conv1.name) has no time_emb_proj (not a UNet resnet)")
        }
        let offset = timeProjections.map(\.outFeatures).reduce(0, +)
        // time_emb_proj(silu(temb)) + conv1.bias, as one Linear.
        let conv1Bias = r.conv1.bias?.scalars ?? [Float](repeating: 0, count: projection.outFeatures)
        let projectionBias = projection.bias?.scalars ?? [Float](repeating: 0, count: projection.outFeatures)
        timeProjections.append(Linear(name: projection.name, weight: projection.weight,
                                      bias: Tensor(shape: [projection.outFeatures], scalars: zip(projectionBias, conv1Bias).map { $0 + $1 })))
        var outputBias = r.conv2.bias?.scalars ?? [Float](repeating: 0, count: r.conv2.outChannels)
        if let shortcutBias = r.shortcut?.bias?.scalars {
            outputBias = zip(outputBias, shortcutBias).map { $0 + $1 }
        }
        return CUDAResnet(norm1: try CUDANormWeights(context, r.norm1), conv1: try CUDAConvolutionWeights(context, r.conv1, withBias: false),
                          timeOffset: offset, norm2: try CUDANormWeights(context, r.norm2),
                          conv2: try CUDAConvolutionWeights(context, r.conv2, withBias: false),
                          shortcut: try r.shortcut.map { try CUDAConvolutionWeights(context, $0, withBias: false) },
                          outputBias: try context.upload(Tensor(shape: [outputBias.count], scalars: outputBias)),
                          outputScale: 1 / r.outputScaleFactor)
    }

    mutating func transformer(_ t: Transformer2DModel) throws -> CUDATransformer {
        func projection(_ p: Transformer2DModel.Projection) throws -> CUDALinearWeights {
            switch p {
            case .linear(let l): return try CUDALinearWeights(context, l)
            case .convolution(let c): return try CUDALinearWeights(context, weight: c.weight, bias: c.bias)
            }
        }
        var blocks: [CUDATransformerBlock] = []
        for b in t.blocks {
            let cross = b.crossAttention
            if let width = contextWidth, width != cross.key.inFeatures {
                throw CUDAError.invalidArgument("CUDAUNet: cross-attention widths differ (\(width), \(cross.key.inFeatures)); one context width is supported")
            }
            contextWidth = cross.key.inFeatures
            let offset = contextProjections.map(\.outFeatures).reduce(0, +)
            contextProjections += [cross.key, cross.value]
            let a = b.selfAttention
            blocks.append(CUDATransformerBlock(
                norm1: try CUDANormWeights(context, b.norm1), selfQKV: try CUDALinearWeights(context, stacking: [a.query, a.key, a.value]),
                selfOut: try CUDALinearWeights(context, a.output), norm2: try CUDANormWeights(context, b.norm2),
                crossQuery: try CUDALinearWeights(context, cross.query), contextOffset: offset,
                crossOut: try CUDALinearWeights(context, cross.output), norm3: try CUDANormWeights(context, b.norm3),
                feedForwardIn: try CUDALinearWeights(context, b.feedForward.projectIn),
                feedForwardOut: try CUDALinearWeights(context, b.feedForward.projectOut),
                heads: a.heads, channels: a.query.outFeatures))
        }
        return CUDATransformer(norm: try CUDANormWeights(context, t.norm), projectIn: try projection(t.projectIn), blocks: blocks,
                               projectOut: try projection(t.projectOut))
    }
}
