/// A Linear or Conv2d layer of an FP8 folder on the CPU with only its 1-byte E4M3 weight codes and scales resident
/// (the FP32 host weight is released). These CPUs have no FP8 arithmetic, so the codes are expanded to FP32 —
/// `decodeTable[code] · scale`, the values `QuantizedWeight.dequantized()` gives — only transiently, where the FP32
/// GEMM reads them:
/// - Linear: while the GEMM packs each K slice of a column tile of B (`Gemm.BLayout.packed`), straight into its
///   packing scratch; no expanded copy of the weight exists at any time.
/// - Conv2d: a panel of output channels at a time (at most `panelFloats` floats), multiplied by the implicit im2col
///   of every image, then the next panel reuses the buffer.
///
/// Equals the simulation (`SimulatedQuantizationHook`) bit for bit: the same input (`QuantizedLayer.quantizedInput`:
/// smoothing, static or dynamic FP8 fake-quantization), the same weight values in the same packed layout, the same
/// micro-kernel summing each output over K in the same slices (an output's value does not depend on which tile or
/// panel holds it), the same bias addition, and the same FP8 rounding of Q/K/V outputs (level 4).
public final class CPUFP8LayerHook: QuantizedExecutionHook, LinearExecutionHook, Conv2dExecutionHook {
    public let layer: QuantizedLayer
    /// Floats of one expanded panel of a convolution weight.
    let panelFloats: Int

    /// The E4M3 value of every byte (`FP8E4M3.decode`): 0x7F and 0xFF are NaN, the format's only NaNs.
    static let decodeTable: [Float] = (0...255).map { FP8E4M3.decode(UInt8($0)) }

    public convenience init(_ layer: QuantizedLayer) { self.init(layer, panelFloats: 4 << 20) }

    init(_ layer: QuantizedLayer, panelFloats: Int) {
        precondition(layer.format == .fp8, "CPUFP8LayerHook runs FP8 layers")
        self.layer = layer
        self.panelFloats = panelFloats
    }

    /// Installs FP8 execution on `linear` (which must hold `layer`'s shapes) and drops its FP32 weight.
    public static func install(_ layer: QuantizedLayer, on linear: Linear) {
        linear.executionHook = CPUFP8LayerHook(layer)
        linear.releaseHostWeight()
    }

    public static func install(_ layer: QuantizedLayer, on conv: Conv2d) {
        conv.executionHook = CPUFP8LayerHook(layer)
        conv.releaseHostWeight()
    }

    /// Scale of output channel `o`: per tensor or per channel.
    @inline(__always)
    private static func scale(_ scales: UnsafePointer<Float>, count: Int, _ o: Int) -> Float { count == 1 ? scales[0] : scales[o] }

    // MARK: Linear

    /// x [..., K] → [..., O]: the FP32 GEMM on the fake-quantized input, B packed from the codes.
    public func run(_ linear: Linear, _ x: Tensor) -> Tensor {
        let weight = layer.weight
        let o = weight.shape[0], k = weight.shape[1]
        precondition(x.shape.last == k, "\(layer.name): input \(x.shape) does not end in \(k) features")
        let input = layer.quantizedInput(x)
        let rows = x.count / k
        var shape = x.shape
        shape[shape.count - 1] = o
        var y = Tensor(shape: shape) { out in
            input.scalars.withUnsafeBufferPointer { xp in
                weight.codes.withUnsafeBufferPointer { codes in
                    weight.scales.withUnsafeBufferPointer { scales in
                        Self.decodeTable.withUnsafeBufferPointer { table in
                            let packing = FP8WeightPacking(codes: codes.baseAddress!, depth: k, scales: scales.baseAddress!,
                                                           scaleCount: scales.count, table: table.baseAddress!)
                            Gemm.multiply(m: rows, n: o, k: k, a: xp.baseAddress!, lda: k, b: xp.baseAddress!, ldb: 0,
                                          bLayout: .packed(packing.pack), c: out.baseAddress!, ldc: o)
                        }
                    }
                }
            }
            if let bias = linear.bias { CPUKernels.addRowBias(out, bias, rows: rows, columns: o) }
        }
        if let amax = layer.outputAmax {
            // Level-4 FP8 attention: Q/K/V leave their projection FP8-rounded, as in the simulation.
            y.scalars.withUnsafeMutableBufferPointer {
                QuantizedFormat.fp8.fakeQuantize($0.baseAddress!, count: $0.count, scale: QuantizedFormat.fp8.scale(forAmax: amax))
            }
        }
        return y
    }

    // MARK: Conv2d

    /// NCHW convolution, `CPUKernels.conv2d`'s GEMMs (out[O, H'·W'] = W · columns per image) run one panel of output
    /// channels at a time, the panel's weight rows expanded into one reused buffer.
    public func run(_ conv: Conv2d, _ x: Tensor) -> Tensor {
        let weight = layer.weight
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == c, "\(layer.name): input \(x.shape) does not have \(weight.shape[1]) channels")
        let stride = conv.stride, padding = conv.padding
        let oh = (h + 2 * padding - kh) / stride + 1, ow = (w + 2 * padding - kw) / stride + 1
        let ck = c * kh * kw, hw = oh * ow
        let mr = Gemm.mr
        let panelRows = min(o, max(mr, panelFloats / max(ck, 1) / mr * mr))
        let input = layer.quantizedInput(x)
        let isPointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0
        return Tensor(shape: [n, o, oh, ow]) { out in
            input.scalars.withUnsafeBufferPointer { xp in
                weight.codes.withUnsafeBufferPointer { codes in
                    weight.scales.withUnsafeBufferPointer { scales in
                        Self.decodeTable.withUnsafeBufferPointer { table in
                            CPUKernels.withOptionalPointer(conv.bias?.scalars) { bp in
                                withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, panelRows * ck)) { panel in
                                    var o0 = 0
                                    while o0 < o {
                                        let rows = min(panelRows, o - o0)
                                        Self.expand(codes.baseAddress! + o0 * ck, rows: rows, width: ck, firstChannel: o0,
                                                    scales: scales.baseAddress!, scaleCount: scales.count, table: table.baseAddress!,
                                                    into: panel.baseAddress!)
                                        let gemmBias: Gemm.Bias = bp.map { .perRow($0 + o0) } ?? .none
                                        for b in 0..<n {
                                            let image = xp.baseAddress! + b * c * h * w
                                            let dst = out.baseAddress! + (b * o + o0) * hw
                                            if isPointwise {
                                                Gemm.multiply(m: rows, n: hw, k: c, a: panel.baseAddress!, lda: c, b: image, ldb: hw,
                                                              bLayout: .rowMajor, c: dst, ldc: hw, bias: gemmBias)
                                            } else {
                                                Im2colPacking.withPaddedImage(image, channels: c, height: h, width: w, kernelHeight: kh,
                                                                              kernelWidth: kw, stride: stride, padding: padding,
                                                                              outputWidth: ow) { geometry in
                                                    Gemm.multiply(m: rows, n: hw, k: ck, a: panel.baseAddress!, lda: ck, b: image, ldb: 0,
                                                                  bLayout: .packed(geometry.pack), c: dst, ldc: hw, bias: gemmBias)
                                                }
                                            }
                                        }
                                        o0 += rows
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// rows × width codes (output channels from `firstChannel`) → table[code] · scale, in parallel over the rows.
    private static func expand(_ codes: UnsafePointer<UInt8>, rows: Int, width: Int, firstChannel: Int,
                               scales: UnsafePointer<Float>, scaleCount: Int, table: UnsafePointer<Float>,
                               into out: UnsafeMutablePointer<Float>) {
        parallelFor(rows, minChunk: max(1, 65536 / max(width, 1))) { range in
            for r in range {
                let s = scale(scales, count: scaleCount, firstChannel + r)
                let src = codes + r * width, dst = out + r * width
                for i in 0..<width { dst[i] = table[Int(src[i])] * s }
            }
        }
    }
}

/// Packs K slices of a Linear weight's FP8 codes ([O, K], B transposed) into GEMM B slivers, expanding each code
/// to table[code] · scale[o] as it goes: the layout `GemmPacking.packBTransposed` writes from the FP32 weight.
struct FP8WeightPacking: @unchecked Sendable {
    let codes: UnsafePointer<UInt8>
    let depth: Int
    let scales: UnsafePointer<Float>
    let scaleCount: Int
    let table: UnsafePointer<Float>

    func pack(_ p0: Int, _ kc: Int, _ j0: Int, _ columns: Int, _ out: UnsafeMutablePointer<Float>) {
        let nr = Gemm.nr
        let slivers = (columns + nr - 1) / nr
        for s in 0..<slivers {
            let dst = out + s * nr * kc
            for j in 0..<nr {
                let column = s * nr + j
                if column < columns {
                    let o = j0 + column
                    let scale = scaleCount == 1 ? scales[0] : scales[o]
                    let src = codes + o * depth + p0
                    for p in 0..<kc { dst[p * nr + j] = table[Int(src[p])] * scale }
                } else {
                    for p in 0..<kc { dst[p * nr + j] = 0 }
                }
            }
        }
    }
}
