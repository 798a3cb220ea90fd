extension CPUKernels {
    /// `torch.nn.functional.conv2d` on NCHW input, weight [O, C, kh, kw], symmetric zero padding.
    ///
    /// Computed per image as one GEMM, out[O, H'·W'] = W[O, C·kh·kw] · columns[C·kh·kw, H'·W'], with the
    /// bias added when C is first written. A 1×1 stride-1 convolution reads the image itself as B
    /// ([C, H·W] row-major); every other shape packs B straight from the image (implicit im2col,
    /// `Im2colPacking`), so the column matrix is never materialised. `algorithm` may let a 3×3 stride-1 convolution
    /// run as Winograd F(4×4, 3×3) instead (`CPUKernels+Winograd.swift`).
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0,
                              algorithm: Conv2dAlgorithm = .im2col) -> Tensor {
        let c = x.shape[1]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == c, "conv2d: weight \(weight.shape) does not match input channels \(c)")
        if let y = WinogradConvolution.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, algorithm: algorithm) { return y }
        return weight.scalars.withUnsafeBufferPointer { wp in
            im2colConvolution(x, outputs: o, kernelHeight: kh, kernelWidth: kw, bias: bias, stride: stride, padding: padding,
                              kernel: CPUFloatKernel.active, weight: .matrix(wp.baseAddress!, lda: c * kh * kw))
        }
    }

    /// The per-image GEMMs of `conv2d`, out[O, H'·W'] = A · columns, with the weight `a` ([O, C·kh·kw], plain or packed
    /// for `kernel`) as the A operand.
    static func im2colConvolution(_ x: Tensor, outputs o: Int, kernelHeight kh: Int, kernelWidth kw: Int, bias: Tensor?,
                                  stride: Int, padding: Int, kernel: CPUFloatKernel, weight a: Gemm.ASource) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let oh = (h + 2 * padding - kh) / stride + 1
        let ow = (w + 2 * padding - kw) / stride + 1
        let ck = c * kh * kw, hw = oh * ow
        return Tensor(shape: [n, o, oh, ow]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                withOptionalPointer(bias?.scalars) { bp in
                    let gemmBias: Gemm.Bias = bp.map { .perRow($0) } ?? .none
                    let isPointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0
                    for b in 0..<n {
                        let image = xp.baseAddress! + b * c * h * w
                        let dst = out.baseAddress! + b * o * hw
                        if isPointwise {
                            Gemm.multiply(kernel: kernel, m: o, n: hw, k: c, a: a, b: image, ldb: hw,
                                          bLayout: .rowMajor, c: dst, ldc: hw, bias: gemmBias)
                        } else {
                            Im2colPacking.withPaddedImage(image, channels: c, height: h, width: w, kernelHeight: kh, kernelWidth: kw,
                                                          stride: stride, padding: padding, outputWidth: ow) { geometry in
                                Gemm.multiply(kernel: kernel, m: o, n: hw, k: ck, a: a, b: image, ldb: 0,
                                              bLayout: .packed(geometry.pack), c: dst, ldc: hw, bias: gemmBias)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Calls `body` with a pointer to the array's storage, or nil.
    @inline(__always)
    static func withOptionalPointer<R>(_ array: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let array else { return body(nil) }
        return array.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// Packs slices of the im2col matrix of one NCHW image straight into GEMM B slivers.
/// Row q of the column matrix is (channel, ky, kx) = (q / (kh·kw), q / kw mod kh, q mod kw); column j is
/// output pixel (j / outputWidth, j mod outputWidth); the value is the input pixel it reads, or 0 in
/// the padding.
struct Im2colPacking: @unchecked Sendable {
    let image: UnsafePointer<Float>
    let height: Int, width: Int, kernelHeight: Int, kernelWidth: Int, stride: Int, padding: Int, outputWidth: Int
    /// NR of the kernel the product runs with (`.packed` B runs on the active kernel).
    let nr = Gemm.nr

    /// Calls `body` with the packing of `image` ([C, H, W]) for a convolution with `padding`, made over a zero-padded
    /// copy of the image ([C, H + 2p, W + 2p]) without padding: the same values (the copy's border is the padding's
    /// zeros), but every tap of a sliver within one output row reads one in-bounds run, the copy `packRun` does
    /// fastest. Without it the taps that reach into the padding, two thirds of a 3×3 kernel's at a 16-wide output,
    /// take the per-element path.
    static func withPaddedImage<R>(_ image: UnsafePointer<Float>, channels: Int, height: Int, width: Int, kernelHeight: Int,
                                   kernelWidth: Int, stride: Int, padding: Int, outputWidth: Int,
                                   _ body: (Im2colPacking) -> R) -> R {
        guard padding > 0 else {
            return body(Im2colPacking(image: image, height: height, width: width, kernelHeight: kernelHeight, kernelWidth: kernelWidth,
                                      stride: stride, padding: 0, outputWidth: outputWidth))
        }
        let paddedHeight = height + 2 * padding, paddedWidth = width + 2 * padding
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: channels * paddedHeight * paddedWidth) { buffer in
            let base = buffer.baseAddress!
            for c in 0..<channels {
                let plane = base + c * paddedHeight * paddedWidth
                plane.update(repeating: 0, count: padding * paddedWidth)
                for y in 0..<height {
                    let row = plane + (y + padding) * paddedWidth
                    row.update(repeating: 0, count: padding)
                    (row + padding).update(from: image + (c * height + y) * width, count: width)
                    (row + padding + width).update(repeating: 0, count: padding)
                }
                (plane + (padding + height) * paddedWidth).update(repeating: 0, count: padding * paddedWidth)
            }
            return body(Im2colPacking(image: base, height: paddedHeight, width: paddedWidth, kernelHeight: kernelHeight,
                                      kernelWidth: kernelWidth, stride: stride, padding: 0, outputWidth: outputWidth))
        }
    }

    func pack(_ p0: Int, _ depth: Int, _ j0: Int, _ columns: Int, _ out: UnsafeMutablePointer<Float>) {
        let slivers = (columns + nr - 1) / nr
        let taps = kernelHeight * kernelWidth
        for s in 0..<slivers {
            let dst = out + s * nr * depth
            let first = j0 + s * nr
            let valid = min(nr, columns - s * nr)
            let oy = first / outputWidth, ox0 = first % outputWidth
            if ox0 + valid <= outputWidth {
                // The sliver lies in one output row: each tap reads one (strided) run of an input row.
                var q = p0
                var channel = q / taps, tap = q % taps
                for p in 0..<depth {
                    let ky = tap / kernelWidth, kx = tap % kernelWidth
                    packRun(channel: channel, iy: oy * stride - padding + ky, ix0: ox0 * stride - padding + kx,
                            count: valid, into: dst + p * nr)
                    q += 1; tap += 1
                    if tap == taps { tap = 0; channel += 1 }
                }
            } else {
                // The sliver spans several output rows (small outputs, wide tiles): one run per piece of a row.
                var q = p0
                var channel = q / taps, tap = q % taps
                for p in 0..<depth {
                    let ky = tap / kernelWidth, kx = tap % kernelWidth
                    let d = dst + p * nr
                    var j = 0
                    while j < valid {
                        let y = (first + j) / outputWidth, x = (first + j) % outputWidth
                        let count = min(valid - j, outputWidth - x)
                        packSegment(channel: channel, iy: y * stride - padding + ky, ix0: x * stride - padding + kx,
                                    count: count, into: d + j)
                        j += count
                    }
                    if valid < nr { (d + valid).update(repeating: 0, count: nr - valid) }
                    q += 1; tap += 1
                    if tap == taps { tap = 0; channel += 1 }
                }
            }
        }
    }

    /// d[j] = image[channel, iy, ix0 + j·stride] for j < count (0 outside the image); writes exactly `count`.
    @inline(__always)
    private func packSegment(channel: Int, iy: Int, ix0: Int, count: Int, into d: UnsafeMutablePointer<Float>) {
        guard iy >= 0 && iy < height else {
            d.update(repeating: 0, count: count)
            return
        }
        let row = image + (channel * height + iy) * width
        if stride == 1 {
            let lo = min(count, max(0, -ix0)), hi = max(lo, min(count, width - ix0))
            if lo > 0 { d.update(repeating: 0, count: lo) }
            GemmPacking.copyFloats(row + ix0 + lo, d + lo, count: hi - lo)
            if hi < count { (d + hi).update(repeating: 0, count: count - hi) }
            return
        }
        for j in 0..<count {
            let ix = ix0 + j * stride
            d[j] = (ix >= 0 && ix < width) ? row[ix] : 0
        }
    }

    /// d[j] = image[channel, iy, ix0 + j·stride] for j < count (0 outside the image), zero up to NR.
    @inline(__always)
    private func packRun(channel: Int, iy: Int, ix0: Int, count: Int, into d: UnsafeMutablePointer<Float>) {
        if stride == 1 && count == nr && iy >= 0 && iy < height && ix0 >= 0 && ix0 + nr <= width {
            GemmPacking.copyRun(image + (channel * height + iy) * width + ix0, d, count: nr)
            return
        }
        packSegment(channel: channel, iy: iy, ix0: ix0, count: count, into: d)
        if count < nr { (d + count).update(repeating: 0, count: nr - count) }
    }
}
