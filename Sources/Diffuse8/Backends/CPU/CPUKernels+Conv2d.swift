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
/// output pixel (j / outputWidth, j mod outputWidth); the value is the input pixel it reads. The image is the
/// zero-padded copy `withPaddedImage` makes, so every tap is inside it.
struct Im2colPacking: @unchecked Sendable {
    let image: UnsafePointer<Float>
    let height: Int, width: Int, kernelHeight: Int, kernelWidth: Int, stride: Int, outputWidth: Int
    /// NR of the kernel the product runs with (`.packed` B runs on the active kernel).
    let nr = Gemm.nr

    private init(image: UnsafePointer<Float>, height: Int, width: Int, kernelHeight: Int, kernelWidth: Int, stride: Int,
                 outputWidth: Int) {
        self.image = image
        self.height = height
        self.width = width
        self.kernelHeight = kernelHeight
        self.kernelWidth = kernelWidth
        self.stride = stride
        self.outputWidth = outputWidth
    }

    /// Calls `body` with the packing of `image` ([C, H, W]) for a convolution with `padding`, made over a zero-padded
    /// copy of the image ([C, H + 2p, W + 2p]): the copy's border is the padding's zeros, so every tap of a sliver
    /// within one output row reads one in-bounds run, which `pack` copies whole.
    static func withPaddedImage<R>(_ image: UnsafePointer<Float>, channels: Int, height: Int, width: Int, kernelHeight: Int,
                                   kernelWidth: Int, stride: Int, padding: Int, outputWidth: Int,
                                   _ body: (Im2colPacking) -> R) -> R {
        guard padding > 0 else {
            return body(Im2colPacking(image: image, height: height, width: width, kernelHeight: kernelHeight, kernelWidth: kernelWidth,
                                      stride: stride, outputWidth: outputWidth))
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
                                      kernelWidth: kernelWidth, stride: stride, outputWidth: outputWidth))
        }
    }

    /// Rows p0..<p0 + depth and columns j0..<j0 + columns of the column matrix as slivers of NR columns (zeros past
    /// `columns` in the last). A sliver's columns fall into runs, one per output row it touches; each run reads one
    /// (strided) stretch of an input row for every tap. The runs are found once per sliver, not once per row.
    func pack(_ p0: Int, _ depth: Int, _ j0: Int, _ columns: Int, _ out: UnsafeMutablePointer<Float>) {
        let slivers = (columns + nr - 1) / nr
        let taps = kernelHeight * kernelWidth, plane = height * width
        // Run r: columns runStart[r]..<runStart[r + 1] of the sliver, reading from offset runSource[r] of a tap's plane.
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * nr + 1) { scratch in
            let runStart = scratch.baseAddress!, runSource = runStart + nr + 1
            for s in 0..<slivers {
                let dst = out + s * nr * depth
                let first = j0 + s * nr
                let valid = min(nr, columns - s * nr)
                var runs = 0, j = 0
                var oy = first / outputWidth, ox = first % outputWidth
                while j < valid {
                    runStart[runs] = j
                    runSource[runs] = oy * stride * width + ox * stride
                    runs += 1
                    j += min(valid - j, outputWidth - ox)
                    oy += 1
                    ox = 0
                }
                runStart[runs] = valid
                var channel = p0 / taps, tap = p0 % taps
                for p in 0..<depth {
                    let tapOffset = channel * plane + (tap / kernelWidth) * width + tap % kernelWidth
                    let d = dst + p * nr
                    for r in 0..<runs {
                        let start = runStart[r], count = runStart[r + 1] - start
                        let src = image + tapOffset + runSource[r]
                        if stride == 1 {
                            GemmPacking.copyFloats(src, d + start, count: count)
                        } else {
                            for t in 0..<count { d[start + t] = src[t * stride] }
                        }
                    }
                    if valid < nr { (d + valid).update(repeating: 0, count: nr - valid) }
                    tap += 1
                    if tap == taps { tap = 0; channel += 1 }
                }
            }
        }
    }
}
