import Diffuse8
extension CUDASelfTest {
    /// The kernels `CUDABackend` adds: GEMM with residual (β = 1), strided (fused QKV) attention, the fused
    /// element-wise kernels of `CUDAKernels+Fused` and the model ops of `CUDAKernels+ModelOps`, each against its
    /// composition of `CPUKernels` (or the CPU quantization simulation).
    typealias FusedCase = (name: String, shape: String, threshold: Double,
                           body: (inout SelfTestRandom) throws -> (gpu: CUDATensor, cpu: Tensor))

    static func fusedCases(_ kernels: CUDAKernels) -> [FusedCase] {
        let context = kernels.context
        var cases: [FusedCase] = []
        func check(_ name: String, _ shape: String, _ threshold: Double,
                   _ body: @escaping (inout SelfTestRandom) throws -> (gpu: CUDATensor, cpu: Tensor)) {
            cases.append((name, shape, threshold, body))
        }
        func pair(_ shape: [Int], _ r: inout SelfTestRandom, _ scale: Float) throws -> (CUDATensor, Tensor) {
            let host = r.normalHalfRounded(shape, scale: scale)
            return (try kernels.upload(host), host)
        }
        check("linear+bias+residual", "[2,77,320]·[640,320]ᵀ", 1e-3) { r in
            let (x, xh) = try pair([2, 77, 320], &r, 1), (w, wh) = try pair([640, 320], &r, 0.05)
            let (b, bh) = try pair([640], &r, 1), (res, resh) = try pair([2, 77, 640], &r, 1)
            return (try kernels.linear(x, weight: w, bias: b, residual: res),
                    CPUKernels.add(CPUKernels.linear(xh, weight: wh, bias: bh), resh))
        }
        check("attention fused QKV d=40", "B2 H8 L100 (stride 3C)", 2e-3) { r in
            let (qkv, host) = try pair([2, 100, 960], &r, 1)
            func part(_ i: Int) -> Tensor {
                Tensor(shape: [2, 100, 320]) { out in
                    for row in 0..<200 { for c in 0..<320 { out[row * 320 + c] = host.scalars[row * 960 + i * 320 + c] } }
                }
            }
            let y = try withExtendedLifetime(qkv) {
                try kernels.attention(query: qkv.address, queryStride: 960, key: qkv.address + 640, value: qkv.address + 1280,
                                      keyValueStride: 960, batch: 2, queries: 100, keys: 100, channels: 320, heads: 8)
            }
            return (y, CPUKernels.attention(query: part(0), key: part(1), value: part(2), heads: 8))
        }
        check("addChannelVector", "[2,64,9,9] + v[2,stride 100]", 1e-3) { r in
            let (x, xh) = try pair([2, 64, 9, 9], &r, 1), (v, vh) = try pair([2, 100], &r, 1)
            let slice = Tensor(shape: [2, 64]) { out in for n in 0..<2 { for c in 0..<64 { out[n * 64 + c] = vh.scalars[n * 100 + 30 + c] } } }
            return (try kernels.addChannelVector(x, v, offset: 30, stride: 100), CPUKernels.addChannelBias(xh, slice))
        }
        check("biasResidual", "[2,64,9,9] scale 0.5", 1e-3) { r in
            let (x, xh) = try pair([2, 64, 9, 9], &r, 1), (b, bh) = try pair([64], &r, 1), (res, resh) = try pair([2, 64, 9, 9], &r, 1)
            let biased = Tensor(shape: xh.shape) { out in for i in 0..<xh.scalars.count { out[i] = xh.scalars[i] + bh.scalars[(i / 81) % 64] } }
            return (try kernels.biasResidual(x, bias: b, residual: res, scale: 0.5), CPUKernels.scale(CPUKernels.add(resh, biased), 0.5))
        }
        // The transposing epilogues of a resnet's 8-bit convolutions: its time embedding, and its output with and
        // without the folded bias (scale 0.5: diffusers' output_scale_factor 2). Odd token counts take the 32×32 kernel,
        // even ones (and an even channel count) in a grid of two or more blocks per multiprocessor the paired 64×64
        // one, here over partial tiles.
        for (h, w, c) in [(5, 7, 48), (96, 99, 160)] {
            let hw = h * w, shapes = "[2,\(hw),\(c)] → [2,\(c),\(h),\(w)]"
            check("tokensToChannelsAdding", shapes, 1e-3) { r in
                let (t, th) = try pair([2, hw, c], &r, 1), (res, resh) = try pair([2, c, h, w], &r, 1)
                return (try kernels.tokensToChannelsAdding(t, residual: res),
                        CPUKernels.add(CPUKernels.tokensToChannels(th, height: h, width: w), resh))
            }
            check("tokensToChannels + channel vector", shapes + " + v[2,stride \(c + 52)]", 1e-3) { r in
                let (t, th) = try pair([2, hw, c], &r, 1), (v, vh) = try pair([2, c + 52], &r, 1)
                let slice = Tensor(shape: [2, c]) { out in
                    for n in 0..<2 { for k in 0..<c { out[n * c + k] = vh.scalars[n * (c + 52) + 30 + k] } }
                }
                return (try kernels.tokensToChannels(t, height: h, width: w, .addingChannelVector(v, offset: 30)),
                        CPUKernels.addChannelBias(CPUKernels.tokensToChannels(th, height: h, width: w), slice))
            }
            for withBias in [true, false] {
                check("tokensToChannels + resnet output\(withBias ? " + bias" : "")", shapes + " scale 0.5", 1e-3) { r in
                    let (t, th) = try pair([2, hw, c], &r, 1), (b, bh) = try pair([c], &r, 1), (res, resh) = try pair([2, c, h, w], &r, 1)
                    let tokens = CPUKernels.tokensToChannels(th, height: h, width: w)
                    let biased = withBias
                        ? Tensor(shape: tokens.shape) { out in for i in 0..<tokens.scalars.count { out[i] = tokens.scalars[i] + bh.scalars[(i / hw) % c] } }
                        : tokens
                    return (try kernels.tokensToChannels(t, height: h, width: w, .addingResidual(res, bias: withBias ? b : nil, scale: 0.5)),
                            CPUKernels.scale(CPUKernels.add(resh, biased), 0.5))
                }
            }
        }
        check("affine (center_input_sample)", "[2,4,9,9] 2x-1", 1e-3) { r in
            let (x, xh) = try pair([2, 4, 9, 9], &r, 1)
            return (try kernels.affine(x, scale: 2, shift: -1), CPUKernels.map(xh) { 2 * $0 - 1 })
        }
        check("resizeNearest", "[2,8,5,7] → 11×13", 1e-3) { r in
            let (x, xh) = try pair([2, 8, 5, 7], &r, 1)
            return (try kernels.resizeNearest(x, height: 11, width: 13), CPUKernels.resizeNearest(xh, height: 11, width: 13))
        }
        check("padRightBottom", "[2,8,5,7] → [2,8,6,8]", 1e-3) { r in
            let (x, xh) = try pair([2, 8, 5, 7], &r, 1)
            return (try kernels.padRightBottom(x), CPUKernels.pad(xh, left: 0, right: 1, top: 0, bottom: 1))
        }
        // The logits are rounded to FP16 before the FP8 rounding of the probabilities (FP32 on the CPU), so a
        // probability within that rounding of an FP8 step lands one step (up to 6%) away: a looser bar than 2e-3.
        check("attention FP8 probabilities (level 4)", "B2 H5 Lq96 Lk77 d=64", 2e-2) { r in
            let (q, qh) = try pair([2, 96, 320], &r, 1), (k, kh) = try pair([2, 77, 320], &r, 1), (v, vh) = try pair([2, 77, 320], &r, 1)
            let y = try withExtendedLifetime((q, k, v)) {
                try kernels.gemmAttention(query: q.address, queryStride: 320, key: k.address, value: v.address, keyValueStride: 320,
                                          batch: 2, queries: 96, keys: 77, channels: 320, heads: 5, fp8ProbabilityAmax: 1)
            }
            return (y, FP8AttentionSimulation.attention(query: qh, key: kh, value: vh, heads: 5))
        }
        check("attention FP8 probabilities amax 0.25 (level 4, GEMM path)", "B2 H5 Lq96 Lk77 d=64", 2e-2) { r in
            let (q, qh) = try pair([2, 96, 320], &r, 3), (k, kh) = try pair([2, 77, 320], &r, 1), (v, vh) = try pair([2, 77, 320], &r, 1)
            let y = try withExtendedLifetime((q, k, v)) {
                try kernels.gemmAttention(query: q.address, queryStride: 320, key: k.address, value: v.address, keyValueStride: 320,
                                          batch: 2, queries: 96, keys: 77, channels: 320, heads: 5, fp8ProbabilityAmax: 0.25)
            }
            return (y, FP8AttentionSimulation.attention(query: qh, key: kh, value: vh, heads: 5, probabilityAmax: 0.25))
        }
        // Simulated 8-bit activations against `QuantizedLayer.quantizeActivation` (the CPU definition).
        for format in QuantizedFormat.allCases {
            check("fakeQuantize \(format) static+smooth", "[2,77,320] amax 2.5", 1e-3) { r in
                let (x, xh) = try pair([2, 77, 320], &r, 1)
                let smoothing = (0..<320).map { 0.5 + Float($0 % 7) * 0.25 }
                let s = try context.upload(Tensor(shape: [320], scalars: smoothing), dtype: .float32)
                return (try kernels.fakeQuantize(x, format: format, amax: 2.5, smoothing: s, groupSize: 320),
                        QuantizedLayer.quantizeActivation(xh, kind: .linear, format: format, amax: 2.5, smoothing: smoothing))
            }
            check("fakeQuantize \(format) dynamic rows", "[2,77,320] per token", 1e-3) { r in
                let (x, xh) = try pair([2, 77, 320], &r, 1)
                return (try kernels.fakeQuantize(x, format: format, amax: nil, smoothing: nil, groupSize: 320),
                        QuantizedLayer.quantizeActivation(xh, kind: .linear, format: format, amax: nil, smoothing: nil))
            }
            check("fakeQuantize \(format) dynamic samples", "[2,64,17,17] per sample", 1e-3) { r in
                let (x, xh) = try pair([2, 64, 17, 17], &r, 1)
                return (try kernels.fakeQuantize(x, format: format, amax: nil, smoothing: nil, groupSize: 64 * 17 * 17),
                        QuantizedLayer.quantizeActivation(xh, kind: .conv2d, format: format, amax: nil, smoothing: nil))
            }
        }
        return cases
    }
}
