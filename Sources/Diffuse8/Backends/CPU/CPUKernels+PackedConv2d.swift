extension CPUKernels {
    /// `conv2d` with the weight packed once for the SGEMM (`PackedGemmWeight`, role `.convolutionA`): the same
    /// per-image GEMMs, with A read from the pack instead of packed on every call.
    static func conv2d(_ x: Tensor, weight: PackedGemmWeight, bias: Tensor?, stride: Int = 1, padding: Int = 0) -> Tensor {
        precondition(weight.role == .convolutionA && weight.shape.count == 4, "conv2d: weight \(weight.shape) is not a packed convolution weight")
        let c = x.shape[1]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == c, "conv2d: weight \(weight.shape) does not match input channels \(c)")
        precondition(weight.kernel == CPUFloatKernel.active, "conv2d: weight packed for \(weight.kernel.rawValue), not the active kernel")
        return withExtendedLifetime(weight) {
            im2colConvolution(x, outputs: o, kernelHeight: kh, kernelWidth: kw, bias: bias, stride: stride, padding: padding,
                              kernel: weight.kernel, weight: .prepacked(weight.pointer))
        }
    }
}

