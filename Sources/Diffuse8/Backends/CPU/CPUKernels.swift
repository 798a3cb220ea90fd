#if canImport(Glibc)
import Glibc
#endif

/// Float32 CPU kernels with PyTorch semantics. Every model layer calls these; the layouts are
/// NCHW for feature maps and [..., channels] (last dimension innermost) for token sequences.
///
/// These are the reference implementations; `Gemm.swift`, `Conv2d.swift` and `Attention.swift`
/// hold the optimised paths they dispatch to.
public enum CPUKernels {

    // MARK: Linear algebra

    /// `y = x · wᵀ + b` over the last dimension, like `torch.nn.functional.linear`.
    /// x: [..., in], weight: [out, in], bias: [out].
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
        precondition(x.shape.last == inFeatures, "linear: input \(x.shape) does not end in \(inFeatures)")
        let rows = x.count / inFeatures
        var outShape = x.shape
        outShape[outShape.count - 1] = outFeatures
        return Tensor(shape: outShape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                weight.scalars.withUnsafeBufferPointer { wp in
                    Gemm.multiplyTransposedB(a: xp.baseAddress!, b: wp.baseAddress!, c: out.baseAddress!,
                                             m: rows, n: outFeatures, k: inFeatures)
                }
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
    public static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor,
                                 epsilon: Float, fusedSiLU: Bool = false) -> Tensor {
        let n = x.shape[0], c = x.shape[1]
        let spatial = x.count / (n * c)
        let perGroup = c / groups
        return Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                parallelFor(n * groups) { range in
                    for ng in range {
                        let g = ng % groups
                        let base = ng * perGroup * spatial
                        let len = perGroup * spatial
                        var mean = 0.0
                        for i in 0..<len { mean += Double(xp[base + i]) }
                        mean /= Double(len)
                        var variance = 0.0
                        for i in 0..<len { let d = Double(xp[base + i]) - mean; variance += d * d }
                        variance /= Double(len)
                        let inv = Float(1.0 / (variance + Double(epsilon)).squareRoot())
                        let m = Float(mean)
                        for cc in 0..<perGroup {
                            let ch = g * perGroup + cc
                            let scale = inv * weight.scalars[ch], shift = bias.scalars[ch] - m * scale
                            let off = base + cc * spatial
                            for i in 0..<spatial {
                                var v = xp[off + i] * scale + shift
                                if fusedSiLU { v = v / (1 + expf(-v)) }
                                out[off + i] = v
                            }
                        }
                    }
                }
            }
        }
    }

    /// `torch.nn.LayerNorm` over the last dimension.
    public static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, epsilon: Float) -> Tensor {
        let d = x.shape.last!
        let rows = x.count / d
        return Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                parallelFor(rows, minChunk: 16) { range in
                    for r in range {
                        let row = xp.baseAddress! + r * d
                        var mean = 0.0
                        for i in 0..<d { mean += Double(row[i]) }
                        mean /= Double(d)
                        var variance = 0.0
                        for i in 0..<d { let v = Double(row[i]) - mean; variance += v * v }
                        variance /= Double(d)
                        let inv = Float(1.0 / (variance + Double(epsilon)).squareRoot())
                        let m = Float(mean)
                        for i in 0..<d { out[r * d + i] = (row[i] - m) * inv * weight.scalars[i] + bias.scalars[i] }
                    }
                }
            }
        }
    }

    // MARK: Activations and element-wise

    /// SiLU (x·σ(x)).
    public static func silu(_ x: Tensor) -> Tensor { map(x) { $0 / (1 + expf(-$0)) } }

    /// Exact GELU (erf form), `torch.nn.functional.gelu(approximate="none")`.
    public static func gelu(_ x: Tensor) -> Tensor { map(x) { 0.5 * $0 * (1 + erff($0 * 0.70710678118654752)) } }

    /// CLIP's `quick_gelu`: x·σ(1.702x).
    public static func quickGELU(_ x: Tensor) -> Tensor { map(x) { $0 / (1 + expf(-1.702 * $0)) } }

    /// diffusers' GEGLU tail: splits the last dimension in half, returns `a * gelu(b)`.
    public static func geglu(_ x: Tensor) -> Tensor {
        let d2 = x.shape.last!, d = d2 / 2
        let rows = x.count / d2
        var outShape = x.shape
        outShape[outShape.count - 1] = d
        return Tensor(shape: outShape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                parallelFor(rows, minChunk: 16) { range in
                    for r in range {
                        for i in 0..<d {
                            let a = xp[r * d2 + i], b = xp[r * d2 + d + i]
                            out[r * d + i] = a * (0.5 * b * (1 + erff(b * 0.70710678118654752)))
                        }
                    }
                }
            }
        }
    }

    /// Applies `f` to every element.
    public static func map(_ x: Tensor, _ f: (Float) -> Float) -> Tensor {
        Tensor(shape: x.shape) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                for i in 0..<xp.count { out[i] = f(xp[i]) }
            }
        }
    }

    /// Element-wise sum of two tensors of the same shape.
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
        return Tensor(shape: a.shape) { out in
            for i in 0..<out.count { out[i] = a.scalars[i] + b.scalars[i] }
        }
    }

    /// Adds a per-(batch, channel) value to an NCHW map: x[n,c,:,:] += v[n,c]. Used for time embeddings.
    public static func addChannelBias(_ x: Tensor, _ v: Tensor) -> Tensor {
        let n = x.shape[0], c = x.shape[1], spatial = x.count / (n * c)
        precondition(v.count == n * c)
        var y = x
        y.scalars.withUnsafeMutableBufferPointer { yp in
            for nc in 0..<(n * c) {
                let value = v.scalars[nc]
                for i in 0..<spatial { yp[nc * spatial + i] += value }
            }
        }
        return y
    }

    /// Multiplies every element by `s`.
    public static func scale(_ x: Tensor, _ s: Float) -> Tensor { map(x) { $0 * s } }

    /// Softmax over the last dimension.
    public static func softmax(_ x: Tensor) -> Tensor {
        let d = x.shape.last!
        var y = x
        y.scalars.withUnsafeMutableBufferPointer { p in
            for r in 0..<(x.count / d) { softmaxRow(p.baseAddress! + r * d, d) }
        }
        return y
    }

    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ d: Int) {
        var m = -Float.infinity
        for i in 0..<d { m = max(m, row[i]) }
        var sum: Float = 0
        for i in 0..<d { let e = expf(row[i] - m); row[i] = e; sum += e }
        let inv = 1 / sum
        for i in 0..<d { row[i] *= inv }
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
            for b in 0..<n { for ch in 0..<c { for p in 0..<hw {
                out[(b * hw + p) * c + ch] = x.scalars[(b * c + ch) * hw + p]
            } } }
        }
    }

    /// [N, H·W, C] → NCHW.
    public static func tokensToChannels(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let n = x.shape[0], hw = x.shape[1], c = x.shape[2]
        precondition(hw == height * width)
        return Tensor(shape: [n, c, height, width]) { out in
            for b in 0..<n { for p in 0..<hw { for ch in 0..<c {
                out[(b * c + ch) * hw + p] = x.scalars[(b * hw + p) * c + ch]
            } } }
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
