#if canImport(Glibc)
import Glibc
#endif

/// Float32 CPU kernels with PyTorch semantics. Every model layer calls these; the layouts are
/// NCHW for feature maps and [..., channels] (last dimension innermost) for token sequences.
///
/// Optimised for all cores: matrix products go through the packed SGEMM (`Gemm`), convolutions through
/// implicit-im2col GEMMs (`CPUKernels+Conv2d.swift`), attention through per-head blocks of the SGEMM
/// (`CPUKernels+Attention.swift`); norms and activations are `SIMD16` loops (`VectorMath`) split
/// across workers. `tools/reference/cpu_kernels.py` records the PyTorch outputs they are tested against.
public enum CPUKernels {

    // MARK: Linear algebra

    /// x's shape with its last dimension replaced by `last` (the output of a row-wise op).
    static func shape(of x: Tensor, lastDimension last: Int) -> [Int] {
        var shape = x.shape
        shape[shape.count - 1] = last
        return shape
    }

    /// `y = x · wᵀ + b` over the last dimension, like `torch.nn.functional.linear`.
    /// x: [..., in], weight: [out, in], bias: [out].
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
        precondition(x.shape.last == inFeatures, "linear: input \(x.shape) does not end in \(inFeatures)")
        let rows = x.count / inFeatures
        return Tensor(shape: shape(of: x, lastDimension: outFeatures)) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                weight.scalars.withUnsafeBufferPointer { wp in
                    Gemm.multiplyTransposedB(a: xp.baseAddress!, b: wp.baseAddress!, c: out.baseAddress!,
                                             m: rows, n: outFeatures, k: inFeatures)
                }
            }
            if let bias { addRowBias(out, bias, rows: rows, columns: outFeatures) }
        }
    }

    /// `linear` with the weight packed once for the SGEMM (`PackedGemmWeight`, role `.linearB`). The bias is added
    /// after the product, as in `linear` and the FP8 layers, so all of them round alike.
    static func linear(_ x: Tensor, weight: PackedGemmWeight, bias: Tensor?) -> Tensor {
        precondition(weight.role == .linearB && weight.shape.count == 2, "linear: weight \(weight.shape) is not a packed [out, in] matrix")
        let inFeatures = weight.depth, outFeatures = weight.outputs
        precondition(x.shape.last == inFeatures, "linear: input \(x.shape) does not end in \(inFeatures)")
        let rows = x.count / inFeatures
        return Tensor(shape: shape(of: x, lastDimension: outFeatures)) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                Gemm.multiply(kernel: weight.kernel, m: rows, n: outFeatures, k: inFeatures, a: .matrix(xp.baseAddress!, lda: inFeatures),
                              b: weight.pointer, ldb: 0,
                              bLayout: .prepacked(weight.pointer, paddedColumns: Gemm.paddedColumns(outFeatures, weight.kernel)),
                              c: out.baseAddress!, ldc: outFeatures)
            }
            if let bias { addRowBias(out, bias, rows: rows, columns: outFeatures) }
        }
    }

    /// Adds `bias[j]` to every row of a [rows, columns] matrix.
    static func addRowBias(_ out: UnsafeMutableBufferPointer<Float>, _ bias: Tensor, rows: Int, columns: Int) {
        bias.scalars.withUnsafeBufferPointer { bp in
            for r in 0..<rows {
                let row = out.baseAddress! + r * columns
                for j in 0..<columns { row[j] += bp[j] }
            }
        }
    }

    // MARK: Normalisation

    /// `torch.nn.GroupNorm` on NCHW (or [N, C, ...]) input, optionally followed by SiLU.
    /// Parallel over (image, group); mean and variance in two vectorised passes (Double totals).
    public static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor,
                                 epsilon: Float, fusedSiLU: Bool = false) -> Tensor {
        let n = x.shape[0], c = x.shape[1]
        let spatial = x.count / (n * c)
        let perGroup = c / groups
        precondition(c % groups == 0, "groupNorm: \(c) channels do not split into \(groups) groups")
        return Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                weight.scalars.withUnsafeBufferPointer { wp in
                    bias.scalars.withUnsafeBufferPointer { bp in
                        parallelForDynamic(n * groups) { ng in
                            groupNormGroup(ng, xp.baseAddress!, out.baseAddress!, groups: groups, perGroup: perGroup,
                                           spatial: spatial, weight: wp.baseAddress!, bias: bp.baseAddress!, epsilon: epsilon,
                                           fusedSiLU: fusedSiLU) { _, _ in }
                        }
                    }
                }
            }
        }
    }

    /// Group `ng` (image ng / groups, group ng % groups) of `groupNorm`: its channel planes normalised (and SiLU) into
    /// `out`; `planeDone(channel, plane)` is called after each plane is written (the quantizing producer encodes it there).
    @inline(__always)
    static func groupNormGroup(_ ng: Int, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, groups: Int, perGroup: Int,
                               spatial: Int, weight wp: UnsafePointer<Float>, bias bp: UnsafePointer<Float>, epsilon: Float,
                               fusedSiLU: Bool, planeDone: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let g = ng % groups
        let base = ng * perGroup * spatial
        let (mean, inv) = meanAndInverseDeviation(x + base, count: perGroup * spatial, epsilon: epsilon)
        for cc in 0..<perGroup {
            let ch = g * perGroup + cc
            let scale = inv * wp[ch], shift = bp[ch] - mean * scale
            let off = base + cc * spatial
            let sv = VectorMath.V(repeating: scale), hv = VectorMath.V(repeating: shift)
            if fusedSiLU {
                VectorMath.apply(x + off, out + off, count: spatial) { VectorMath.silu(VectorMath.fma(hv, $0, sv)) }
            } else {
                VectorMath.apply(x + off, out + off, count: spatial) { VectorMath.fma(hv, $0, sv) }
            }
            planeDone(ch, out + off)
        }
    }

    /// Mean and 1/√(variance + ε) (biased variance, as PyTorch's norms) of `count` floats: two passes,
    /// 16-lane float partial sums per 1024-element chunk, chunk totals in Double.
    static func meanAndInverseDeviation(_ p: UnsafePointer<Float>, count: Int, epsilon: Float) -> (Float, Float) {
        typealias V = VectorMath.V
        func total(_ f: (V) -> V, _ g: (Float) -> Float) -> Double {
            var result = 0.0
            var start = 0
            while start < count {
                let end = min(count, start + 1024)
                var acc = V()
                var i = start
                while i + 16 <= end { acc += f(VectorMath.load(p + i)); i += 16 }
                var tail: Float = 0
                while i < end { tail += g(p[i]); i += 1 }
                result += Double(VectorMath.sum(acc)) + Double(tail)
                start = end
            }
            return result
        }
        let mean = Float(total({ $0 }, { $0 }) / Double(count))
        let mv = V(repeating: mean)
        let variance = total({ ($0 - mv) * ($0 - mv) }, { ($0 - mean) * ($0 - mean) }) / Double(count)
        return (mean, Float(1.0 / (variance + Double(epsilon)).squareRoot()))
    }

    /// `torch.nn.LayerNorm` over the last dimension.
    public static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, epsilon: Float) -> Tensor {
        let d = x.shape.last!
        let rows = x.count / d
        return Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                weight.scalars.withUnsafeBufferPointer { wp in
                    bias.scalars.withUnsafeBufferPointer { bp in
                        parallelFor(rows, minChunk: 16) { range in
                            for r in range {
                                layerNormRow(xp.baseAddress! + r * d, out.baseAddress! + r * d, count: d, weight: wp.baseAddress!,
                                             bias: bp.baseAddress!, epsilon: epsilon)
                            }
                        }
                    }
                }
            }
        }
    }

    /// One row of `layerNorm`.
    @inline(__always)
    static func layerNormRow(_ row: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count d: Int,
                             weight wp: UnsafePointer<Float>, bias bp: UnsafePointer<Float>, epsilon: Float) {
        let (mean, inv) = meanAndInverseDeviation(row, count: d, epsilon: epsilon)
        var i = 0
        let mv = VectorMath.V(repeating: mean), iv = VectorMath.V(repeating: inv)
        while i + 16 <= d {
            let normalised = (VectorMath.load(row + i) - mv) * iv
            VectorMath.store(VectorMath.fma(VectorMath.load(bp + i), normalised, VectorMath.load(wp + i)), dst + i)
            i += 16
        }
        while i < d { dst[i] = (row[i] - mean) * inv * wp[i] + bp[i]; i += 1 }
    }

    // MARK: Activations and element-wise

    /// SiLU (x·σ(x)).
    public static func silu(_ x: Tensor) -> Tensor { mapVector(x) { VectorMath.silu($0) } }

    /// Exact GELU (erf form), `torch.nn.functional.gelu(approximate="none")`.
    public static func gelu(_ x: Tensor) -> Tensor { mapVector(x) { VectorMath.gelu($0) } }

    /// CLIP's `quick_gelu`: x·σ(1.702x).
    public static func quickGELU(_ x: Tensor) -> Tensor { mapVector(x) { $0 / (1 + VectorMath.exp(-1.702 * $0)) } }

    /// diffusers' GEGLU tail: splits the last dimension in half, returns `a * gelu(b)`.
    public static func geglu(_ x: Tensor) -> Tensor {
        let d2 = x.shape.last!, d = d2 / 2
        let rows = x.count / d2
        return Tensor(shape: shape(of: x, lastDimension: d)) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                parallelFor(rows, minChunk: 16) { range in
                    for r in range { gegluRow(xp.baseAddress! + r * d2, out.baseAddress! + r * d, count: d) }
                }
            }
        }
    }

    /// One row of `geglu`: the input row [a | gate] (2d values) → d values.
    @inline(__always)
    static func gegluRow(_ a: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count d: Int) {
        // gelu(gate) into dst, then multiply by a.
        VectorMath.apply(a + d, dst, count: d) { VectorMath.gelu($0) }
        var i = 0
        while i + 16 <= d { VectorMath.store(VectorMath.load(dst + i) * VectorMath.load(a + i), dst + i); i += 16 }
        while i < d { dst[i] *= a[i]; i += 1 }
    }

    /// Applies `f` to every element.
    public static func map(_ x: Tensor, _ f: (Float) -> Float) -> Tensor {
        Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                for i in 0..<xp.count { out[i] = f(xp[i]) }
            }
        }
    }

    /// Applies a vector function to every element, in parallel chunks.
    static func mapVector(_ x: Tensor, _ f: @escaping (VectorMath.V) -> VectorMath.V) -> Tensor {
        Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                let chunks = (xp.count + 16383) / 16384
                parallelFor(chunks) { range in
                    let start = range.lowerBound * 16384, end = min(xp.count, range.upperBound * 16384)
                    VectorMath.apply(xp.baseAddress! + start, out.baseAddress! + start, count: end - start, f)
                }
            }
        }
    }

    /// Element-wise sum of two tensors of the same shape.
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
        var y = a
        y.scalars.withUnsafeMutableBufferPointer { yp in
            b.scalars.withUnsafeBufferPointer { bp in
                let count = yp.count
                let chunks = (count + 16383) / 16384
                parallelFor(chunks) { range in
                    var i = range.lowerBound * 16384
                    let end = min(count, range.upperBound * 16384)
                    while i + 16 <= end {
                        VectorMath.store(VectorMath.load(yp.baseAddress! + i) + VectorMath.load(bp.baseAddress! + i), yp.baseAddress! + i)
                        i += 16
                    }
                    while i < end { yp[i] += bp[i]; i += 1 }
                }
            }
        }
        return y
    }

    /// Adds a per-(batch, channel) value to an NCHW map: x[n,c,:,:] += v[n,c]. Used for time embeddings.
    public static func addChannelBias(_ x: Tensor, _ v: Tensor) -> Tensor {
        let n = x.shape[0], c = x.shape[1], spatial = x.count / (n * c)
        precondition(v.count == n * c)
        var y = x
        y.scalars.withUnsafeMutableBufferPointer { yp in
            v.scalars.withUnsafeBufferPointer { vp in
                parallelFor(n * c, minChunk: 8) { range in
                    for nc in range {
                        let value = vp[nc]
                        VectorMath.apply(yp.baseAddress! + nc * spatial, yp.baseAddress! + nc * spatial, count: spatial) { $0 + value }
                    }
                }
            }
        }
        return y
    }

    /// Multiplies every element by `s`.
    public static func scale(_ x: Tensor, _ s: Float) -> Tensor { mapVector(x) { $0 * s } }

    /// Softmax over the last dimension.
    public static func softmax(_ x: Tensor) -> Tensor {
        let d = x.shape.last!
        var y = x
        y.scalars.withUnsafeMutableBufferPointer { p in
            parallelFor(x.count / d, minChunk: 8) { range in
                for r in range { softmaxRow(p.baseAddress! + r * d, d) }
            }
        }
        return y
    }

    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ d: Int) {
        let sum = VectorMath.exponentiateRow(row, count: d, scale: 1)
        VectorMath.scale(row, count: d, by: 1 / sum)
    }

    // MARK: Layout

    /// Concatenates NCHW tensors along the channel dimension (`torch.cat(dim=1)`).
    public static func concatChannels(_ a: Tensor, _ b: Tensor) -> Tensor {
        let n = a.shape[0], ca = a.shape[1], cb = b.shape[1]
        let spatial = a.count / (n * ca)
        precondition(b.count / (n * cb) == spatial && b.shape[0] == n)
        var shape = a.shape
        shape[1] = ca + cb
        return Tensor(shape: shape) { out in
            for i in 0..<n {
                let dst = out.baseAddress! + i * (ca + cb) * spatial
                a.scalars.withUnsafeBufferPointer { ap in
                    dst.update(from: ap.baseAddress! + i * ca * spatial, count: ca * spatial)
                }
                b.scalars.withUnsafeBufferPointer { bp in
                    (dst + ca * spatial).update(from: bp.baseAddress! + i * cb * spatial, count: cb * spatial)
                }
            }
        }
    }

    /// NCHW → [N, H·W, C] (what diffusers' transformer blocks see).
    public static func channelsToTokens(_ x: Tensor) -> Tensor {
        let n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3]
        return Tensor(shape: [n, hw, c]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                transpose(xp.baseAddress!, out.baseAddress!, batch: n, rows: c, columns: hw)
            }
        }
    }

    /// [N, H·W, C] → NCHW.
    public static func tokensToChannels(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let n = x.shape[0], hw = x.shape[1], c = x.shape[2]
        precondition(hw == height * width)
        return Tensor(shape: [n, c, height, width]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                transpose(xp.baseAddress!, out.baseAddress!, batch: n, rows: hw, columns: c)
            }
        }
    }

    /// out[b][j][i] = x[b][i][j] for i < rows, j < columns, in 32×32 tiles, parallel over tile rows.
    static func transpose(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, batch: Int, rows: Int, columns: Int) {
        let tile = 32
        let rowTiles = (rows + tile - 1) / tile
        parallelFor(batch * rowTiles) { range in
            for item in range {
                let b = item / rowTiles, i0 = (item % rowTiles) * tile
                let src = x + b * rows * columns, dst = out + b * rows * columns
                let i1 = min(rows, i0 + tile)
                var j0 = 0
                while j0 < columns {
                    let j1 = min(columns, j0 + tile)
                    for i in i0..<i1 { for j in j0..<j1 { dst[j * rows + i] = src[i * columns + j] } }
                    j0 = j1
                }
            }
        }
    }

    /// Nearest-neighbour 2× upsampling of NCHW (`F.interpolate(scale_factor=2, mode="nearest")`).
    public static func upsampleNearest2x(_ x: Tensor) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        return Tensor(shape: [n, c, 2 * h, 2 * w]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                parallelFor(n * c) { range in
                    for nc in range {
                        for y in 0..<(2 * h) {
                            let src = xp.baseAddress! + nc * h * w + (y / 2) * w
                            let dst = out.baseAddress! + nc * 4 * h * w + y * 2 * w
                            for xx in 0..<(2 * w) { dst[xx] = src[xx / 2] }
                        }
                    }
                }
            }
        }
    }

    /// `F.interpolate(size=(height, width), mode="nearest")` on NCHW: source index `floor(dst · in/out)` with the
    /// scale computed in Float32 as PyTorch does (the UNet needs it for latents that are not a multiple of 2^k).
    public static func resizeNearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let scaleY = Float(h) / Float(height), scaleX = Float(w) / Float(width)
        let sourceRows = (0..<height).map { min(Int((Float($0) * scaleY).rounded(.down)), h - 1) }
        let sourceColumns = (0..<width).map { min(Int((Float($0) * scaleX).rounded(.down)), w - 1) }
        return Tensor(shape: [x.shape[0], x.shape[1], height, width]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                for p in 0..<planes {
                    for y in 0..<height {
                        let src = p * h * w + sourceRows[y] * w, dst = (p * height + y) * width
                        for xx in 0..<width { out[dst + xx] = xp[src + sourceColumns[xx]] }
                    }
                }
            }
        }
    }

    /// Zero padding of NCHW by (left, right, top, bottom), like `F.pad(x, (l, r, t, b))`.
    public static func pad(_ x: Tensor, left: Int, right: Int, top: Int, bottom: Int) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let oh = h + top + bottom, ow = w + left + right
        var out = Tensor(zeros: [n, c, oh, ow])
        out.scalars.withUnsafeMutableBufferPointer { op in
            for nc in 0..<(n * c) { for y in 0..<h { for xx in 0..<w {
                op[nc * oh * ow + (y + top) * ow + xx + left] = x.scalars[nc * h * w + y * w + xx]
            } } }
        }
        return out
    }
}
