/// The simulation's INT8 Linear/Conv2d arithmetic, computed exactly: y = Float(Σ_k q_x[k] · q_w[n, k]) · (s_x · s_w[n]),
/// then + b[n] — the formula and operation order of an exact INT32 kernel's epilogue (the real CPU kernels',
/// `CPUInt8LayerHook`), so that real INT8 equals the simulation bit for bit.
///
/// The integer sums come from the plain FP32 reference kernels (`CPUKernels.linear`/`conv2d`) run on the codes held
/// as Float. That is exact, not approximately so: a product of two codes (|q| ≤ 128) is exact in FP32, and every sum
/// of integers whose magnitude stays ≤ 2²⁴ is exact too. For output channel n, any partial sum — in whatever order
/// and grouping the kernel adds the products — is at most 128 · Σ_k |q_w[n, k]| in magnitude. The reduction is
/// therefore cut, once per layer, into chunks (runs of input features; whole input channels for a convolution) in
/// which that bound is ≤ 2²⁴ for every output channel; each chunk's sums are exact integers, and the chunks are
/// added in Double (exact below 2⁵³). Converting the exact sum to Float rounds it once, as the real kernels'
/// Float(INT32) does.
final class Int8ExactProduct: @unchecked Sendable {
    /// The largest Σ_k |q_w[n, k]| of one chunk: 128 · 2¹⁷ = 2²⁴.
    static let chunkWeightBound = 1 << 17

    let outputs: Int
    /// Reduction chunks: ranges of input features (Linear) or input channels (Conv2d, each kh · kw taps).
    let chunks: [Range<Int>]
    /// Per chunk, its weight codes as Float: [O, features] or [O, channels, kh, kw].
    let weights: [Tensor]
    /// s_w per output channel.
    let scales: [Float]

    /// `weight`: INT8 codes [O, I] or [O, C, kh, kw].
    init(_ weight: QuantizedWeight) {
        precondition(weight.format == .int8, "Int8ExactProduct multiplies INT8 codes")
        let o = weight.shape[0], units = weight.shape[1]
        let taps = weight.shape.dropFirst(2).reduce(1, *)
        let depth = units * taps
        precondition(taps * 128 <= Self.chunkWeightBound, "a kernel of \(taps) taps per channel is too large for one chunk")
        outputs = o
        scales = (0..<o).map { weight.scales.count == 1 ? weight.scales[0] : weight.scales[$0] }
        // Σ |code| per (output channel, reduction unit); then greedy chunks over the units.
        var unitSums = [Int](repeating: 0, count: o * units)
        weight.codes.withUnsafeBufferPointer { codes in
            for n in 0..<o {
                for u in 0..<units {
                    var sum = 0
                    for t in 0..<taps { sum += abs(Int(Int8(bitPattern: codes[n * depth + u * taps + t]))) }
                    unitSums[n * units + u] = sum
                }
            }
        }
        var chunks: [Range<Int>] = []
        var running = [Int](repeating: 0, count: o), start = 0
        for u in 0..<units {
            if (0..<o).contains(where: { running[$0] + unitSums[$0 * units + u] > Self.chunkWeightBound }) {
                chunks.append(start..<u)
                start = u
                for n in 0..<o { running[n] = 0 }
            }
            for n in 0..<o { running[n] += unitSums[n * units + u] }
        }
        chunks.append(start..<units)
        self.chunks = chunks
        weights = chunks.map { range in
            var shape = weight.shape
            shape[1] = range.count
            let width = range.count * taps
            return Tensor(shape: shape) { out in
                weight.codes.withUnsafeBufferPointer { codes in
                    for n in 0..<o {
                        let source = codes.baseAddress! + n * depth + range.lowerBound * taps
                        for i in 0..<width { out[n * width + i] = Float(Int8(bitPattern: source[i])) }
                    }
                }
            }
        }
    }

    /// Linear: codes [..., I] (integers as Float), one activation scale per row → [..., O].
    func linear(codes: Tensor, rowScales: [Float], bias: Tensor?) -> Tensor {
        let k = codes.shape.last!, rows = codes.count / max(k, 1)
        precondition(rowScales.count == rows, "one activation scale per row")
        let sums = exactSums(rows: rows) { chunk, range in
            CPUKernels.linear(range.count == k ? codes : Self.columns(codes, range), weight: weights[chunk], bias: nil)
        }
        var shape = codes.shape
        shape[shape.count - 1] = outputs
        let b = bias?.scalars
        return Tensor(shape: shape) { out in
            for r in 0..<rows {
                let s = rowScales[r]
                for n in 0..<outputs {
                    let i = r * outputs + n
                    out[i] = sums[i] * (s * scales[n])
                    if let b { out[i] += b[n] }
                }
            }
        }
    }

    /// Conv2d: codes NCHW (integers as Float), one activation scale per sample → NCHW.
    func conv2d(codes: Tensor, sampleScales: [Float], bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        let n = codes.shape[0], c = codes.shape[1]
        precondition(sampleScales.count == n, "one activation scale per sample")
        var outputShape: [Int] = []
        let sums = exactSums(rows: n) { chunk, range in
            let y = CPUKernels.conv2d(range.count == c ? codes : Self.channels(codes, range), weight: weights[chunk], bias: nil,
                                      stride: stride, padding: padding)
            outputShape = y.shape
            return y
        }
        let plane = outputShape[2] * outputShape[3], b = bias?.scalars
        return Tensor(shape: outputShape) { out in
            for image in 0..<n {
                let s = sampleScales[image]
                for o in 0..<outputs {
                    let w = s * scales[o], base = (image * outputs + o) * plane
                    if let b {
                        let add = b[o]
                        for p in 0..<plane { out[base + p] = sums[base + p] * w + add }
                    } else {
                        for p in 0..<plane { out[base + p] = sums[base + p] * w }
                    }
                }
            }
        }
    }

    /// Float(exact Σ) of every output: one chunk's FP32 result as it is (its sums are exact integers), several
    /// chunks added in Double and rounded to Float once.
    private func exactSums(rows: Int, _ chunk: (Int, Range<Int>) -> Tensor) -> [Float] {
        if chunks.count == 1 { return chunk(0, chunks[0]).scalars }
        var total: [Double] = []
        for (index, range) in chunks.enumerated() {
            let part = chunk(index, range)
            if total.isEmpty { total = [Double](repeating: 0, count: part.count) }
            part.scalars.withUnsafeBufferPointer { p in
                for i in 0..<p.count { total[i] += Double(p[i]) }
            }
        }
        return total.map { Float($0) }
    }

    /// Columns `range` of the rows of x [..., K].
    private static func columns(_ x: Tensor, _ range: Range<Int>) -> Tensor {
        let k = x.shape.last!, rows = x.count / max(k, 1), width = range.count
        var shape = x.shape
        shape[shape.count - 1] = width
        return Tensor(shape: shape) { out in
            x.scalars.withUnsafeBufferPointer { p in
                for r in 0..<rows {
                    for j in 0..<width { out[r * width + j] = p[r * k + range.lowerBound + j] }
                }
            }
        }
    }

    /// Channels `range` of NCHW x.
    private static func channels(_ x: Tensor, _ range: Range<Int>) -> Tensor {
        let n = x.shape[0], c = x.shape[1], plane = x.count / max(n * c, 1), width = range.count * plane
        var shape = x.shape
        shape[1] = range.count
        return Tensor(shape: shape) { out in
            x.scalars.withUnsafeBufferPointer { p in
                for b in 0..<n {
                    let source = p.baseAddress! + (b * c + range.lowerBound) * plane
                    for i in 0..<width { out[b * width + i] = source[i] }
                }
            }
        }
    }
}
