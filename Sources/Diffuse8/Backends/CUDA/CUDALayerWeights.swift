/// Device-resident 16-bit weights of a model's layers, uploaded once by `CUDABackend.prepare`.
/// Layouts are those the CUDA kernels want: Linear weights [out, in] (cuBLASLt reads them transposed),
/// 1×1 convolutions stored as Linear weights (they run on the token layout), fused projections stacked
/// along the output dimension. A quantized Linear keeps its 8-bit layer (the weight is its dequantized codes) and
/// its SmoothQuant factors as an FP32 vector.
struct CUDALinearWeights {
    let weight: CUDATensor
    let bias: CUDATensor?
    var quantization: QuantizedLayer?
    var smoothing: CUDATensor?
    /// Level-4 FP8 attention: per output column, the FP8 scale its output is rounded with (`outputScales(_:context:)`).
    var outputScales: CUDATensor?

    var outFeatures: Int { weight.shape[0] }

    /// Uploads `weight` [out, in] (a 1×1 conv weight [out, in, 1, 1] is reshaped) and `bias`.
    init(_ kernels: CUDAKernels, weight: Tensor, bias: Tensor?) throws {
        let w = weight.shape.count == 4 ? weight.reshaped([weight.shape[0], weight.shape[1]]) : weight
        self.weight = try kernels.upload(w)
        self.bias = try bias.map { try kernels.upload($0) }
    }

    init(_ kernels: CUDAKernels, _ linear: Linear) throws {
        try self.init(kernels, weight: linear.weight, bias: linear.bias)
        if let q = linear.quantization {
            quantization = q
            smoothing = try q.smoothing.map { try kernels.context.upload(Tensor(shape: [$0.count], scalars: $0), dtype: .float32) }
        }
    }

    /// For quantized layers stacked along the output dimension whose outputs are FP8-rounded (level 4): the scale of
    /// every output column, FP32 [Σ out]; nil when none is rounded.
    static func outputScales(_ layers: [QuantizedLayer], context: CUDAContext) throws -> CUDATensor? {
        guard layers.contains(where: { $0.outputAmax != nil }) else { return nil }
        guard layers.allSatisfy({ $0.outputAmax != nil }) else {
            throw CUDAError.invalidArgument("\(layers.map(\.name)): only some outputs are FP8-rounded; such layers are not stacked")
        }
        let scales = layers.flatMap { l in
            Array(repeating: QuantizedFormat.fp8.scale(forAmax: l.outputAmax ?? 0), count: l.weight.shape[0])
        }
        return try context.upload(Tensor(shape: [scales.count], scalars: scales), dtype: .float32)
    }

    /// Several dense Linear layers with the same input as one GEMM (`LinearStack`).
    init(_ kernels: CUDAKernels, stacking layers: [Linear]) throws {
        let stack = try LinearStack(layers)
        try self.init(kernels, weight: stack.makeWeight(), bias: stack.makeBias())
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

    init(_ kernels: CUDAKernels, _ conv: Conv2d, withBias: Bool = true) throws {
        weight = try kernels.upload(conv.weight)
        let w = conv.weight.shape
        weightChannelsLast = w[2] > 1 && w[0] % 8 == 0 && w[1] % 8 == 0
            ? try kernels.upload(CUDAKernels.channelsLastWeight(conv.weight)) : nil
        bias = withBias ? try conv.bias.map { try kernels.upload($0) } : nil
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

    init(_ kernels: CUDAKernels, _ norm: GroupNorm) throws {
        weight = try kernels.upload(norm.weight)
        bias = try kernels.upload(norm.bias)
        groups = norm.groups
        epsilon = norm.epsilon
    }

    init(_ kernels: CUDAKernels, _ norm: LayerNorm) throws {
        weight = try kernels.upload(norm.weight)
        bias = try kernels.upload(norm.bias)
        groups = 1
        epsilon = norm.epsilon
    }
}

