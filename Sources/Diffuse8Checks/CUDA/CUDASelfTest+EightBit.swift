#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Diffuse8

extension CUDASelfTest {
    /// Real 8-bit Linear layers (`CUDAKernels.eightBitLinear`) against the CPU simulation of the same
    /// `QuantizedLayer` (dequantized weight, fake-quantized smoothed input): the codes are the same, so only the
    /// accumulation order and the 16-bit output rounding differ. The same for 8-bit convolutions
    /// (`CUDAKernels.eightBitConvolution`). Also the 16-bit fallback weight from the codes.
    /// Our attention kernel `kernel` on device copies of q [2, Lq, 320] and k, v [2, Lk, 320] (`heads` heads), as
    /// `CUDAKernels.attention(query:queryStride:…)` runs it.
    private static func attention(_ kernels: CUDAKernels, _ kernel: CUDAKernels.AttentionKernel, query qh: Tensor, key kh: Tensor,
                                  value vh: Tensor, heads: Int, fp8ProbabilityAmax: Float?,
                                  writingCodesFor reader: CUDAEightBitLinear? = nil) throws -> CUDATensor {
        let q = try kernels.upload(qh), k = try kernels.upload(kh), v = try kernels.upload(vh)
        let previous = kernels.attentionKernel
        kernels.attentionKernel = kernel
        defer { kernels.attentionKernel = previous }
        return try withExtendedLifetime((q, k, v)) {
            try kernels.attention(query: q.address, queryStride: 320, key: k.address, value: v.address, keyValueStride: 320,
                                  batch: 2, queries: qh.shape[1], keys: kh.shape[1], channels: 320, heads: heads,
                                  fp8ProbabilityAmax: fp8ProbabilityAmax, writingCodesFor: reader)
        }
    }

    /// The simulation's codes of NCHW `x` with `scale`, channels-last [n, h, w, c], as code values
    /// (`QuantizedFormat.encode`, decoded with scale 1): what a producer writing a convolution's input codes must match.
    private static func channelsLastCodeValues(_ x: Tensor, format: QuantizedFormat, scale: Float) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let plane = h * w
        return Tensor(shape: [n, h, w, c], scalars: (0..<x.count).map { i in
            let (image, p, channel) = (i / (plane * c), i / c % plane, i % c)
            return format.decode(format.encode(x.scalars[(image * c + channel) * plane + p], scale: scale), scale: 1)
        })
    }

    /// An 8-bit layer (16 outputs) that reads `values` [..., width] with SmoothQuant factors 0.5…1.5 and an input amax of
    /// 0.8 × the largest smoothed value (so that some codes saturate), and the simulation's codes of `values` for it,
    /// as code values (`QuantizedFormat.encode`, decoded with scale 1): what a producer writing its codes must match.
    private static func codeReader(_ kernels: CUDAKernels, _ r: inout SelfTestRandom, format: QuantizedFormat,
                                   reading values: Tensor) throws -> (CUDAEightBitLinear, Tensor) {
        guard let width = values.shape.last, width > 0 else { throw CUDAError.invalidArgument("codeReader: shape \(values.shape)") }
        let smoothing: [Float] = (0..<width).map { i in Float(0.5) + Float((i * 7) % 11) * Float(0.1) }
        var amax: Float = 0
        for i in 0..<values.count { amax = max(amax, abs(values.scalars[i] * smoothing[i % width])) }
        let layer = QuantizedLayer(name: "check", kind: .linear,
                                   weight: QuantizedWeight(quantizing: r.normalHalfRounded([16, width], scale: 0.05), format: format,
                                                           perChannel: format == .int8),
                                   inputAmax: 0.8 * amax, smoothing: smoothing, outputAmax: nil)
        let reader = try CUDAEightBitLinear(kernels, Linear(name: "check", weight: layer.weight.dequantized(), bias: nil), layer)
        let scale = format.scale(forAmax: 0.8 * amax)
        return (reader, Tensor(shape: values.shape, scalars: values.scalars.indices.map { i in
            format.decode(format.encode(values.scalars[i] * smoothing[i % width], scale: scale), scale: 1)
        }))
    }

    static func eightBitCases(_ kernels: CUDAKernels) -> [FusedCase] {
        let context = kernels.context
        var cases: [FusedCase] = []
        let (major, minor) = context.computeCapability
        let formats: [QuantizedFormat] = major * 10 + minor >= 89 ? [.int8, .fp8] : [.int8]
        // The fused kernel with FP8 probabilities against the simulation: FP32 logits on both sides, but a probability
        // within rounding of an FP8 step can land one step (up to 6%) away, hence 2e-2 as for the GEMM path.
        // Every kernel of ours: the simple one, the pipelined one (at its head dims) and, up to 128 keys, the short-key one.
        let fp8Kernels: (Int, Int) -> [(String, CUDAKernels.AttentionKernel)] = { d, keys in
            [("flash", .simple)] + (CUDAAttentionSource.pipelinedHeadDims.contains(d) ? [("flash pipelined", .pipelined)] : [])
                + (CUDAAttentionSource.shortKeyHeadDims.contains(d) && keys <= 128 ? [("short keys", .shortKeys)] : [])
        }
        // Up to 128 keys (cross-attention) the simple kernel makes one pass: 77 and 128 keys in one 128-key tile, 50 keys
        // of a 160-wide head in one 64-key tile.
        for (lq, lk, d) in [(256, 256, 64), (300, 77, 64), (200, 200, 40), (1024, 1024, 64), (150, 128, 80), (100, 50, 160)] {
            let heads = 320 / d
            for (label, kernel) in fp8Kernels(d, lk) {
            cases.append(("attention FP8 probabilities (\(label))", "B2 H\(heads) Lq\(lq) Lk\(lk) d=\(d)", 2e-2, { r in
                let qh = r.normalHalfRounded([2, lq, 320]), kh = r.normalHalfRounded([2, lk, 320]), vh = r.normalHalfRounded([2, lk, 320])
                let y = try attention(kernels, kernel, query: qh, key: kh, value: vh, heads: heads, fp8ProbabilityAmax: 1)
                return (y, FP8AttentionSimulation.attention(query: qh, key: kh, value: vh, heads: heads))
            }))
            }
        }
        // A calibrated probability amax below the largest probabilities: those saturate at it, the rest round on its
        // finer grid; and the largest probability itself, as calibration records it (first pass of the same kernel).
        for (lq, lk, d, amax) in [(256, 256, 64, Float(0.25)), (300, 77, 40, 0.6)] {
            let heads = 320 / d
            for (label, kernel) in fp8Kernels(d, lk) {
            cases.append(("attention FP8 probabilities amax \(amax) (\(label))", "B2 H\(heads) Lq\(lq) Lk\(lk) d=\(d)", 2e-2, { r in
                let qh = r.normalHalfRounded([2, lq, 320], scale: 3), kh = r.normalHalfRounded([2, lk, 320]), vh = r.normalHalfRounded([2, lk, 320])
                let y = try attention(kernels, kernel, query: qh, key: kh, value: vh, heads: heads, fp8ProbabilityAmax: amax)
                return (y, FP8AttentionSimulation.attention(query: qh, key: kh, value: vh, heads: heads, probabilityAmax: amax))
            }))
            }
            cases.append(("attention max probability", "B2 H\(heads) Lq\(lq) Lk\(lk) d=\(d)", 1e-3, { r in
                let qh = r.normalHalfRounded([2, lq, 320], scale: 3), kh = r.normalHalfRounded([2, lk, 320])
                let q = try kernels.upload(qh), k = try kernels.upload(kh)
                let p = try withExtendedLifetime((q, k)) {
                    try kernels.attentionProbabilityMax(query: q.address, queryStride: 320, key: k.address, keyStride: 320, batch: 2,
                                                        queries: lq, keys: lk, channels: 320, heads: heads)
                }
                guard let p else { throw CUDAError.invalidArgument("no fused kernel for d=\(d)") }
                return (try kernels.upload(Tensor(shape: [1], scalars: [p])),
                        Tensor(shape: [1], scalars: [FP8AttentionSimulation.maxProbability(query: qh, key: kh, heads: heads)]))
            }))
        }
        // cuDNN's FP8 attention as level-4 self-attention runs it: Q/K/V on their FP8 grids in one stacked [q | k | v]
        // tensor, made codes by the per-column quantize, and O as the output projection's input codes. cuDNN rounds the
        // probabilities inside its flash loop, before normalising (exp(s − m) · 448 to E4M3, O = Σ P̃·V / Σ exp(s − m)),
        // which differs from the simulation's rounding of normalised probabilities by 4.5e-2 in these codes (as a NumPy
        // model of both predicts): the reference is that flash form with the row max, so what remains is cuDNN's
        // running max per key block and O codes one rounding step apart (1.3–2e-2 in the same model). The last two need
        // more than one wave of tiles, which `cudnnFP8Attention` splits into calls.
        // Our wgmma kernel (`wgmmaFP8Attention`) rounds as cuDNN does, in one launch: the same cases at head dim 64,
        // plus a length that is no multiple of its 64-key blocks or 128-query tiles, and SDXL's 1024-token level.
        var fp8Attentions: [(name: String, run: CUDAKernels.FP8AttentionKernel, shapes: [(Int, Int, Int)])] = []
        if major >= 9 && context.hasCUDNN {
            fp8Attentions.append(("cuDNN", kernels.cudnnFP8Attention, [(256, 64, 2), (1024, 80, 2), (2048, 64, 2), (4096, 64, 1)]))
        }
        if kernels.runsWGMMAFP8Attention(headDim: 64) {
            fp8Attentions.append(("wgmma", kernels.wgmmaFP8Attention, [(256, 64, 2), (1000, 64, 2), (1024, 64, 2), (4096, 64, 1)]))
        }
        for (name, run, shapes) in fp8Attentions {
            for (lq, d, batch) in shapes {
                let heads = 320 / d, c = 320
                cases.append(("attention FP8, \(name)", "B\(batch) H\(heads) L\(lq) d=\(d), stacked QKV", 3e-2, { r in
                    let ranges: [Float] = [6, 5, 4]
                    var parts = ranges.map { range in
                        var t = r.normalHalfRounded([batch, lq, c], scale: range / 3)
                        t.scalars.withUnsafeMutableBufferPointer {
                            QuantizedFormat.fp8.fakeQuantize($0.baseAddress!, count: $0.count, scale: QuantizedFormat.fp8.scale(forAmax: range))
                        }
                        return t
                    }
                    let stack = Tensor(shape: [batch, lq, 3 * c]) { out in
                        for row in 0..<(batch * lq) { for (i, p) in parts.enumerated() { for j in 0..<c { out[row * 3 * c + i * c + j] = p.scalars[row * c + j] } } }
                    }
                    let outputScale = QuantizedFormat.fp8.scale(forAmax: 3)
                    let reference = flashRoundedAttention(query: parts[0], key: parts[1], value: parts[2], heads: heads)
                    parts = []
                    let factors = try context.upload(Tensor(shape: [3 * c], scalars: ranges.flatMap { [Float](repeating: 448 / $0, count: c) }),
                                                     dtype: .float32)
                    let scales = try FP8AttentionScales(descaleQ: ranges[0] / 448, descaleK: ranges[1] / 448, descaleV: ranges[2] / 448,
                                                        descaleP: 1 / 448, scaleP: 448, scaleO: 1 / outputScale).upload(to: context)
                    let codes = try kernels.quantize(try kernels.upload(stack), format: .fp8, scale: 1, smoothing: factors)
                    let y = try withExtendedLifetime((codes, scales)) {
                        try run(codes.address, 3 * c, codes.address + UInt64(c), codes.address + UInt64(2 * c), 3 * c, batch, lq, lq, c,
                                heads, scales)
                    }
                    // Both sides as code values (the download decodes E4M3 without its scale).
                    return (y, Tensor(shape: reference.shape, scalars: reference.scalars.map {
                        QuantizedFormat.fp8.decode(QuantizedFormat.fp8.encode($0, scale: outputScale), scale: 1)
                    }))
                }))
            }
        }
        for format in formats {
            // Shapes of SD1.5/SDXL layers too: GEGLU projections (bias, no residual), cross-attention K/V (neither). FP8's
            // deepest sums without FP32 totals (K = 1280) and with them (K = 2048). One row tile (99, 64 rows), and more
            // tiles than the card has multiprocessors in every variant (1024 × 5120), so that each block takes several.
            for (rows, k, n, residual) in [(154, 320, 640, true), (99, 64, 32, false), (512, 640, 1280, true), (64, 1280, 10240, false),
                                           (154, 2048, 1280, false), (1024, 256, 5120, true)] {
                let paths = CUDAEightBitLinear.GEMMPath.candidates(format, depth: k, wgmma: kernels.runsWarpSpecializedGEMM)
                for gemm in paths {
                    let library = " " + gemm.description(for: format)
                    cases.append(("8-bit linear\(library)", "[\(rows),\(k)]·[\(n),\(k)]ᵀ\(residual ? "+res" : "")", 1e-3, { r in
                        let xh = r.normalHalfRounded([rows, k]), wh = r.normalHalfRounded([n, k], scale: 0.05)
                        let bh = r.normalHalfRounded([n]), resh = r.normalHalfRounded([rows, n])
                        let withBias = residual || n != 1280
                        let smoothing: [Float] = (0..<k).map { i in Float(0.5) + Float((i * 7) % 11) * Float(0.15) }
                        var amax: Float = 0
                        for i in 0..<xh.count { amax = max(amax, abs(xh.scalars[i] * smoothing[i % k])) }
                        let layer = QuantizedLayer(name: "check", kind: .linear,
                                                   weight: QuantizedWeight(quantizing: wh, format: format, perChannel: format == .int8),
                                                   inputAmax: 0.8 * amax, smoothing: smoothing, outputAmax: nil)
                        let linear = Linear(name: "check", weight: layer.weight.dequantized(), bias: withBias ? bh : nil)
                        let w = try CUDAEightBitLinear(kernels, linear, layer)
                        w.forcedGEMM = gemm
                        let y = try kernels.eightBitLinear(try kernels.upload(xh), w, residual: residual ? try kernels.upload(resh) : nil)
                        if let reason = w.fallbackReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                        let reference = CPUKernels.linear(layer.quantizedInput(xh), weight: linear.weight, bias: withBias ? bh : nil)
                        return (y, residual ? CPUKernels.add(reference, resh) : reference)
                    }))
                }
            }
            // Level 4's stacked Q/K/V: three layers with their own output ranges, each output rounded to its FP8 grid
            // (in the wgmma epilogue, else by a pass after the GEMM), or written as the E4M3 codes cuDNN's FP8 attention
            // reads (448 / amax of Q, K or V per column, scale 1: in the wgmma epilogue where the GEMM is FP8, else by the
            // quantize pass after the GEMM). Against the simulation of each layer (the CPU hook), or its codes: a sum
            // within accumulation order of a step boundary can round one FP8 step away, hence 1e-2. A 64-wide stack makes
            // the 256-column tile write a partial box.
            for (rows, k, c) in [(256, 320, 320), (200, 640, 80), (130, 1280, 64)] {
                for gemm in CUDAEightBitLinear.GEMMPath.candidates(format, depth: k, wgmma: kernels.runsWarpSpecializedGEMM) {
                    for writesCodes in [false, true] {
                        let label = writesCodes ? "attention's E4M3 codes" : "FP8-rounded"
                        cases.append(("8-bit Q/K/V, \(label) \(gemm.description(for: format))", "[\(rows),\(k)]·[3×\(c),\(k)]ᵀ", 1e-2, { r in
                            let xh = r.normalHalfRounded([rows, k])
                            var amax: Float = 0
                            for v in xh.scalars { amax = max(amax, abs(v)) }
                            // one weight quantized as a whole (one FP8 scale, INT8 per channel), as stacks are, then split
                            let whole = QuantizedWeight(quantizing: r.normalHalfRounded([3 * c, k], scale: 0.05), format: format,
                                                        perChannel: format == .int8)
                            let ranges: [Float] = [1.5, 3, 0.75]
                            let layers = (0..<3).map { i -> Linear in
                                let weight = QuantizedWeight(format: format, shape: [c, k], codes: Array(whole.codes[(i * c * k)..<((i + 1) * c * k)]),
                                                             scales: whole.scales.count == 1 ? whole.scales : Array(whole.scales[(i * c)..<((i + 1) * c)]))
                                let quantized = QuantizedLayer(name: "check.\(i)", kind: .linear, weight: weight,
                                                               inputAmax: 0.8 * amax, smoothing: nil, outputAmax: ranges[i])
                                let linear = Linear(name: "check.\(i)", weight: quantized.weight.dequantized(), bias: r.normalHalfRounded([c]))
                                linear.executionHook = SimulatedQuantizationHook(quantized)
                                return linear
                            }
                            let w = try CUDAEightBitLinear(kernels, stacking: try LinearStack(layers))
                            w.forcedGEMM = gemm
                            let factors = ranges.flatMap { [Float](repeating: writesCodes ? QuantizedFormat.fp8.maxValue / $0 : 1, count: c) }
                            let readerCodes = writesCodes
                                ? try CUDAKernels.ReaderCodes(kernels, format: .fp8, factors: factors, columns: 3 * c, scale: 1) : nil
                            let y = try kernels.eightBitLinear(try kernels.upload(xh), w, residual: nil, roundsOutput: !writesCodes,
                                                               readerCodes: readerCodes)
                            if let reason = w.fallbackReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                            guard !writesCodes || y.dtype == .float8e4m3 else { throw CUDAError.invalidArgument("wrote \(y.dtype), not E4M3 codes") }
                            let parts = layers.map { $0(xh) }
                            let reference = (0..<rows).flatMap { row in
                                (0..<(3 * c)).map { j in parts[j / c].scalars[row * c + j % c] * factors[j] }
                            }
                            return (y, Tensor(shape: [rows, 3 * c], scalars: reference))
                        }))
                    }
                }
            }
            // GEGLU projections: the GEMM with GEGLU in its epilogue (each tile variant that can) and the GEMM followed by
            // the GEGLU kernel; a partial row tile and a partial column tile (n = 656 outputs); FP8 sums with FP32 totals
            // (K = 2048). 16-bit out, against the simulated layer followed by GEGLU; or handing the next layer (FF out,
            // with SmoothQuant factors) its input codes, as code values against the simulation's codes of the FP32
            // GEGLU, where a value within accumulation order of a rounding boundary may land one step away.
            for (rows, k, n) in [(154, 320, 1280), (200, 640, 656), (130, 2048, 320)] {
                let paths: [CUDAEightBitLinear.GEGLUPath] = kernels.runsWarpSpecializedGEMM
                    ? CUDAEightBitLinear.GEGLUPath.candidates(format, depth: k) : [.separate]
                for path in paths {
                    for writesCodes in [false, true] {
                        cases.append(("8-bit GEGLU projection \(format) \(path)\(writesCodes ? ", next layer's codes" : "")",
                                      "[\(rows),\(k)]·[\(2 * n),\(k)]ᵀ", writesCodes ? 1e-2 : 1e-3, { r in
                            let xh = r.normalHalfRounded([rows, k]), wh = r.normalHalfRounded([2 * n, k], scale: 0.05)
                            let bh = r.normalHalfRounded([2 * n])
                            var amax: Float = 0
                            for v in xh.scalars { amax = max(amax, abs(v)) }
                            let layer = QuantizedLayer(name: "check", kind: .linear,
                                                       weight: QuantizedWeight(quantizing: wh, format: format, perChannel: format == .int8),
                                                       inputAmax: 0.8 * amax, smoothing: nil, outputAmax: nil)
                            let linear = Linear(name: "check", weight: layer.weight.dequantized(), bias: bh)
                            let w = try CUDAEightBitLinear(kernels, linear, layer)
                            w.forcedGEGLU = path
                            let geglu = CPUKernels.geglu(CPUKernels.linear(layer.quantizedInput(xh), weight: linear.weight, bias: bh))
                            guard writesCodes else {
                                let y = try kernels.eightBitGEGLU(try kernels.upload(xh), w, reader: nil)
                                if let reason = w.fallbackReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                                return (y, geglu)
                            }
                            let smoothing: [Float] = (0..<n).map { i in Float(0.5) + Float((i * 5) % 13) * Float(0.1) }
                            var readerAmax: Float = 0
                            for i in 0..<geglu.count { readerAmax = max(readerAmax, abs(geglu.scalars[i] * smoothing[i % n])) }
                            let readerLayer = QuantizedLayer(name: "check.next", kind: .linear,
                                                             weight: QuantizedWeight(quantizing: r.normalHalfRounded([16, n], scale: 0.05),
                                                                                     format: format, perChannel: format == .int8),
                                                             inputAmax: 0.7 * readerAmax, smoothing: smoothing, outputAmax: nil)
                            let reader = try CUDAEightBitLinear(kernels, Linear(name: "check.next", weight: readerLayer.weight.dequantized(),
                                                                                bias: nil), readerLayer)
                            let y = try kernels.eightBitGEGLU(try kernels.upload(xh), w, reader: reader)
                            if let reason = w.fallbackReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                            guard y.dtype == (format == .int8 ? CUDADataType.int8 : .float8e4m3) else {
                                throw CUDAError.invalidArgument("wrote \(y.dtype), not the next layer's codes")
                            }
                            let scale = format.scale(forAmax: 0.7 * readerAmax)
                            return (y, Tensor(shape: geglu.shape, scalars: geglu.scalars.indices.map { i in
                                format.decode(format.encode(geglu.scalars[i] * smoothing[i % n], scale: scale), scale: 1)
                            }))
                        }))
                    }
                }
            }
            // Convolutions: cuDNN's 8-bit graph, and our implicit-GEMM kernel in each tile variant (stride 1), on
            // channels-last codes, per-channel (INT8) or per-tensor (FP8) weight scales. For our kernel: 96 channels (the
            // last 128-channel slice half outside), 80 outputs (a partial column tile), 20² (tiles past the image's edge).
            // And SDXL's depth: 1280 channels, K = 11 520 products per output.
            let convolutions = [(2, 320, 32, 320, 3, 1, true), (2, 64, 16, 128, 3, 2, true), (1, 32, 8, 48, 1, 1, false),
                                (2, 96, 20, 80, 3, 1, true), (1, 1280, 8, 128, 3, 1, true)]
            for (n, c, hw, o, k, stride, withBias) in convolutions {
                let ours = kernels.runsWarpSpecializedGEMM && stride == 1 ? CUDAKernels.WarpSpecializedGEMM.variants(format, depth: k * k * c) : []
                for variant in [nil] + ours.map(Optional.some) {
                    cases.append(("8-bit convolution \(format)\(variant.map { ", \($0)" } ?? ", cuDNN")",
                                  "B\(n) C\(c) \(hw)² → \(o) \(k)×\(k)/\(stride)\(withBias ? "+bias" : "")", 1e-3, { r in
                        let xh = r.normalHalfRounded([n, c, hw, hw]), wh = r.normalHalfRounded([o, c, k, k], scale: 0.05)
                        let bh = r.normalHalfRounded([o])
                        var amax: Float = 0
                        for v in xh.scalars { amax = max(amax, abs(v)) }
                        let layer = QuantizedLayer(name: "check", kind: .conv2d,
                                                   weight: QuantizedWeight(quantizing: wh, format: format, perChannel: format == .int8),
                                                   inputAmax: 0.8 * amax, smoothing: nil, outputAmax: nil)
                        let conv = Conv2d(name: "check", weight: layer.weight.dequantized(), bias: withBias ? bh : nil, stride: stride, padding: k / 2)
                        let w = try CUDAEightBitConvolution(kernels, conv, layer, withBias: withBias)
                        w.choosesFastestPath = false
                        w.forcedWGMMA = variant
                        let y = try kernels.eightBitConvolution(try kernels.upload(xh), w)
                        if let reason = w.sixteenBitReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                        return (y, CPUKernels.conv2d(layer.quantizedInput(xh), weight: conv.weight, bias: conv.bias, stride: stride, padding: k / 2))
                    }))
                }
            }
            // LayerNorm writing the next Linear layer's input codes (SmoothQuant factors applied): as code values against
            // the simulation's codes of the FP32 LayerNorm (a value within rounding of a boundary may land one step
            // away). Rows of 320, 768 and 1280 as in the UNets and text encoders, and of 2048, the kernel's widest.
            for (rows, d) in [(154, 768), (200, 320), (130, 1280), (3, 2048)] {
                cases.append(("LayerNorm → \(format) codes", "[\(rows),\(d)]", 1e-2, { r in
                    let xh = r.normalHalfRounded([rows, d], scale: 2), gamma = r.normalHalfRounded([d]), beta = r.normalHalfRounded([d])
                    let normed = CPUKernels.layerNorm(xh, weight: gamma, bias: beta, epsilon: 1e-5)
                    let (reader, expected) = try codeReader(kernels, &r, format: format, reading: normed)
                    let (gammaOnDevice, betaOnDevice) = (try kernels.upload(gamma), try kernels.upload(beta))
                    let codes = try kernels.layerNorm(try kernels.upload(xh), weight: gammaOnDevice, bias: betaOnDevice, epsilon: 1e-5,
                                                      writing: kernels.layerNormCodes(weight: gammaOnDevice, bias: betaOnDevice, for: reader))
                    guard codes.dtype == (format == .int8 ? CUDADataType.int8 : .float8e4m3), codes.shape == [rows, d] else {
                        throw CUDAError.invalidArgument("wrote \(codes.dtype) \(codes.shape), not the reader's codes")
                    }
                    return (codes, expected)
                }))
            }
            // Our attention kernels writing `to_out.0`'s input codes (SmoothQuant factors applied), with 16-bit and with FP8
            // probabilities: as code values against the simulation's codes of the FP32 attention (CPU), as for LayerNorm.
            // Cross-attention's 77 keys, self-attention's square shapes; every kernel of ours that takes the shape.
            for (lq, lk, d, fp8Probabilities) in [(300, 77, 64, false), (256, 256, 64, false), (200, 200, 40, false), (300, 77, 64, true)] {
                let heads = 320 / d
                for (label, kernel) in fp8Kernels(d, lk) {
                    let probabilities = fp8Probabilities ? "FP8" : "16-bit"
                    cases.append(("attention (\(label), \(probabilities) probabilities) → \(format) codes", "B2 H\(heads) Lq\(lq) Lk\(lk) d=\(d)", 1e-2, { r in
                        let qh = r.normalHalfRounded([2, lq, 320]), kh = r.normalHalfRounded([2, lk, 320]), vh = r.normalHalfRounded([2, lk, 320])
                        let attended = fp8Probabilities ? FP8AttentionSimulation.attention(query: qh, key: kh, value: vh, heads: heads)
                            : CPUKernels.attention(query: qh, key: kh, value: vh, heads: heads)
                        let (reader, expected) = try codeReader(kernels, &r, format: format, reading: attended)
                        let codes = try attention(kernels, kernel, query: qh, key: kh, value: vh, heads: heads,
                                                  fp8ProbabilityAmax: fp8Probabilities ? 1 : nil, writingCodesFor: reader)
                        guard codes.dtype == (format == .int8 ? CUDADataType.int8 : .float8e4m3), codes.shape == [2, lq, 320] else {
                            throw CUDAError.invalidArgument("wrote \(codes.dtype) \(codes.shape), not the reader's codes")
                        }
                        return (codes, expected)
                    }))
                }
            }
            // GroupNorm+SiLU writing an 8-bit convolution's channels-last input codes: the codes, as code values against
            // the simulation's codes of the FP32 GroupNorm (a value within rounding of a boundary may land one step
            // away); and the convolution run on them (cuDNN's graph, and our kernel where the card runs it) against
            // the simulated layer on the FP32 GroupNorm. 32 groups as in the UNets: one chunk per group (64 channels,
            // 8²), several (320, 32²), and tiles past the last pixel and channel (96 channels, 20²).
            for (n, c, hw) in [(2, 64, 8), (2, 320, 32), (1, 96, 20)] {
                let ours = kernels.runsWarpSpecializedGEMM ? CUDAKernels.WarpSpecializedGEMM.variants(format, depth: 9 * c).prefix(1) : []
                for (variant, convolves) in [(nil, false), (nil, true)] + ours.map({ (Optional.some($0), true) }) {
                    let name = convolves ? "GroupNorm+SiLU codes → 8-bit convolution \(format)\(variant.map { ", \($0)" } ?? ", cuDNN")"
                        : "GroupNorm+SiLU → channels-last \(format) codes"
                    cases.append((name, "B\(n) C\(c) \(hw)², 32 groups", convolves ? 2e-3 : 1e-2, { r in
                        let xh = r.normalHalfRounded([n, c, hw, hw], scale: 2), gamma = r.normalHalfRounded([c]), beta = r.normalHalfRounded([c])
                        let normed = CPUKernels.groupNorm(xh, groups: 32, weight: gamma, bias: beta, epsilon: 1e-5, fusedSiLU: true)
                        var amax: Float = 0
                        for v in normed.scalars { amax = max(amax, abs(v)) }
                        let wh = r.normalHalfRounded([64, c, 3, 3], scale: 0.05)
                        let layer = QuantizedLayer(name: "check", kind: .conv2d,
                                                   weight: QuantizedWeight(quantizing: wh, format: format, perChannel: format == .int8),
                                                   inputAmax: 0.8 * amax, smoothing: nil, outputAmax: nil)
                        let conv = Conv2d(name: "check", weight: layer.weight.dequantized(), bias: nil, stride: 1, padding: 1)
                        let w = try CUDAEightBitConvolution(kernels, conv, layer, withBias: false)
                        w.choosesFastestPath = false
                        w.forcedWGMMA = variant
                        let x = try kernels.upload(xh)
                        // the first call on 16-bit input chooses the path the codes are then read by
                        _ = try kernels.eightBitConvolution(try kernels.groupNorm(x, groups: 32, weight: kernels.upload(gamma), bias: kernels.upload(beta),
                                                                                  epsilon: 1e-5, fusedSiLU: true), w)
                        guard w.takesCodes(forInput: xh.shape, allowsWGMMA: true) else { throw CUDAError.invalidArgument("no 8-bit path chosen") }
                        let codes = try kernels.groupNorm(x, groups: 32, weight: kernels.upload(gamma), bias: kernels.upload(beta), epsilon: 1e-5,
                                                          fusedSiLU: true, channelsLastCodes: format, scale: w.inputScale)
                        guard codes.dtype == w.codeType, codes.shape == [n, hw, hw, c] else {
                            throw CUDAError.invalidArgument("wrote \(codes.dtype) \(codes.shape), not channels-last codes")
                        }
                        if convolves {
                            let y = try kernels.eightBitConvolution(codes, w)
                            if let reason = w.sixteenBitReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                            return (y, CPUKernels.conv2d(layer.quantizedInput(normed), weight: conv.weight, bias: nil, stride: 1, padding: 1))
                        }
                        return (codes, channelsLastCodeValues(normed, format: format, scale: w.inputScale))
                    }))
                }
            }
            // An upsampler's nearest 2× upsampling writing its 8-bit convolution's channels-last input codes: the codes,
            // as code values against the simulation's codes of the upsampled 16-bit input (the same values, so the same
            // codes), and cuDNN's convolution run on them against the simulated layer. Tiles past the last pixel and
            // channel, and a non-square image (96 channels, 10×7).
            for (n, c, h, wd) in [(2, 64, 8, 8), (1, 96, 10, 7)] {
                for convolves in [false, true] {
                    let name = convolves ? "upsampled 2× codes → 8-bit convolution \(format), cuDNN" : "upsample 2× → channels-last \(format) codes"
                    cases.append((name, "B\(n) C\(c) \(h)×\(wd) → \(2 * h)×\(2 * wd)", convolves ? 2e-3 : 1e-6, { r in
                        let xh = r.normalHalfRounded([n, c, h, wd], scale: 2)
                        let upsampled = CPUKernels.upsampleNearest2x(xh)
                        var amax: Float = 0
                        for v in xh.scalars { amax = max(amax, abs(v)) }
                        let layer = QuantizedLayer(name: "check", kind: .conv2d,
                                                   weight: QuantizedWeight(quantizing: r.normalHalfRounded([32, c, 3, 3], scale: 0.05),
                                                                           format: format, perChannel: format == .int8),
                                                   inputAmax: 0.8 * amax, smoothing: nil, outputAmax: nil)
                        let conv = Conv2d(name: "check", weight: layer.weight.dequantized(), bias: nil, stride: 1, padding: 1)
                        let w = try CUDAEightBitConvolution(kernels, conv, layer, withBias: false)
                        w.choosesFastestPath = false
                        let x = try kernels.upload(xh)
                        // the first call on 16-bit input chooses the path the codes are then read by
                        _ = try kernels.eightBitConvolution(try kernels.upsampleNearest2x(x), w)
                        guard w.takesCodes(forInput: upsampled.shape, allowsWGMMA: true) else { throw CUDAError.invalidArgument("no 8-bit path chosen") }
                        let codes = try kernels.upsampledChannelsLastCodes(x, format: format, scale: w.inputScale)
                        guard codes.dtype == w.codeType, codes.shape == [n, 2 * h, 2 * wd, c] else {
                            throw CUDAError.invalidArgument("wrote \(codes.dtype) \(codes.shape), not channels-last codes")
                        }
                        if convolves {
                            let y = try kernels.eightBitConvolution(codes, w)
                            if let reason = w.sixteenBitReason { throw CUDAError.invalidArgument("ran in 16 bit, not 8: \(reason)") }
                            return (y, CPUKernels.conv2d(layer.quantizedInput(upsampled), weight: conv.weight, bias: nil, stride: 1, padding: 1))
                        }
                        return (codes, channelsLastCodeValues(upsampled, format: format, scale: w.inputScale))
                    }))
                }
            }
            // A transformer's GroupNorm writing its 8-bit proj_in's token codes [n, h·w, c] (SmoothQuant factors
            // applied, no SiLU): as code values against the simulation's codes of the FP32 GroupNorm's tokens, as above.
            for (n, c, hw) in [(2, 320, 32), (1, 96, 20)] {
                cases.append(("GroupNorm → proj_in token \(format) codes", "B\(n) C\(c) \(hw)², 32 groups", 1e-2, { r in
                    let xh = r.normalHalfRounded([n, c, hw, hw], scale: 2), gamma = r.normalHalfRounded([c]), beta = r.normalHalfRounded([c])
                    let normed = CPUKernels.groupNorm(xh, groups: 32, weight: gamma, bias: beta, epsilon: 1e-6, fusedSiLU: false)
                    let smoothing: [Float] = (0..<c).map { i in Float(0.5) + Float((i * 7) % 11) * Float(0.1) }
                    let plane = hw * hw
                    let tokens = (0..<normed.count).map { i in
                        let (image, p, channel) = (i / (plane * c), i / c % plane, i % c)
                        return normed.scalars[(image * c + channel) * plane + p] * smoothing[channel]
                    }
                    var amax: Float = 0
                    for v in tokens { amax = max(amax, abs(v)) }
                    let layer = QuantizedLayer(name: "check", kind: .linear,
                                               weight: QuantizedWeight(quantizing: r.normalHalfRounded([16, c], scale: 0.05), format: format,
                                                                       perChannel: format == .int8),
                                               inputAmax: 0.8 * amax, smoothing: smoothing, outputAmax: nil)
                    let reader = try CUDAEightBitLinear(kernels, Linear(name: "check", weight: layer.weight.dequantized(), bias: nil), layer)
                    let factors = try kernels.context.upload(Tensor(shape: [c], scalars: smoothing), dtype: .float32)
                    let codes = try kernels.groupNorm(try kernels.upload(xh), groups: 32, weight: kernels.upload(gamma), bias: kernels.upload(beta),
                                                      epsilon: 1e-6, fusedSiLU: false, channelsLastCodes: format, scale: reader.inputScale,
                                                      factors: factors)
                    guard codes.dtype == (format == .int8 ? CUDADataType.int8 : .float8e4m3), codes.shape == [n, hw, hw, c] else {
                        throw CUDAError.invalidArgument("wrote \(codes.dtype) \(codes.shape), not the reader's codes")
                    }
                    return (codes, Tensor(shape: [n, hw, hw, c], scalars: tokens.map { format.decode(format.encode($0, scale: reader.inputScale), scale: 1) }))
                }))
            }
            // The quantize pass of a 16-bit input (SmoothQuant factors or none) as code values against the simulation's
            // codes: eight values a thread ([64, 320]), four ([5, 12]) and one ([3, 7]).
            for (rows, width, smoothed) in [(64, 320, true), (64, 320, false), (5, 12, true), (5, 12, false), (3, 7, false)] {
                cases.append(("quantize pass → \(format) codes\(smoothed ? ", SmoothQuant factors" : "")", "[\(rows),\(width)]", 1e-6, { r in
                    let xh = r.normalHalfRounded([rows, width], scale: 2)
                    let factors: [Float] = (0..<width).map { i in smoothed ? Float(0.5) + Float((i * 7) % 11) * Float(0.1) : 1 }
                    var amax: Float = 0
                    for (i, v) in xh.scalars.enumerated() { amax = max(amax, abs(v * factors[i % width])) }
                    let scale = format.scale(forAmax: 0.8 * amax)
                    let codes = try kernels.quantize(try kernels.upload(xh), format: format, scale: scale,
                                                     smoothing: smoothed ? try kernels.context.upload(Tensor(shape: [width], scalars: factors), dtype: .float32) : nil)
                    return (codes, Tensor(shape: [rows, width], scalars: xh.scalars.enumerated().map { i, v in
                        format.decode(format.encode(smoothed ? v * factors[i % width] : v, scale: scale), scale: 1)
                    }))
                }))
            }
            cases.append(("8-bit weight → 16-bit \(format)", "[96,64]", 1e-3, { r in
                let wh = r.normalHalfRounded([96, 64], scale: 0.05)
                let layer = QuantizedLayer(name: "check", kind: .linear,
                                           weight: QuantizedWeight(quantizing: wh, format: format, perChannel: format == .int8),
                                           inputAmax: 1, smoothing: nil, outputAmax: nil)
                let w = try CUDAEightBitLinear(kernels, Linear(name: "check", weight: wh, bias: nil), layer)
                return (try kernels.dequantizedWeight(w), layer.weight.dequantized())
            }))
        }
        return cases
    }

    /// Attention with the probabilities rounded as a flash loop with FP8 P·V rounds them: per query row, e_j =
    /// exp(s_j − max s) rounded to E4M3 with scale 1/448, O = Σ ẽ_j·v_j / Σ e_j (FP32). Q [B, L, C], K and V [B, Lk, C].
    static func flashRoundedAttention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int) -> Tensor {
        let batch = q.shape[0], lq = q.shape[1], c = q.shape[2], lk = k.shape[1], d = c / heads
        let scale = 1 / Float(d).squareRoot()
        var out = [Float](repeating: 0, count: batch * lq * c)
        var e = [Float](repeating: 0, count: lk)
        q.scalars.withUnsafeBufferPointer { qs in k.scalars.withUnsafeBufferPointer { ks in v.scalars.withUnsafeBufferPointer { vs in
            out.withUnsafeMutableBufferPointer { os in
                for b in 0..<batch {
                    for h in 0..<heads {
                        for i in 0..<lq {
                            let qi = (b * lq + i) * c + h * d
                            var m = -Float.infinity
                            for j in 0..<lk {
                                let kj = (b * lk + j) * c + h * d
                                var dot: Float = 0
                                for t in 0..<d { dot += qs[qi + t] * ks[kj + t] }
                                e[j] = dot * scale
                                m = max(m, e[j])
                            }
                            var sum: Float = 0
                            for j in 0..<lk {
                                e[j] = exp(e[j] - m)
                                sum += e[j]
                                e[j] = QuantizedFormat.fp8.fakeQuantize(e[j], scale: 1 / 448)
                            }
                            for j in 0..<lk {
                                let vj = (b * lk + j) * c + h * d, w = e[j] / sum
                                for t in 0..<d { os[qi + t] += w * vs[vj + t] }
                            }
                        }
                    }
                }
            }
        } } }
        return Tensor(shape: q.shape, scalars: out)
    }
}
