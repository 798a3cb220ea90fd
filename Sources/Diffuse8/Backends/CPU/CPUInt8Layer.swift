/// A Linear or Conv2d layer of an INT8 folder executed with real 8-bit arithmetic on the CPU: weight codes packed
/// once at load (`CPUInt8PackedWeight`, the FP32 host weight is released), the activation multiplied by the
/// SmoothQuant factors and quantized to INT8 codes with the layer's static scale (or per token / per sample in
/// dynamic mode), INT32 sums on the micro-kernels, and one epilogue per tile: sum · s_x · s_w[o] + bias (+ the
/// residual for Linear).
///
/// Agrees with the simulation (`SimulatedQuantizationHook`, the reference) to within FP32 rounding: the codes are
/// the very ones the simulation rounds to (same smoothing product, same division by the scale, same
/// round-half-even and clamp), and Σ (a·s_x)(w·s_w) in FP32 differs from (Σ a·w)·s_x·s_w only by rounding.
public final class CPUInt8LayerHook: QuantizedExecutionHook, LinearExecutionHook, Conv2dExecutionHook {
    public let layer: QuantizedLayer
    let weight: CPUInt8PackedWeight

    /// Packs `layer`'s INT8 weight.
    public init(_ layer: QuantizedLayer) {
        precondition(layer.format == .int8, "CPUInt8LayerHook runs INT8 layers")
        self.layer = layer
        weight = CPUInt8PackedWeight(layer.weight)
    }

    /// Installs real INT8 execution on `linear` (which must hold `layer`'s shapes) and drops its FP32 weight.
    public static func install(_ layer: QuantizedLayer, on linear: Linear) {
        linear.executionHook = CPUInt8LayerHook(layer)
        linear.releaseHostWeight()
    }

    public static func install(_ layer: QuantizedLayer, on conv: Conv2d) {
        conv.executionHook = CPUInt8LayerHook(layer)
        conv.releaseHostWeight()
    }

    /// Replaces every simulated INT8 layer of `unet` by real INT8 execution (e.g. after LoRAs were merged into the
    /// simulated layers); FP8 layers stay simulated.
    public static func installReplacingSimulation(in unet: UNet2DConditionModel) {
        for linear in unet.linearLayers {
            if let hook = linear.executionHook as? SimulatedQuantizationHook, hook.layer.format == .int8 { install(hook.layer, on: linear) }
        }
        for conv in unet.convolutionLayers {
            if let hook = conv.executionHook as? SimulatedQuantizationHook, hook.layer.format == .int8 { install(hook.layer, on: conv) }
        }
    }

    // MARK: Linear

    public func run(_ linear: Linear, _ x: Tensor) -> Tensor { run(linear, x, residual: nil) }

    /// x [..., K] → [..., O], plus `residual` (the output's shape) when given.
    public func run(_ linear: Linear, _ x: Tensor, residual: Tensor?, kernel: CPUInt8Kernel = .active) -> Tensor {
        let k = weight.depth, o = weight.outputs
        precondition(x.shape.last == k, "\(layer.name): input \(x.shape) does not end in \(k) features")
        if let residual { precondition(residual.count == x.count / k * o, "\(layer.name): residual \(residual.shape) does not match the output") }
        let m = x.count / k
        var shape = x.shape
        shape[shape.count - 1] = o
        let lda = weight.kGroups * 4
        let mr = CPUInt8Kernel.tileRows
        let paddedRows = (m + mr - 1) / mr * mr
        var rowScales = [Float](repeating: 1, count: m)
        var y = Tensor(shape: shape) { out in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, paddedRows * lda)) { a in
                let codes = a.baseAddress!
                x.scalars.withUnsafeBufferPointer { xp in
                    rowScales.withUnsafeMutableBufferPointer { sp in
                        quantizeRows(xp.baseAddress!, rows: m, width: k, into: codes, lda: lda, rowScales: sp.baseAddress!)
                    }
                }
                for i in (m * lda)..<(paddedRows * lda) { codes[i] = 128 }
                rowScales.withUnsafeBufferPointer { sp in
                    withBias(linear.bias) { bias in
                        withResidual(residual) { res in
                            let dst = out.baseAddress!
                            CPUInt8Gemm.multiply(a: codes, rows: m, lda: lda, weight: weight, kernel: kernel) { row, rows, column, columns, tile in
                                let nr = CPUInt8Kernel.tileColumns
                                for r in 0..<rows {
                                    let s = sp[row + r], line = (row + r) * o + column
                                    for j in 0..<columns {
                                        var v = Float(tile[r * nr + j]) * (s * weight.scales[column + j])
                                        if let bias { v += bias[column + j] }
                                        if let res { v += res[line + j] }
                                        dst[line + j] = v
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if let amax = layer.outputAmax {
            // Level-4 FP8 attention: Q/K/V leave their projection FP8-rounded, as in the simulation.
            y.scalars.withUnsafeMutableBufferPointer {
                QuantizedFormat.fp8.fakeQuantize($0.baseAddress!, count: $0.count, scale: QuantizedFormat.fp8.scale(forAmax: amax))
            }
        }
        return y
    }

    /// Rows of x (width K) → codes + 128, K padded with 128 (code 0) to `lda`; each row's activation scale.
    private func quantizeRows(_ x: UnsafePointer<Float>, rows m: Int, width k: Int, into codes: UnsafeMutablePointer<UInt8>,
                              lda: Int, rowScales: UnsafeMutablePointer<Float>) {
        let format = QuantizedFormat.int8
        let staticScale = layer.inputAmax.map { format.scale(forAmax: $0) }
        let smoothing = layer.smoothing
        precondition(smoothing == nil || smoothing!.count == k, "\(layer.name): smoothing vector length \(smoothing!.count) ≠ \(k)")
        parallelFor(m, minChunk: max(1, 16384 / max(k, 1))) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { row in
                let v = row.baseAddress!
                for r in range {
                    let source = x + r * k
                    if let smoothing {
                        for j in 0..<k { v[j] = source[j] * smoothing[j] }
                    } else {
                        for j in 0..<k { v[j] = source[j] }
                    }
                    let scale: Float
                    if let staticScale {
                        scale = staticScale
                    } else {
                        var amax: Float = 0
                        for j in 0..<k { amax = max(amax, abs(v[j])) }
                        scale = format.scale(forAmax: amax)
                    }
                    rowScales[r] = scale
                    let dst = codes + r * lda
                    for j in 0..<k { dst[j] = UInt8(truncatingIfNeeded: Int(Int8Codec.quantize(v[j] / scale)) + 128) }
                    for j in k..<lda { dst[j] = 128 }
                }
            }
        }
    }

    // MARK: Conv2d

    /// NCHW convolution as one INT8 GEMM over every image: rows = output pixels (im2col of the codes), columns =
    /// output channels; the epilogue writes NCHW.
    public func run(_ conv: Conv2d, _ x: Tensor) -> Tensor { run(conv, x, kernel: .active) }

    public func run(_ conv: Conv2d, _ x: Tensor, kernel: CPUInt8Kernel) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let shape = conv.weightShape
        let o = shape[0], kh = shape[2], kw = shape[3]
        precondition(shape[1] == c, "\(layer.name): input \(x.shape) does not have \(shape[1]) channels")
        let stride = conv.stride, padding = conv.padding
        let oh = (h + 2 * padding - kh) / stride + 1, ow = (w + 2 * padding - kw) / stride + 1
        let hw = oh * ow, m = n * hw, k = c * kh * kw, lda = weight.kGroups * 4
        let mr = CPUInt8Kernel.tileRows
        let paddedRows = (m + mr - 1) / mr * mr
        let imageSize = c * h * w
        // Quantize the input once (per-tensor scale, or per sample in dynamic mode), then gather im2col rows.
        var imageScales = [Float](repeating: 1, count: n)
        let quantized = [UInt8](unsafeUninitializedCapacity: max(1, x.count)) { q, initialized in
            x.scalars.withUnsafeBufferPointer { xp in
                let format = QuantizedFormat.int8
                for b in 0..<n {
                    let image = xp.baseAddress! + b * imageSize
                    let scale: Float
                    if let amax = layer.inputAmax {
                        scale = format.scale(forAmax: amax)
                    } else {
                        var amax: Float = 0
                        for i in 0..<imageSize { amax = max(amax, abs(image[i])) }
                        scale = format.scale(forAmax: amax)
                    }
                    imageScales[b] = scale
                    let dst = q.baseAddress! + b * imageSize
                    parallelFor(imageSize, minChunk: 16384) { range in
                        for i in range { dst[i] = UInt8(truncatingIfNeeded: Int(Int8Codec.quantize(image[i] / scale)) + 128) }
                    }
                }
            }
            initialized = max(1, x.count)
        }
        return Tensor(shape: [n, o, oh, ow]) { out in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, paddedRows * lda)) { a in
                let codes = a.baseAddress!
                quantized.withUnsafeBufferPointer { qp in
                    let q = qp.baseAddress!
                    parallelFor(paddedRows, minChunk: 64) { range in
                        for r in range {
                            let dst = codes + r * lda
                            guard r < m else { for j in 0..<lda { dst[j] = 128 }; continue }
                            let b = r / hw, pixel = r % hw
                            let oy = pixel / ow, ox = pixel % ow
                            let image = q + b * imageSize
                            var p = 0
                            for ch in 0..<c {
                                let plane = image + ch * h * w
                                for ky in 0..<kh {
                                    let iy = oy * stride - padding + ky
                                    for kx in 0..<kw {
                                        let ix = ox * stride - padding + kx
                                        dst[p] = iy >= 0 && iy < h && ix >= 0 && ix < w ? plane[iy * w + ix] : 128
                                        p += 1
                                    }
                                }
                            }
                            for j in k..<lda { dst[j] = 128 }
                        }
                    }
                }
                imageScales.withUnsafeBufferPointer { sp in
                    withBias(conv.bias) { bias in
                        let dst = out.baseAddress!
                        CPUInt8Gemm.multiply(a: codes, rows: m, lda: lda, weight: weight, kernel: kernel) { row, rows, column, columns, tile in
                            let nr = CPUInt8Kernel.tileColumns
                            for r in 0..<rows {
                                let b = (row + r) / hw, pixel = (row + r) % hw
                                let s = sp[b]
                                let base = dst + b * o * hw + pixel
                                for j in 0..<columns {
                                    var v = Float(tile[r * nr + j]) * (s * weight.scales[column + j])
                                    if let bias { v += bias[column + j] }
                                    base[(column + j) * hw] = v
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

@inline(__always)
private func withBias<R>(_ bias: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let bias else { return body(nil) }
    return bias.scalars.withUnsafeBufferPointer { body($0.baseAddress!) }
}

@inline(__always)
private func withResidual<R>(_ residual: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    withBias(residual, body)
}
