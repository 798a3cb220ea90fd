/// The model operations on the CPU in FP32 (`CPUKernels`): weights are the layers' own host tensors, nothing is
/// prepared or fused, and every Linear/Conv2d runs through the layer object itself, so its execution hook
/// (calibration's observe mode, simulated 8-bit) sees every call. Shape mismatches that reach a kernel are
/// programming errors there (preconditions); inputs are checked where they enter the model.
///
/// A LayerNorm, GEGLU or GroupNorm+SiLU whose result only real INT8 layers read (`layerNorm(_:_:readBy:)`,
/// `geglu(_:readBy:)`, `groupNorm(_:_:silu:readBy:)`) also writes their input codes, which travel with its result
/// (`Tensor.quantizedInput`, see `CPUKernels+QuantizingProducers`): the same codes the layers' own pass computes.
public final class CPUBackend: ModelBackend {
    public typealias Value = Tensor

    /// Stateless: one instance serves every model.
    public static let shared = CPUBackend()

    /// Whether producers write the INT8 input of the real INT8 layers that alone read them (the default) instead of
    /// leaving it to the layers' own quantizing pass; both give the same codes. Off is for measuring the difference.
    public let quantizesInProducers: Bool

    public init(quantizesInProducers: Bool = CPUBackend.producerQuantizationDefault) {
        self.quantizesInProducers = quantizesInProducers
        _ = CPUMemoryRetention.isApplied
    }

    /// `DIFFUSE8_PRODUCER_QUANTIZATION=on|off` (read once; on when unset): the default of `quantizesInProducers`.
    public static let producerQuantizationDefault: Bool =
        EnvironmentSetting.choice("DIFFUSE8_PRODUCER_QUANTIZATION", of: Switch.self).map { $0 == .on } ?? true

    /// Runs model code on this backend for the non-throwing CPU conveniences (`unet(sample:…)`, `vae.decode(_:)`):
    /// the CPU ops throw nothing, so an error here is a model/input mismatch the caller should have checked.
    static func unchecked<T>(_ body: () throws -> T) -> T {
        do { return try body() } catch { preconditionFailure("\(error)") }
    }

    public func fusionPlan(for model: AnyObject) -> FusionPlan? { nil }

    public func shape(of x: Tensor) -> [Int] { x.shape }
    public func upload(_ x: Tensor) -> Tensor { x }
    public func download(_ x: Tensor) -> Tensor { x }
    public func reshape(_ x: Tensor, _ shape: [Int]) -> Tensor { x.reshaped(shape) }

    public func linear(_ x: Tensor, _ layer: Linear, residual: Tensor?) -> Tensor {
        if let int8 = layer.executionHook as? CPUInt8LayerHook { return int8.run(layer, x, residual: residual) }
        let y = layer(x)
        return residual.map { CPUKernels.add(y, $0) } ?? y
    }

    public func stackedLinear(_ x: Tensor, _ stack: LinearStack) -> Tensor {
        CPUKernels.linear(x, weight: stack.makeWeight(), bias: stack.makeBias())
    }

    public func conv2d(_ x: Tensor, _ layer: Conv2d) -> Tensor { layer(x) }

    public func groupNorm(_ x: Tensor, _ norm: GroupNorm, silu: Bool) -> Tensor { norm(x, fusedSiLU: silu) }

    public func layerNorm(_ x: Tensor, _ norm: LayerNorm) -> Tensor { norm(x) }

    /// With INT8 codes for `readers` attached when they are real INT8 Linear layers that quantize their input alike
    /// (an attention's Q/K/V share the scale and smoothing vector in the folders `quantize` writes); else `norm(x)`.
    public func layerNorm(_ x: Tensor, _ norm: LayerNorm, readBy readers: [Linear]) -> Tensor {
        guard let reader = int8Reader(readers), x.shape.last == reader.weight.depth else { return norm(x) }
        return CPUKernels.layerNorm(x, weight: norm.weight, bias: norm.bias, epsilon: norm.epsilon, quantizingFor: reader)
    }

    public func geglu(_ x: Tensor, readBy reader: Linear) -> Tensor {
        guard let reader = int8Reader([reader]), x.shape.last == 2 * reader.weight.depth else { return CPUKernels.geglu(x) }
        return CPUKernels.geglu(x, quantizingFor: reader)
    }

    /// With the channels-last INT8 codes of `reader` attached when it is a real INT8 convolution with a static input
    /// scale (a dynamic scale needs the whole image's amax: the convolution's own pass computes it); else `norm(x, …)`.
    public func groupNorm(_ x: Tensor, _ norm: GroupNorm, silu: Bool, readBy reader: Conv2d) -> Tensor {
        guard quantizesInProducers, let hook = reader.executionHook as? CPUInt8LayerHook, hook.inputQuantization.scale != nil,
              x.shape.count == 4, x.shape[1] == reader.weightShape[1] else {
            return norm(x, fusedSiLU: silu)
        }
        return CPUKernels.groupNorm(x, groups: norm.groups, weight: norm.weight, bias: norm.bias, epsilon: norm.epsilon,
                                    fusedSiLU: silu, quantizingFor: hook)
    }

    /// The real INT8 hook whose input codes serve every one of `readers`, if there is one.
    private func int8Reader(_ readers: [Linear]) -> CPUInt8LayerHook? {
        guard quantizesInProducers, let first = readers.first?.executionHook as? CPUInt8LayerHook else { return nil }
        for reader in readers.dropFirst() {
            guard let hook = reader.executionHook as? CPUInt8LayerHook, hook.inputQuantization == first.inputQuantization,
                  hook.weight.depth == first.weight.depth, hook.weight.kGroups == first.weight.kGroups else { return nil }
        }
        return first
    }

    public func attention(query: Columns<Tensor>, key: Columns<Tensor>, value: Columns<Tensor>, heads: Int,
                          causal: Bool, fp8: Bool) -> Tensor {
        let q = Self.contiguous(query), k = Self.contiguous(key), v = Self.contiguous(value)
        if fp8 { return FP8AttentionSimulation.attention(query: q, key: k, value: v, heads: heads) }
        return CPUKernels.attention(query: q, key: k, value: v, heads: heads, causal: causal)
    }

    public func attentionProbabilityMax(query: Columns<Tensor>, key: Columns<Tensor>, heads: Int) -> Float? {
        FP8AttentionSimulation.maxProbability(query: Self.contiguous(query), key: Self.contiguous(key), heads: heads)
    }

    public func fp8Attention(query: Columns<Tensor>, key: Columns<Tensor>, value: Columns<Tensor>, heads: Int,
                             probabilityAmax: Float, module: MultiHeadAttention) -> Tensor {
        FP8AttentionSimulation.attention(query: Self.contiguous(query), key: Self.contiguous(key), value: Self.contiguous(value),
                                         heads: heads, probabilityAmax: probabilityAmax)
    }

    /// The column range as its own [B, L, width] tensor (no copy when it is the whole tensor).
    static func contiguous(_ c: Columns<Tensor>) -> Tensor {
        let full = c.tensor.shape.last!
        if c.offset == 0 && c.width == full { return c.tensor }
        let rows = c.tensor.count / full
        var shape = c.tensor.shape
        shape[shape.count - 1] = c.width
        return Tensor(shape: shape) { out in
            c.tensor.scalars.withUnsafeBufferPointer { p in
                for r in 0..<rows {
                    for j in 0..<c.width { out[r * c.width + j] = p[r * full + c.offset + j] }
                }
            }
        }
    }

    public func silu(_ x: Tensor) -> Tensor { CPUKernels.silu(x) }
    public func gelu(_ x: Tensor) -> Tensor { CPUKernels.gelu(x) }
    public func quickGELU(_ x: Tensor) -> Tensor { CPUKernels.quickGELU(x) }
    public func geglu(_ x: Tensor) -> Tensor { CPUKernels.geglu(x) }
    public func add(_ a: Tensor, _ b: Tensor) -> Tensor { CPUKernels.add(a, b) }
    public func affine(_ x: Tensor, scale: Float, shift: Float) -> Tensor { CPUKernels.map(x) { scale * $0 + shift } }

    public func addChannelVector(_ x: Tensor, _ rows: Tensor, offset: Int) -> Tensor {
        let n = x.shape[0], c = x.shape[1], width = rows.shape[1]
        if offset == 0 && width == c { return CPUKernels.addChannelBias(x, rows) }
        let vector = Tensor(shape: [n, c]) { out in
            for i in 0..<n { for j in 0..<c { out[i * c + j] = rows.scalars[i * width + offset + j] } }
        }
        return CPUKernels.addChannelBias(x, vector)
    }

    public func resnetOutput(_ h: Tensor, residual: Tensor, block: ResnetBlock2D) -> Tensor {
        let out = CPUKernels.add(residual, h)
        return block.outputScaleFactor == 1 ? out : CPUKernels.scale(out, 1 / block.outputScaleFactor)
    }

    public func concatChannels(_ a: Tensor, _ b: Tensor) -> Tensor { CPUKernels.concatChannels(a, b) }

    public func concatColumns(_ a: Tensor, _ b: Tensor) -> Tensor {
        let rows = a.shape[0], wa = a.shape[1], wb = b.shape[1]
        return Tensor(shape: [rows, wa + wb]) { out in
            for r in 0..<rows {
                for i in 0..<wa { out[r * (wa + wb) + i] = a.scalars[r * wa + i] }
                for i in 0..<wb { out[r * (wa + wb) + wa + i] = b.scalars[r * wb + i] }
            }
        }
    }

    public func channelsToTokens(_ x: Tensor) -> Tensor { CPUKernels.channelsToTokens(x) }

    public func tokensToChannels(_ x: Tensor, height: Int, width: Int, residual: Tensor?) -> Tensor {
        let y = CPUKernels.tokensToChannels(x, height: height, width: width)
        return residual.map { CPUKernels.add(y, $0) } ?? y
    }

    public func upsampleNearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
        if height == 2 * x.shape[2] && width == 2 * x.shape[3] { return CPUKernels.upsampleNearest2x(x) }
        return CPUKernels.resizeNearest(x, height: height, width: width)
    }

    public func padRightBottom(_ x: Tensor) -> Tensor { CPUKernels.pad(x, left: 0, right: 1, top: 0, bottom: 1) }

    public func absMax(_ x: Tensor) -> Float { x.scalars.reduce(0) { max($0, abs($1)) } }

    public func columnAbsMax(_ x: Tensor) -> [Float] {
        let width = x.shape.last ?? 1
        var m = [Float](repeating: 0, count: width)
        x.scalars.withUnsafeBufferPointer { p in
            for i in 0..<p.count { let j = i % width; m[j] = max(m[j], abs(p[i])) }
        }
        return m
    }

    public func rows(_ x: Tensor, _ indices: [Int]) -> [[Float]] {
        let width = x.shape.last ?? 1
        return indices.map { Array(x.scalars[($0 * width)..<(($0 + 1) * width)]) }
    }

    public func gatherRows(_ x: Tensor, positions: [Int]) -> Tensor {
        let length = x.shape[1], hidden = x.shape[2]
        return Tensor(shape: [positions.count, hidden]) { out in
            for (b, p) in positions.enumerated() {
                for c in 0..<hidden { out[b * hidden + c] = x.scalars[(b * length + p) * hidden + c] }
            }
        }
    }
}
