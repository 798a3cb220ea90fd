import CDiffuse8Kernels

/// A Linear or Conv2d layer of an INT8 folder executed with real 8-bit arithmetic on the CPU: weight codes packed
/// once at load (`CPUInt8PackedWeight`, the FP32 host weight is released), the activation multiplied by the
/// SmoothQuant factors and quantized to INT8 codes with the layer's static scale (or per token / per sample in
/// dynamic mode), INT32 sums on the micro-kernels, and one epilogue per tile: sum · s_x · s_w[o] + bias (+ the
/// residual for Linear).
///
/// Equals the simulation (`SimulatedQuantizationHook`, the reference) bit for bit: the codes are the very ones the
/// simulation rounds to (same smoothing product, same division by the scale, same round-half-even and clamp), the
/// simulation's integer sums are exact too (`Int8ExactProduct`), and both dequantize as Float(Σ) · (s_x · s_w), then
/// + bias, then + residual.
///
/// The input codes may also come with the input (`Tensor.quantizedInput`), written by its producer (a LayerNorm, GEGLU
/// or GroupNorm+SiLU that only this layer reads, `CPUBackend`): they are used when they were computed with this
/// layer's input quantization, and are the same codes.
public final class CPUInt8LayerHook: QuantizedExecutionHook, LinearExecutionHook, Conv2dExecutionHook {
    public let layer: QuantizedLayer
    let weight: CPUInt8PackedWeight
    /// Scale (or dynamic) and smoothing of the input codes.
    let inputQuantization: CPUInt8InputQuantization

    /// Packs `layer`'s INT8 weight.
    public init(_ layer: QuantizedLayer) {
        precondition(layer.format == .int8, "CPUInt8LayerHook runs INT8 layers")
        self.layer = layer
        weight = CPUInt8PackedWeight(layer.kind == .conv2d ? layer.weight.channelsLast() : layer.weight)
        inputQuantization = CPUInt8InputQuantization(layer)
    }

    /// The layout of a Linear input's codes for `rows` rows: this layer's depth, padded to the packed weight's.
    func rowLayout(rows: Int) -> CPUQuantizedInput.Layout { .rows(width: weight.depth, lda: weight.kGroups * 4, rows: rows) }

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
    /// simulated layers); FP8 layers stay simulated (`CPUNativeQuantization` replaces both kinds).
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
        var y = Tensor(shape: shape) { out in
            if let produced = x.quantizedInput, produced.serves(inputQuantization, as: rowLayout(rows: m)) {
                // The producer wrote these codes (`CPUQuantizedInput`): no quantizing pass here.
                produced.codes.withUnsafeBufferPointer { a in
                    produced.scales.withUnsafeBufferPointer { sp in
                        multiply(codes: a.baseAddress!, rows: m, rowScales: sp.baseAddress!, bias: linear.bias, residual: residual,
                                 kernel: kernel, into: out.baseAddress!)
                    }
                }
                return
            }
            var rowScales = [Float](repeating: 1, count: m)
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, paddedRows * lda)) { a in
                let codes = a.baseAddress!
                x.scalars.withUnsafeBufferPointer { xp in
                    rowScales.withUnsafeMutableBufferPointer { sp in
                        quantizeRows(xp.baseAddress!, rows: m, into: codes, rowScales: sp.baseAddress!)
                    }
                }
                for i in (m * lda)..<(paddedRows * lda) { codes[i] = 128 }
                rowScales.withUnsafeBufferPointer { sp in
                    multiply(codes: codes, rows: m, rowScales: sp.baseAddress!, bias: linear.bias, residual: residual,
                             kernel: kernel, into: out.baseAddress!)
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

    /// The INT32 product of A's codes (`rows` rows, padded to whole tiles, stride lda) with the weight, and the
    /// epilogue: one pass per row, ((Σ · (s_x · s_w)) + b) + residual, each output written once.
    private func multiply(codes: UnsafePointer<UInt8>, rows m: Int, rowScales sp: UnsafePointer<Float>, bias: Tensor?,
                          residual: Tensor?, kernel: CPUInt8Kernel, into dst: UnsafeMutablePointer<Float>) {
        let o = weight.outputs, lda = weight.kGroups * 4
        withBias(bias) { bias in
            withResidual(residual) { res in
                let scales = UnsafePointer(weight.scales)
                CPUInt8Gemm.multiply(a: codes, rows: m, lda: lda, weight: weight, kernel: kernel) { row, rows, column, columns, tile in
                    let nr = CPUInt8Kernel.tileColumns
                    for r in 0..<rows {
                        let s = sp[row + r], line = (row + r) * o + column
                        let sums = tile + r * nr, w = scales + column, out = dst + line
                        switch (bias.map { $0 + column }, res.map { $0 + line }) {
                        case let (b?, add?): for j in 0..<columns { out[j] = (Float(sums[j]) * (s * w[j]) + b[j]) + add[j] }
                        case let (b?, nil): for j in 0..<columns { out[j] = Float(sums[j]) * (s * w[j]) + b[j] }
                        case let (nil, add?): for j in 0..<columns { out[j] = Float(sums[j]) * (s * w[j]) + add[j] }
                        case (nil, nil): for j in 0..<columns { out[j] = Float(sums[j]) * (s * w[j]) }
                        }
                    }
                }
            }
        }
    }

    /// Rows of x (this layer's depth K) → codes + 128, K padded with 128 (code 0) to lda; each row's activation scale.
    private func quantizeRows(_ x: UnsafePointer<Float>, rows m: Int, into codes: UnsafeMutablePointer<UInt8>,
                              rowScales: UnsafeMutablePointer<Float>) {
        let k = weight.depth, lda = weight.kGroups * 4
        let quantization = inputQuantization
        checkSmoothing()
        quantization.withSmoothing { smoothing in
            parallelFor(m, minChunk: max(1, 16384 / max(k, 1))) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { row in
                    for r in range {
                        rowScales[r] = CPUInt8LayerHook.quantizeRow(x + r * k, width: k, scale: quantization.scale, smoothing: smoothing,
                                                                    scratch: row.baseAddress!, into: codes + r * lda, lda: lda)
                    }
                }
            }
        }
    }

    func checkSmoothing() {
        let k = weight.depth
        precondition(layer.smoothing == nil || layer.smoothing!.count == k, "\(layer.name): smoothing vector length \(layer.smoothing!.count) ≠ \(k)")
    }

    /// One input row (width K) → codes + 128 padded with 128 (code 0) to `lda`: the row multiplied by the smoothing
    /// factors `s` (`CPUInt8InputQuantization.withSmoothing`) into `scratch` (K floats), its scale (static, or from the
    /// row's amax), `encode`. Returns the scale.
    /// The one definition of a Linear's input codes: the layer's own pass and the producers (`CPUBackend`) call it.
    @inline(__always)
    static func quantizeRow(_ source: UnsafePointer<Float>, width k: Int, scale staticScale: Float?, smoothing s: UnsafePointer<Float>?,
                            scratch v: UnsafeMutablePointer<Float>, into dst: UnsafeMutablePointer<UInt8>, lda: Int) -> Float {
        if let s {
            for j in 0..<k { v[j] = source[j] * s[j] }
        } else {
            for j in 0..<k { v[j] = source[j] }
        }
        let scale: Float
        if let staticScale {
            scale = staticScale
        } else {
            var amax: Float = 0
            for j in 0..<k { amax = max(amax, abs(v[j])) }
            scale = QuantizedFormat.int8.scale(forAmax: amax)
        }
        encode(UnsafePointer(v), count: k, scale: scale, into: dst)
        for j in k..<lda { dst[j] = 128 }
        return scale
    }

    /// Codes + 128 of values / scale with `Int8Codec`'s rounding (half to even, clamp to [-128, 127], NaN → 0).
    /// Branch-free so that it vectorises: after the clamp, adding 1.5 · 2²³ rounds to the nearest integer (ties to
    /// even, the FPU's default) and leaves it in the low mantissa bits, whose low byte is the code's two's complement.
    @inline(__always)
    static func encode(_ x: UnsafePointer<Float>, count: Int, scale: Float, into out: UnsafeMutablePointer<UInt8>) {
        for i in 0..<count {
            let t = x[i] / scale
            let clamped = t.isNaN ? 0 : Swift.min(Swift.max(t, -128), 127)
            out[i] = UInt8(truncatingIfNeeded: (clamped + 12_582_912).bitPattern) ^ 0x80
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
        // The input's channels-last codes (per-tensor scale, or per sample in dynamic mode): written by its producer,
        // or quantized here once; then im2col rows are gathered: per tap, one run of C codes (or code 0 in the padding).
        let quantized: [UInt8], imageScales: [Float]
        if let produced = x.quantizedInput, produced.serves(inputQuantization, as: .channelsLast(shape: x.shape)) {
            (quantized, imageScales) = (produced.codes, produced.scales)
        } else {
            (quantized, imageScales) = quantizeChannelsLast(x)
        }
        if kernel == .avx2 && CPUInt8WinogradConvolution.applies(weightShape: shape, stride: stride, padding: padding) {
            return Tensor(shape: [n, o, oh, ow]) { out in
                quantized.withUnsafeBufferPointer { q in
                    imageScales.withUnsafeBufferPointer { sp in
                        withBias(conv.bias) { bias in
                            CPUInt8WinogradConvolution.run(weight, codes: q.baseAddress!, images: n, height: h, width: w,
                                                           imageScales: sp.baseAddress!, bias: bias, into: out.baseAddress!)
                        }
                    }
                }
            }
        }
        return Tensor(shape: [n, o, oh, ow]) { out in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, paddedRows * lda)) { a in
                let codes = a.baseAddress!
                quantized.withUnsafeBufferPointer { qp in
                    let q = UnsafeRawPointer(qp.baseAddress!)
                    parallelFor(paddedRows, minChunk: 64) { range in
                        for r in range {
                            let dst = UnsafeMutableRawPointer(codes + r * lda)
                            guard r < m else { dst.initializeMemory(as: UInt8.self, repeating: 128, count: lda); continue }
                            let b = r / hw, pixel = r % hw
                            let iy0 = (pixel / ow) * stride - padding, ix0 = (pixel % ow) * stride - padding
                            var offset = 0
                            for ky in 0..<kh {
                                let iy = iy0 + ky
                                for kx in 0..<kw {
                                    let ix = ix0 + kx
                                    if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                        (dst + offset).copyMemory(from: q + b * imageSize + (iy * w + ix) * c, byteCount: c)
                                    } else {
                                        (dst + offset).initializeMemory(as: UInt8.self, repeating: 128, count: c)
                                    }
                                    offset += c
                                }
                            }
                            (dst + k).initializeMemory(as: UInt8.self, repeating: 128, count: lda - k)
                        }
                    }
                }
                imageScales.withUnsafeBufferPointer { sp in
                    withBias(conv.bias) { bias in
                        let dst = out.baseAddress!
                        let scales = UnsafePointer(weight.scales)
                        CPUInt8Gemm.multiply(a: codes, rows: m, lda: lda, weight: weight, kernel: kernel) { row, rows, column, columns, tile in
                            // Output channel by channel: the tile's rows are consecutive pixels of one plane (split where
                            // a tile straddles two images).
                            let nr = CPUInt8Kernel.tileColumns
                            var r0 = 0
                            while r0 < rows {
                                let b = (row + r0) / hw, pixel = (row + r0) % hw
                                let count = min(rows - r0, hw - pixel)
                                let s = sp[b]
                                for j in 0..<columns {
                                    let ws = s * scales[column + j], add = bias?[column + j] ?? 0
                                    let out = dst + (b * o + column + j) * hw + pixel, sums = tile + r0 * nr + j
                                    if count == 6 && mr == 6 {
                                        // A whole tile's column: two vector stores instead of a 6-step loop (same formula).
                                        let head = SIMD4<Float>(Float(sums[0]), Float(sums[nr]), Float(sums[2 * nr]), Float(sums[3 * nr]))
                                        let tail = SIMD2<Float>(Float(sums[4 * nr]), Float(sums[5 * nr]))
                                        UnsafeMutableRawPointer(out).storeBytes(of: head * ws + add, as: SIMD4<Float>.self)
                                        UnsafeMutableRawPointer(out + 4).storeBytes(of: tail * ws + add, as: SIMD2<Float>.self)
                                    } else {
                                        for r in 0..<count { out[r] = Float(sums[r * nr]) * ws + add }
                                    }
                                }
                                r0 += count
                            }
                        }
                    }
                }
            }
        }
    }

    /// Code planes [N][C][spatial] → channels-last [N][spatial][C] (`d8_int8_channels_last`), in parallel over pixels.
    static func channelsLast(planes: UnsafePointer<UInt8>, images n: Int, channels c: Int, spatial: Int,
                             into out: UnsafeMutablePointer<UInt8>) {
        let chunks = max(1, (spatial + 255) / 256)
        parallelFor(n * chunks, minChunk: max(1, 16384 / max(256 * c, 1))) { range in
            for item in range {
                let b = item / chunks, first = (item % chunks) * 256
                d8_int8_channels_last(planes + b * c * spatial, c, spatial, first, min(256, spatial - first), out + b * c * spatial)
            }
        }
    }

    /// An NCHW input → channels-last codes + 128 [N, H, W, C] and the scale of each image (static, or from the image's
    /// amax): `encode` per channel plane, then the planes transposed (`channelsLast`). The producer (GroupNorm+SiLU)
    /// does the same.
    func quantizeChannelsLast(_ x: Tensor) -> (codes: [UInt8], scales: [Float]) {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let imageSize = c * h * w
        var imageScales = [Float](repeating: 1, count: n)
        for b in 0..<n {
            if let amax = layer.inputAmax {
                imageScales[b] = QuantizedFormat.int8.scale(forAmax: amax)
            } else {
                var amax: Float = 0
                x.scalars.withUnsafeBufferPointer { xp in
                    for i in (b * imageSize)..<((b + 1) * imageSize) { amax = max(amax, abs(xp[i])) }
                }
                imageScales[b] = QuantizedFormat.int8.scale(forAmax: amax)
            }
        }
        let planeSize = h * w
        let quantized = [UInt8](unsafeUninitializedCapacity: max(1, x.count)) { q, initialized in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, x.count)) { planes in
                let planes = planes.baseAddress!
                x.scalars.withUnsafeBufferPointer { xp in
                    let scales = imageScales
                    parallelFor(n * c, minChunk: max(1, 16384 / max(planeSize, 1))) { range in
                        for item in range {
                            CPUInt8LayerHook.encode(xp.baseAddress! + item * planeSize, count: planeSize, scale: scales[item / c],
                                                    into: planes + item * planeSize)
                        }
                    }
                }
                CPUInt8LayerHook.channelsLast(planes: planes, images: n, channels: c, spatial: planeSize, into: q.baseAddress!)
            }
            initialized = max(1, x.count)
        }
        return (quantized, imageScales)
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
