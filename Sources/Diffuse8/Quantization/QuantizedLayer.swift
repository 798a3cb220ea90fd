/// One quantized layer: THE definition of its math, shared by simulated (fake-quant) execution, the α
/// search and real 8-bit kernels, which must agree with it (the CPU's INT8 kernels bit for bit).
///
/// y = dequant(Wq) · fq(x ⊙ s)ᵀ + b, where
/// - s: SmoothQuant's per-input-channel factors s_j = max|W[:,j]|^(1-α) / max|X_j|^α (1 without smoothing),
///   multiplied into the activation — ModelOpt's `pre_quant_scale`; see `QuantizationRecipe.smoothingScales`;
/// - Wq: weight codes (INT8 per output channel, FP8 per tensor or per channel) of W[:, j] / s_j;
/// - fq: quantize→dequantize of the activation with scale = `inputAmax / format.maxValue` (static) or,
///   in dynamic mode, per token (Linear rows) / per sample (Conv2d) amax computed at run time;
/// - FP8 attention (level 4): `to_q/k/v` outputs additionally pass through FP8 fq with `outputAmax`.
///
/// For INT8 the simulation evaluates the same product in the order an integer kernel does, exactly:
/// y[n] = Float(Σ_k q_x[k] · q_w[n, k]) · (s_x · s_w[n]) + b[n] (`Int8ExactProduct`).
public struct QuantizedLayer: Sendable {
    public enum Kind: String, Sendable, Codable { case linear, conv2d }

    public let name: String
    public let kind: Kind
    public let weight: QuantizedWeight
    /// Calibrated per-tensor activation amax (after smoothing); nil = dynamic activation scales.
    public let inputAmax: Float?
    /// SmoothQuant factors s_j the input channels are multiplied by (Linear only; the weight holds W / s).
    public let smoothing: [Float]?
    /// FP8 attention: amax of this projection's output (Q, K or V), quantized to FP8.
    public let outputAmax: Float?

    public init(name: String, kind: Kind, weight: QuantizedWeight, inputAmax: Float?, smoothing: [Float]?, outputAmax: Float?) {
        self.name = name
        self.kind = kind
        self.weight = weight
        self.inputAmax = inputAmax
        self.smoothing = smoothing
        self.outputAmax = outputAmax
    }

    public var format: QuantizedFormat { weight.format }

    /// x ⊙ s then fake-quantized, as the layer's kernel sees it. Linear: x is [..., C]; Conv2d: NCHW.
    public func quantizedInput(_ x: Tensor) -> Tensor {
        Self.quantizeActivation(x, kind: kind, format: format, amax: inputAmax, smoothing: smoothing)
    }

    /// INT8: the codes of x ⊙ s as Float (integers in [-128, 127]) and the activation scale of each row (Linear: one
    /// per token) or sample (Conv2d) — `quantizedInput` before its multiplication by the scale (same smoothing
    /// product, same division and rounding).
    public func int8InputCodes(_ x: Tensor) -> (codes: Tensor, scales: [Float]) {
        precondition(format == .int8, "int8InputCodes of an \(format.rawValue) layer")
        let group = kind == .linear ? x.shape.last! : x.count / max(x.shape[0], 1)
        let groups = x.count / max(group, 1)
        var scales = [Float](repeating: 1, count: groups)
        var out = x
        out.scalars.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            if let smoothing { Self.multiplyBySmoothing(base, count: p.count, smoothing) }
            for g in 0..<groups {
                let start = base + g * group
                let scale: Float
                if let inputAmax {
                    scale = format.scale(forAmax: inputAmax)
                } else {
                    var m: Float = 0
                    for i in 0..<group { m = max(m, abs(start[i])) }
                    scale = format.scale(forAmax: m)
                }
                scales[g] = scale
                for i in 0..<group { start[i] = Float(Int8Codec.quantize(start[i] / scale)) }
            }
        }
        return (out, scales)
    }

    /// x[r, j] *= s[j] over rows of `smoothing.count` values: SmoothQuant's factors, before any rounding.
    private static func multiplyBySmoothing(_ base: UnsafeMutablePointer<Float>, count: Int, _ smoothing: [Float]) {
        let width = smoothing.count
        for r in 0..<(count / width) {
            for j in 0..<width { base[r * width + j] *= smoothing[j] }
        }
    }

    /// Activation fake-quantization (see the type's doc comment).
    public static func quantizeActivation(_ x: Tensor, kind: Kind, format: QuantizedFormat, amax: Float?, smoothing: [Float]?) -> Tensor {
        var out = x
        out.scalars.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            if let smoothing { multiplyBySmoothing(base, count: p.count, smoothing) }
            if let amax {
                format.fakeQuantize(base, count: p.count, scale: format.scale(forAmax: amax))
                return
            }
            // Dynamic: Linear per token (row), Conv2d per sample.
            let group = kind == .linear ? x.shape.last! : x.count / max(x.shape[0], 1)
            for start in stride(from: 0, to: p.count, by: group) {
                var m: Float = 0
                for i in start..<(start + group) { m = max(m, abs(base[i])) }
                format.fakeQuantize(base + start, count: group, scale: format.scale(forAmax: m))
            }
        }
        return out
    }
}

/// An execution hook that runs a quantized layer (simulated, or with real 8-bit kernels): `Linear.quantization`
/// and `Conv2d.quantization` report its layer.
public protocol QuantizedExecutionHook: AnyObject {
    var layer: QuantizedLayer { get }
}

/// Simulate mode: the layer's `weight` holds the dequantized codes (set by the loader). FP8 layers fake-quantize
/// the input (and, for FP8 attention, the output) around the full-precision kernel on that weight. INT8 layers
/// compute the same formula exactly (`Int8ExactProduct`): the FP32 reference kernel on the activation and weight
/// codes, whose integer sums it guarantees exact, then Float(Σ) · (s_x · s_w) + b — what an exact INT32 kernel
/// gives, so real INT8 kernels can be held to it bit for bit.
public final class SimulatedQuantizationHook: QuantizedExecutionHook, LinearExecutionHook, Conv2dExecutionHook {
    public let layer: QuantizedLayer
    /// The codes as Float, chunked for exactness; built at the first INT8 call (loaders that only read the
    /// dequantized weight, e.g. for the GPU, never pay for it).
    private var product: Int8ExactProduct?
    private let productLock = PthreadMutex()

    public init(_ layer: QuantizedLayer) { self.layer = layer }

    private var int8Product: Int8ExactProduct {
        productLock.lock()
        defer { productLock.unlock() }
        if let product { return product }
        let made = Int8ExactProduct(layer.weight)
        product = made
        return made
    }

    public func run(_ linear: Linear, _ x: Tensor) -> Tensor {
        var y: Tensor
        if layer.format == .int8 {
            let input = layer.int8InputCodes(x)
            y = int8Product.linear(codes: input.codes, rowScales: input.scales, bias: linear.bias)
        } else {
            y = linear.fullPrecision(layer.quantizedInput(x))
        }
        if let amax = layer.outputAmax {
            y.scalars.withUnsafeMutableBufferPointer { QuantizedFormat.fp8.fakeQuantize($0.baseAddress!, count: $0.count, scale: QuantizedFormat.fp8.scale(forAmax: amax)) }
        }
        return y
    }

    public func run(_ conv: Conv2d, _ x: Tensor) -> Tensor {
        guard layer.format == .int8 else { return conv.fullPrecision(layer.quantizedInput(x)) }
        let input = layer.int8InputCodes(x)
        return int8Product.conv2d(codes: input.codes, sampleScales: input.scales, bias: conv.bias, stride: conv.stride,
                                  padding: conv.padding)
    }
}

/// FP8 attention (level 4), simulated — the definition every backend's FP8 attention kernel follows:
/// - Q, K, V arrive FP8-fake-quantized from their projections (`QuantizedLayer.outputAmax`, per tensor);
/// - scores S = Q·Kᵀ / √d and P = softmax(S) in FP32 (row max subtracted, exp, divided by the row sum);
/// - P is FP8-fake-quantized per tensor with scale a_P / 448: P̂ = decode(E4M3(min(P · 448 / a_P, 448))) · a_P / 448
///   (round to nearest even, saturating: P > a_P becomes a_P; below 2^-6 · a_P / 448 the subnormal grid of
///   2^-9 · a_P / 448); a_P = `probabilityAmax`: 1 (P lies in [0, 1]: NVIDIA's FP8 SDPA export), or the calibrated
///   max of P (ModelOpt's max-calibrated `softmax_quantizer`);
/// - O = P̂ · V in FP32, P̂ not renormalised.
/// Same math and loop as `CPUKernels.attention` otherwise.
public enum FP8AttentionSimulation {
    public static func attention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int, probabilityAmax: Float = 1) -> Tensor {
        let batch = q.shape[0], lq = q.shape[1], channels = q.shape[2], lk = k.shape[1]
        let d = channels / heads
        let probabilityScale = QuantizedFormat.fp8.scale(forAmax: probabilityAmax)
        return Tensor(shape: [batch, lq, channels]) { out in
            q.scalars.withUnsafeBufferPointer { qp in
                k.scalars.withUnsafeBufferPointer { kp in
                    v.scalars.withUnsafeBufferPointer { vp in
                        parallelFor(batch * heads * lq, minChunk: 8) { range in
                            var scores = [Float](repeating: 0, count: lk)
                            scores.withUnsafeMutableBufferPointer { sp in
                                for item in range {
                                    let i = item % lq, bh = item / lq
                                    let h = bh % heads, b = bh / heads
                                    probabilities(qp, kp, image: b, head: h, query: i, queries: lq, keys: lk, channels: channels,
                                                  heads: heads, into: sp.baseAddress!)
                                    QuantizedFormat.fp8.fakeQuantize(sp.baseAddress!, count: lk, scale: probabilityScale)
                                    weightedSum(sp.baseAddress!, values: vp.baseAddress! + b * lk * channels + h * d, keys: lk,
                                                stride: channels, width: d, into: out.baseAddress! + (b * lq + i) * channels + h * d)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

extension FP8AttentionSimulation {
    /// softmax(q·Kᵀ/√d) of one query row of one head of one image, into `row` (`keys` values).
    static func probabilities(_ qp: UnsafeBufferPointer<Float>, _ kp: UnsafeBufferPointer<Float>, image b: Int, head h: Int,
                              query i: Int, queries lq: Int, keys lk: Int, channels: Int, heads: Int,
                              into row: UnsafeMutablePointer<Float>) {
        let d = channels / heads, s = 1 / Float(d).squareRoot()
        let qi = qp.baseAddress! + (b * lq + i) * channels + h * d
        let keys = kp.baseAddress! + b * lk * channels + h * d
        // Eight keys at a time, one lane each: every key's sum still runs over t in order (one product, one addition
        // per step, as the scalar loop below), but eight chains run side by side instead of one.
        var j = 0
        while j + 8 <= lk {
            var acc = SIMD8<Float>(repeating: 0)
            let k0 = keys + j * channels
            for t in 0..<d {
                let column = SIMD8<Float>(k0[t], k0[channels + t], k0[2 * channels + t], k0[3 * channels + t],
                                          k0[4 * channels + t], k0[5 * channels + t], k0[6 * channels + t], k0[7 * channels + t])
                acc = acc + SIMD8<Float>(repeating: qi[t]) * column
            }
            for lane in 0..<8 { row[j + lane] = acc[lane] * s }
            j += 8
        }
        while j < lk {
            let kj = keys + j * channels
            var acc: Float = 0
            for t in 0..<d { acc += qi[t] * kj[t] }
            row[j] = acc * s
            j += 1
        }
        CPUKernels.softmaxRow(row, lk)
    }

    /// out[t] = Σ_j p[j] · values[j · stride + t] for t < width, each sum over j in order from 0 (eight outputs per
    /// vector, kept in a register over all j; four vectors side by side where the width allows).
    static func weightedSum(_ p: UnsafePointer<Float>, values: UnsafePointer<Float>, keys: Int, stride: Int, width: Int,
                            into out: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        var t = 0
        while t + 32 <= width {
            var a0 = V(repeating: 0), a1 = V(repeating: 0), a2 = V(repeating: 0), a3 = V(repeating: 0)
            for j in 0..<keys {
                let w = V(repeating: p[j]), row = UnsafeRawPointer(values + j * stride + t)
                a0 = a0 + w * row.loadUnaligned(as: V.self)
                a1 = a1 + w * row.loadUnaligned(fromByteOffset: 32, as: V.self)
                a2 = a2 + w * row.loadUnaligned(fromByteOffset: 64, as: V.self)
                a3 = a3 + w * row.loadUnaligned(fromByteOffset: 96, as: V.self)
            }
            let o = UnsafeMutableRawPointer(out + t)
            o.storeBytes(of: a0, as: V.self)
            o.storeBytes(of: a1, toByteOffset: 32, as: V.self)
            o.storeBytes(of: a2, toByteOffset: 64, as: V.self)
            o.storeBytes(of: a3, toByteOffset: 96, as: V.self)
            t += 32
        }
        while t + 8 <= width {
            var acc = SIMD8<Float>(repeating: 0)
            for j in 0..<keys {
                acc = acc + SIMD8<Float>(repeating: p[j]) * UnsafeRawPointer(values + j * stride + t).loadUnaligned(as: SIMD8<Float>.self)
            }
            UnsafeMutableRawPointer(out + t).storeBytes(of: acc, as: SIMD8<Float>.self)
            t += 8
        }
        while t < width {
            var acc: Float = 0
            for j in 0..<keys { acc += p[j] * values[j * stride + t] }
            out[t] = acc
            t += 1
        }
    }

    /// max over batches, heads and query rows of softmax(Q·Kᵀ/√d), with the same score and softmax arithmetic as
    /// `attention` (calibration's probability amax). Q [B, Lq, C], K [B, Lk, C].
    public static func maxProbability(query q: Tensor, key k: Tensor, heads: Int) -> Float {
        let batch = q.shape[0], lq = q.shape[1], channels = q.shape[2], lk = k.shape[1]
        let lock = PthreadMutex()
        var result: Float = 0
        q.scalars.withUnsafeBufferPointer { qp in
            k.scalars.withUnsafeBufferPointer { kp in
                parallelFor(batch * heads * lq, minChunk: 8) { range in
                    var scores = [Float](repeating: 0, count: lk), local: Float = 0
                    scores.withUnsafeMutableBufferPointer { sp in
                        for item in range {
                            let i = item % lq, bh = item / lq
                            probabilities(qp, kp, image: bh / heads, head: bh % heads, query: i, queries: lq, keys: lk,
                                          channels: channels, heads: heads, into: sp.baseAddress!)
                            for j in 0..<lk { local = max(local, sp[j]) }
                        }
                    }
                    lock.lock(); result = max(result, local); lock.unlock()
                }
            }
        }
        return result
    }
}
