extension CPUKernels {
    /// `conv2d` with the weight packed once for the SGEMM (`PackedGemmWeight`, role `.convolutionA`): the same
    /// per-image GEMMs, with A read from the pack instead of packed on every call.
    static func conv2d(_ x: Tensor, weight: PackedGemmWeight, bias: Tensor?, stride: Int = 1, padding: Int = 0) -> Tensor {
        precondition(weight.role == .convolutionA && weight.shape.count == 4, "conv2d: weight \(weight.shape) is not a packed convolution weight")
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == c, "conv2d: weight \(weight.shape) does not match input channels \(c)")
        precondition(weight.kernel == CPUFloatKernel.active, "conv2d: weight packed for \(weight.kernel.rawValue), not the active kernel")
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
                            Gemm.multiply(kernel: weight.kernel, m: o, n: hw, k: c, a: .prepacked(weight.pointer), b: image, ldb: hw,
                                          bLayout: .rowMajor, c: dst, ldc: hw, bias: gemmBias)
                        } else {
                            let geometry = Im2colPacking(image: image, height: h, width: w, kernelHeight: kh, kernelWidth: kw,
                                                         stride: stride, padding: padding, outputWidth: ow)
                            Gemm.multiply(kernel: weight.kernel, m: o, n: hw, k: ck, a: .prepacked(weight.pointer), b: image, ldb: 0,
                                          bLayout: .packed(geometry.pack), c: dst, ldc: hw, bias: gemmBias)
                        }
                    }
                }
            }
        }
    }
}

extension WinogradConvolution {
    /// Whether `CPUKernels.conv2d(…, algorithm: .fastest)` runs Winograd for these shapes (the guard of `conv2d`'s
    /// `.fastest` case), so a `Conv2d` layer knows whether it needs its plain weight or its packed one.
    static func runs(input: [Int], weight: [Int], stride: Int, padding: Int) -> Bool {
        guard input.count == 4, weight.count == 4, weight[2] == 3, weight[3] == 3, stride == 1, padding == 1,
              !input.contains(0), !weight.contains(0) else { return false }
        switch mode {
        case .always: return true
        case .never: return false
        case .automatic: return isFaster(batch: input[0], channels: input[1], outputs: weight[0], height: input[2], width: input[3])
        }
    }
}
