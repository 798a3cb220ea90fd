extension CPUKernels {
    /// `torch.nn.functional.conv2d` on NCHW input, weight [O, C, kh, kw], symmetric zero padding.
    /// Implemented as im2col ([H'·W', C·kh·kw] per image) followed by a GEMM.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        precondition(weight.shape[1] == c, "conv2d: weight \(weight.shape) does not match input channels \(c)")
        let oh = (h + 2 * padding - kh) / stride + 1
        let ow = (w + 2 * padding - kw) / stride + 1
        let ck = c * kh * kw, hw = oh * ow
        return Tensor(shape: [n, o, oh, ow]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                weight.scalars.withUnsafeBufferPointer { wp in
                    let isPointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0
                    var columns = [Float](repeating: 0, count: isPointwise ? 0 : hw * ck)
                    for b in 0..<n {
                        let image = xp.baseAddress! + b * c * h * w
                        let dst = out.baseAddress! + b * o * hw
                        if isPointwise {
                            // [O, C] · [C, HW]: transpose the image once so both operands run along C.
                            var transposed = [Float](repeating: 0, count: hw * c)
                            for ch in 0..<c { for p in 0..<hw { transposed[p * c + ch] = image[ch * hw + p] } }
                            transposed.withUnsafeBufferPointer {
                                Gemm.multiplyTransposedB(a: wp.baseAddress!, b: $0.baseAddress!, c: dst, m: o, n: hw, k: c)
                            }
                        } else {
                            columns.withUnsafeMutableBufferPointer { cols in
                                parallelFor(oh) { rows in
                                    for oy in rows { for ox in 0..<ow {
                                        let row = cols.baseAddress! + (oy * ow + ox) * ck
                                        var idx = 0
                                        for ch in 0..<c { for ky in 0..<kh { for kx in 0..<kw {
                                            let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                                            row[idx] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? image[(ch * h + iy) * w + ix] : 0
                                            idx += 1
                                        } } }
                                    } }
                                }
                                Gemm.multiplyTransposedB(a: wp.baseAddress!, b: cols.baseAddress!, c: dst, m: o, n: hw, k: ck)
                            }
                        }
                        if let bias {
                            for oc in 0..<o {
                                let v = bias.scalars[oc]
                                for p in 0..<hw { dst[oc * hw + p] += v }
                            }
                        }
                    }
                }
            }
        }
    }
}
