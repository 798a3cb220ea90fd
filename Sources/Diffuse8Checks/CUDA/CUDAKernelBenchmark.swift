import Diffuse8

/// Timings of the CUDA kernels at model shapes (median of event-timed runs, after warm-up).
/// Compare with `bench/cuda/torch_reference.py`, run on the same card in the same call.
extension CUDABenchmark {
    public struct Row: Sendable {
        public let name: String
        public let shape: String
        public let milliseconds: Double
        /// TFLOP/s for GEMMs, convolutions and attention; GB/s of compulsory traffic for memory-bound kernels.
        public let rate: Double
        public let unit: String
    }

    /// The benchmark's parts, in the order they run (`run(kernels:parts:)`; `--bench-parts` of the self-test).
    public enum Part: String, CaseIterable, Sendable {
        /// 16-bit GEMMs: 8192³ and UNet shapes.
        case gemm
        /// 16-bit attention at SD1.5 and SDXL shapes, and level 4's cross-attention with FP8-rounded probabilities.
        case attention
        /// Level 4's FP8 self-attention (cuDNN's and our wgmma kernel).
        case fp8Attention = "fp8-attention"
        /// cuDNN's fused attention at SDXL's self-attention shapes, 16-bit and FP8, each plan its heuristics offer.
        case cudnnAttentionPlans = "cudnn-attention-plans"
        /// 8-bit Linear layers and GEGLU projections at SDXL's shapes, every GEMM path.
        case eightBitLinear = "8-bit-linear"
        /// 8-bit 3×3 convolutions at SDXL's shapes, cuDNN's and ours.
        case eightBitConvolution = "8-bit-convolution"
        /// UNet building blocks: GroupNorm, 16-bit convolutions, LayerNorm, GEGLU, layout, a device copy.
        case blocks
    }

    /// GEMMs (8192³ and UNet shapes), attention at SD1.5 / SDXL shapes, and a few UNet building blocks: the `parts` asked for.
    public static func run(kernels: CUDAKernels, parts: Set<Part> = Set(Part.allCases),
                           progress: ((Row) -> Void)? = nil) throws -> [Row] {
        let context = kernels.context
        var random = SelfTestRandom(seed: 42)
        var rows: [Row] = []
        func add(_ row: Row) { rows.append(row); progress?(row) }
        func device(_ shape: [Int], scale: Float = 1) throws -> CUDATensor {
            try kernels.upload(random.normalHalfRounded(shape, scale: scale))
        }

        let gemms: [(String, Int, Int, Int)] = [
            ("GEMM 8192³", 8192, 8192, 8192),
            ("SD1.5 FF in (GEGLU)", 2 * 4096, 320, 2560),
            ("SD1.5 proj 320→1280", 2 * 4096, 320, 1280),
            ("SD1.5 qkv 320→320", 2 * 4096, 320, 320),
            ("SD1.5 FF out 1280→320", 2 * 4096, 1280, 320),
            ("SDXL FF in 1280→10240", 2 * 1024, 1280, 10240),
            ("SDXL FF out 5120→1280", 2 * 1024, 5120, 1280),
        ]
        for (name, m, k, n) in gemms where parts.contains(.gemm) {
            let x = try device([m, k]), w = try device([n, k], scale: 0.05), b = try device([n])
            let ms = try time(context) { _ = try kernels.linear(x, weight: w, bias: name.hasPrefix("GEMM") ? nil : b) }
            add(Row(name: name + (name.hasPrefix("GEMM") ? "" : " +bias"), shape: "M\(m) K\(k) N\(n)", milliseconds: ms,
                    rate: 2.0 * Double(m) * Double(n) * Double(k) / ms / 1e9, unit: "TFLOP/s"))
        }

        let attentions: [(String, Int, Int, Int, Int, Int)] = [
            ("SD1.5 self-attn", 2, 8, 4096, 4096, 40),
            ("SD1.5 cross-attn", 2, 8, 4096, 77, 40),
            ("SD1.5 self-attn 32²", 2, 8, 1024, 1024, 80),
            ("SDXL self-attn 64²", 2, 10, 4096, 4096, 64),
            ("SDXL self-attn 32²", 2, 20, 1024, 1024, 64),
            ("SDXL cross-attn 64²", 2, 10, 4096, 77, 64),
        ]
        for (name, batch, heads, lq, lk, d) in attentions where parts.contains(.attention) {
            let q = try device([batch, lq, heads * d]), k = try device([batch, lk, heads * d]), v = try device([batch, lk, heads * d])
            let previous = kernels.attentionKernel
            defer { kernels.attentionKernel = previous }
            let variants: [(String, CUDAKernels.AttentionKernel)] = CUDAAttentionSource.pipelinedHeadDims.contains(d)
                ? [("", .simple), (" (pipelined)", .pipelined)] : [("", .simple)]
            for (label, variant) in variants {
                kernels.attentionKernel = variant
                let ms = try time(context) { _ = try kernels.attention(query: q, key: k, value: v, heads: heads) }
                add(Row(name: name + label, shape: "B\(batch) H\(heads) Lq\(lq) Lk\(lk) D\(d)", milliseconds: ms,
                        rate: 4.0 * Double(batch * heads) * Double(lq) * Double(lk) * Double(d) / ms / 1e9, unit: "TFLOP/s"))
            }
        }

        // Cross-attention at SDXL's shapes (77 text tokens), 16-bit probabilities and level 4's FP8-rounded ones, every
        // kernel that takes it, ten calls in a CUDA graph: the short-key kernel; the flash kernels (64 or, pipelined, 128
        // queries per block; with FP8 probabilities in one pass up to 128 keys, or in the two passes longer sequences
        // take); cuDNN's (16-bit probabilities only).
        for (name, heads, lq) in [("SDXL cross-attn 64²", 10, 4096), ("SDXL cross-attn 32²", 20, 1024)] where parts.contains(.attention) {
            let q = try device([2, lq, heads * 64]), k = try device([2, 77, heads * 64]), v = try device([2, 77, heads * 64])
            let previous = kernels.attentionKernel
            defer { kernels.onePassFP8AttentionDisabled = false; kernels.attentionKernel = previous }
            for fp8 in [false, true] {
                let runs: [(String, CUDAKernels.AttentionKernel, Bool)] = [("short keys", .shortKeys, false), ("flash", .simple, false)]
                    + (fp8 ? [("flash, two passes", .simple, true), ("flash pipelined, two passes", .pipelined, true)]
                           : [("flash pipelined", .pipelined, false)] + (context.hasCUDNN ? [("cuDNN", .cudnn, false)] : []))
                for (label, kernel, twoPasses) in runs {
                    kernels.onePassFP8AttentionDisabled = twoPasses
                    kernels.attentionKernel = kernel
                    let call = {
                        try kernels.attention(query: q.address, queryStride: heads * 64, key: k.address, value: v.address,
                                              keyValueStride: heads * 64, batch: 2, queries: lq, keys: 77, channels: heads * 64,
                                              heads: heads, fp8ProbabilityAmax: fp8 ? 1 : nil)
                    }
                    // Once before the capture (cuDNN builds its plan there, or has none for the shape).
                    guard (try? call()) != nil else { continue }
                    let ms = try graphTime(context, call)
                    add(Row(name: "\(name)\(fp8 ? " FP8-P" : ""), \(label), graph", shape: "B2 H\(heads) Lq\(lq) Lk77 D64", milliseconds: ms,
                            rate: 4.0 * Double(2 * heads) * Double(lq) * 77 * 64 / ms / 1e9, unit: "TFLOP/s"))
                }
            }
        }

        // cuDNN's fused attention at SDXL's self-attention shapes, Q/K/V read from one stacked tensor as in the UNet, each
        // execution plan its heuristics offer (in their order; the UNet runs the first), ten calls in a CUDA graph: 16-bit
        // in one call, level 4's FP8 in its calls of at most one wave.
        for (name, heads, tokens) in [("SDXL self-attn 64²", 10, 4096), ("SDXL self-attn 32²", 20, 1024)]
            where parts.contains(.cudnnAttentionPlans) && context.hasCUDNN {
            let c = heads * 64, flop = 4.0 * Double(2 * heads) * Double(tokens) * Double(tokens) * 64
            let previous = kernels.attentionKernel
            defer { kernels.cudnnAttentionPlanIndex = 0; kernels.attentionKernel = previous }
            kernels.attentionKernel = .cudnn
            let stack = try device([2, tokens, 3 * c])
            let codes = try kernels.quantize(stack, format: .fp8, scale: 4.0 / 448, smoothing: nil)
            let scales = try FP8AttentionScales(descaleQ: 4.0 / 448, descaleK: 4.0 / 448, descaleV: 4.0 / 448, descaleP: 1.0 / 448,
                                                scaleP: 448, scaleO: 448.0 / 3).upload(to: context)
            for fp8 in [false, true] where !fp8 || context.computeCapability.major >= 9 {
                for index in 0..<8 {
                    kernels.cudnnAttentionPlanIndex = index
                    func call() throws -> CUDATensor {
                        if fp8 {
                            return try kernels.cudnnFP8Attention(query: codes.address, queryStride: 3 * c, key: codes.address + UInt64(c),
                                                                 value: codes.address + UInt64(2 * c), keyValueStride: 3 * c, batch: 2,
                                                                 queries: tokens, keys: tokens, channels: c, heads: heads, scales: scales)
                        }
                        return try kernels.attention(query: stack.address, queryStride: 3 * c, key: stack.address + UInt64(2 * c),
                                                     value: stack.address + UInt64(4 * c), keyValueStride: 3 * c, batch: 2,
                                                     queries: tokens, keys: tokens, channels: c, heads: heads, fp8ProbabilityAmax: nil)
                    }
                    guard (try? call()) != nil else { break }   // no plan at this index
                    let ms = try graphTime(context, call)
                    add(Row(name: "\(name)\(fp8 ? " FP8" : ""), cuDNN plan \(index), graph", shape: "B2 H\(heads) L\(tokens) D64",
                            milliseconds: ms, rate: flop / ms / 1e9, unit: "TFLOP/s"))
                }
            }
        }

        // Level-4 FP8 self-attention at SDXL's shapes (stacked Q/K/V codes in, O's codes out) through cuDNN and through
        // our wgmma kernel: per call, and per call of ten captured in a CUDA graph (device time without the host's
        // launches, as in a captured UNet).
        let (major, _) = context.computeCapability
        for (name, batch, heads, tokens) in [("SDXL FP8 self-attn 64²", 2, 10, 4096), ("SDXL FP8 self-attn 32²", 2, 20, 1024)]
            where parts.contains(.fp8Attention) {
            let c = heads * 64
            let stack = try kernels.quantize(try device([batch, tokens, 3 * c]), format: .fp8, scale: 4.0 / 448, smoothing: nil)
            let scales = try FP8AttentionScales(descaleQ: 4.0 / 448, descaleK: 4.0 / 448, descaleV: 4.0 / 448, descaleP: 1.0 / 448,
                                                scaleP: 448, scaleO: 448.0 / 3).upload(to: context)
            var runs: [(String, CUDAKernels.FP8AttentionKernel)] = []
            if major >= 9, context.hasCUDNN, kernels.runsFP8Attention(headDim: 64, queries: tokens) { runs.append(("cuDNN", kernels.cudnnFP8Attention)) }
            if kernels.runsWGMMAFP8Attention(headDim: 64) { runs.append(("wgmma", kernels.wgmmaFP8Attention)) }
            let flop = 4.0 * Double(batch * heads) * Double(tokens) * Double(tokens) * 64
            for (label, run) in runs {
                func call() throws -> CUDATensor {
                    try run(stack.address, 3 * c, stack.address + UInt64(c), stack.address + UInt64(2 * c), 3 * c, batch, tokens, tokens, c,
                            heads, scales)
                }
                let ms = try time(context) { _ = try call() }
                add(Row(name: "\(name), \(label)", shape: "B\(batch) H\(heads) L\(tokens) D64", milliseconds: ms,
                        rate: flop / ms / 1e9, unit: "TFLOP/s"))
                let graphMs = try graphTime(context, call)
                add(Row(name: "\(name), \(label), graph", shape: "B\(batch) H\(heads) L\(tokens) D64", milliseconds: graphMs,
                        rate: flop / graphMs / 1e9, unit: "TFLOP/s"))
            }
        }

        if parts.contains(.eightBitLinear) { try eightBitLinearRows(kernels: kernels, random: &random, add: add) }
        if parts.contains(.eightBitConvolution) { try eightBitConvolutionRows(kernels: kernels, random: &random, add: add) }
        guard parts.contains(.blocks) else { return rows }

        // UNet building blocks at SD1.5's first level (batch 2, 320 channels, 64×64).
        let feature = try device([2, 320, 64, 64]), gamma = try device([320]), beta = try device([320])
        let bytes = Double(feature.byteCount)
        var ms = 0.0
        let vaeFeature = try device([1, 128, 512, 512]), vaeGamma = try device([128]), vaeBeta = try device([128])
        for (label, oneBlock) in [("", false), (" 1-block", true)] {
            kernels.splitGroupNormDisabled = oneBlock
            defer { kernels.splitGroupNormDisabled = false }
            ms = try time(context) { _ = try kernels.groupNorm(feature, groups: 32, weight: gamma, bias: beta, epsilon: 1e-5, fusedSiLU: true) }
            add(Row(name: "groupNorm+SiLU" + label, shape: "[2,320,64,64]", milliseconds: ms, rate: 2 * bytes / ms / 1e6, unit: "GB/s"))
            ms = try time(context) { _ = try kernels.groupNorm(vaeFeature, groups: 32, weight: vaeGamma, bias: vaeBeta, epsilon: 1e-6, fusedSiLU: true) }
            add(Row(name: "groupNorm+SiLU" + label, shape: "[1,128,512,512]", milliseconds: ms,
                    rate: 2 * Double(vaeFeature.byteCount) / ms / 1e6, unit: "GB/s"))
        }
        // SDXL's resnet GroupNorms (batch 2, 32 groups, SiLU), as a CUDA graph runs them: the 16-bit form, and the form
        // that writes the 3×3 convolution's channels-last INT8 codes. GB/s of compulsory traffic (one read, one write).
        for (c, size) in [(320, 128), (960, 128), (640, 64), (1920, 64), (1280, 32), (2560, 32)] {
            let x = try device([2, c, size, size]), gamma = try device([c]), beta = try device([c])
            let bytes = Double(x.byteCount)
            ms = try graphTime(context) { try kernels.groupNorm(x, groups: 32, weight: gamma, bias: beta, epsilon: 1e-5, fusedSiLU: true) }
            add(Row(name: "groupNorm+SiLU, graph", shape: "[2,\(c),\(size),\(size)]", milliseconds: ms, rate: 2 * bytes / ms / 1e6, unit: "GB/s"))
            ms = try graphTime(context) {
                try kernels.groupNorm(x, groups: 32, weight: gamma, bias: beta, epsilon: 1e-5, fusedSiLU: true,
                                      channelsLastCodes: .int8, scale: 0.05)
            }
            add(Row(name: "groupNorm+SiLU → INT8, graph", shape: "[2,\(c),\(size),\(size)]", milliseconds: ms,
                    rate: 1.5 * bytes / ms / 1e6, unit: "GB/s"))
        }
        // SDXL's upsamplers (batch 2) as INT8 channels-last codes for their 3×3 convolution, as a CUDA graph runs them:
        // the 16-bit upsampled tensor and the convolution's transposing quantize pass, and the upsampling writing the
        // codes itself. GB/s of the fused form's compulsory traffic (the input once, the codes once).
        for (c, size) in [(1280, 32), (640, 64)] {
            let x = try device([2, c, size, size])
            let bytes = Double(x.byteCount) * 3
            ms = try graphTime(context) { try kernels.channelsLastCodes(kernels.upsampleNearest2x(x), format: .int8, scale: 0.05) }
            add(Row(name: "upsample 2× + quantize pass → INT8, graph", shape: "[2,\(c),\(size),\(size)]", milliseconds: ms,
                    rate: bytes / ms / 1e6, unit: "GB/s"))
            ms = try graphTime(context) { try kernels.upsampledChannelsLastCodes(x, format: .int8, scale: 0.05) }
            add(Row(name: "upsample 2× → INT8 codes, graph", shape: "[2,\(c),\(size),\(size)]", milliseconds: ms,
                    rate: bytes / ms / 1e6, unit: "GB/s"))
        }
        let previousBackend = kernels.convolutionBackend
        defer { kernels.convolutionBackend = previousBackend }
        let hasCUDNN = (try? context.cudnn()) != nil
        for (label, backend) in (hasCUDNN ? [("cuDNN", CUDAKernels.ConvolutionBackend.cudnn)] : []) + [("im2col+GEMM", .im2colGEMM)] {
            kernels.convolutionBackend = backend
            for (c, size) in [(320, 64), (640, 32), (1280, 16)] {
                let x = c == 320 ? feature : try device([2, c, size, size])
                let weight = try device([c, c, 3, 3], scale: 0.02), bias = try device([c])
                ms = try time(context) { _ = try kernels.conv2d(x, weight: weight, bias: bias, padding: 1) }
                add(Row(name: "conv2d 3x3 (\(label))", shape: "[2,\(c),\(size),\(size)]→\(c)", milliseconds: ms,
                        rate: 2.0 * 2 * Double(size * size) * Double(c) * Double(c * 9) / ms / 1e9, unit: "TFLOP/s"))
            }
        }
        // The few-channel layers: SDXL's conv_in (4 → 320) and conv_out (320 → 4) at 128², the VAE decoder's conv_out
        // (128 → 3) at 1024² (im2col's 2.4 GB column buffer left out there).
        let narrowBackends: [(String, CUDAKernels.ConvolutionBackend)] =
            (hasCUDNN ? [("cuDNN", .cudnn)] : []) + [("im2col+GEMM", .im2colGEMM), ("direct", .direct)]
        for (n, c, o, size) in [(2, 4, 320, 128), (2, 320, 4, 128), (1, 128, 3, 1024)] {
            let x = try device([n, c, size, size]), weight = try device([o, c, 3, 3], scale: 0.02), bias = try device([o])
            for (label, backend) in narrowBackends where backend != .im2colGEMM || size < 1024 {
                kernels.convolutionBackend = backend
                ms = try time(context) { _ = try kernels.conv2d(x, weight: weight, bias: bias, padding: 1) }
                add(Row(name: "conv2d 3x3 few channels (\(label))", shape: "[\(n),\(c),\(size),\(size)]→\(o)", milliseconds: ms,
                        rate: Double(n * (c + o) * size * size * 2) / ms / 1e6, unit: "GB/s"))
            }
        }
        kernels.convolutionBackend = previousBackend

        let tokens = try device([2, 4096, 320]), lnWeight = try device([320]), lnBias = try device([320])
        ms = try time(context) { _ = try kernels.layerNorm(tokens, weight: lnWeight, bias: lnBias, epsilon: 1e-5) }
        add(Row(name: "layerNorm", shape: "[2,4096,320]", milliseconds: ms, rate: 2 * bytes / ms / 1e6, unit: "GB/s"))
        let wide = try device([2, 4096, 2560])
        ms = try time(context) { _ = try kernels.geglu(wide) }
        add(Row(name: "geglu", shape: "[2,4096,2560]", milliseconds: ms, rate: 1.5 * Double(wide.byteCount) / ms / 1e6, unit: "GB/s"))
        ms = try time(context) { _ = try kernels.channelsToTokens(feature) }
        add(Row(name: "channelsToTokens", shape: "[2,320,64,64]", milliseconds: ms, rate: 2 * bytes / ms / 1e6, unit: "GB/s"))
        let copySource = try device([64 << 20])
        let copyTarget = try kernels.empty([64 << 20])
        ms = try time(context) { try context.copy(from: copySource.address, to: copyTarget.address, bytes: copySource.byteCount) }
        add(Row(name: "device copy (ceiling)", shape: "128 MiB", milliseconds: ms,
                rate: 2 * Double(copySource.byteCount) / ms / 1e6, unit: "GB/s"))
        return rows
    }

    public static func table(_ rows: [Row]) -> String {
        var lines = [CUDASelfTest.pad("benchmark", 30) + CUDASelfTest.pad("shape", 30) + CUDASelfTest.pad("ms", 10) + "rate"]
        for r in rows {
            lines.append(CUDASelfTest.pad(r.name, 30) + CUDASelfTest.pad(r.shape, 30)
                         + CUDASelfTest.pad(fixed(r.milliseconds, 4), 10) + fixed(r.rate, 1) + " " + r.unit)
        }
        return lines.joined(separator: "\n")
    }

    static func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        return "\(rounded)"
    }

    /// Milliseconds per call of `call`, ten calls captured in one CUDA graph and replayed: device time, as in a captured
    /// UNet, without the host's launches.
    private static func graphTime(_ context: CUDAContext, _ call: () throws -> CUDATensor) throws -> Double {
        let (graph, outputs) = try CUDAGraph.capture(context) { try (0..<10).map { _ in try call() } }
        return try withExtendedLifetime(outputs) { try time(context) { try graph.launch() } } / 10
    }

    /// 8-bit Linear layers and GEGLU projections at SDXL's shapes (batch 2; the 64² and 32² latents' transformer
    /// levels), each as the UNet runs it: input codes from its producer (LayerNorm, attention, GEGLU), the GEMM with its
    /// epilogue; a GEGLU projection writes the FF output layer's input codes (in its epilogue, by the GEGLU kernel, or
    /// by a quantize pass, as the path has it). Every path of the format, per call of ten captured in a CUDA graph
    /// (device time).
    private static func eightBitLinearRows(kernels: CUDAKernels, random: inout SelfTestRandom, add: (Row) -> Void) throws {
        let context = kernels.context
        let (major, minor) = context.computeCapability
        // (name, rows, in, out, residual); a GEGLU projection's out is its output width, half its weight's rows
        let linears = [("Q/K/V 64²", 8192, 640, 1920, false), ("to_out 64²", 8192, 640, 640, true), ("FF out 64²", 8192, 2560, 640, true),
                       ("Q/K/V 32²", 2048, 1280, 3840, false), ("to_out 32²", 2048, 1280, 1280, true), ("FF out 32²", 2048, 5120, 1280, true)]
        let gegluProjections = [("GEGLU 64²", 8192, 640, 2560), ("GEGLU 32²", 2048, 1280, 5120)]
        // the layer and its input codes
        func layer(_ format: QuantizedFormat, rows: Int, k: Int, n: Int) throws -> (CUDAEightBitLinear, CUDATensor) {
            let x = random.normalHalfRounded([rows, k]), weight = random.normalHalfRounded([n, k], scale: 0.05)
            let quantized = QuantizedLayer(name: "bench", kind: .linear,
                                           weight: QuantizedWeight(quantizing: weight, format: format, perChannel: format == .int8),
                                           inputAmax: 3, smoothing: nil, outputAmax: nil)
            let linear = Linear(name: "bench", weight: quantized.weight.dequantized(), bias: random.normalHalfRounded([n]))
            let w = try CUDAEightBitLinear(kernels, linear, quantized)
            return (w, try kernels.quantize(try kernels.upload(x), format: format, scale: w.inputScale, smoothing: nil))
        }
        for format in [QuantizedFormat.int8, .fp8] where format == .int8 || major * 10 + minor >= 89 {
            // The producers of the layers' input codes: LayerNorm writing them, and the quantize pass after a 16-bit
            // output (an attention's at level 3). GB/s counts the 16-bit input and the codes.
            for (name, rows, k) in [("64²", 8192, 640), ("32²", 2048, 1280)] {
                let (w, _) = try layer(format, rows: 16, k: k, n: k)
                let x = try kernels.upload(random.normalHalfRounded([rows, k]))
                let gamma = try kernels.upload(random.normalHalfRounded([k])), beta = try kernels.upload(random.normalHalfRounded([k]))
                let bytes = Double(rows * k * 3)
                let codes = try kernels.layerNormCodes(weight: gamma, bias: beta, for: w)
                let normMs = try graphTime(context) { try kernels.layerNorm(x, weight: gamma, bias: beta, epsilon: 1e-5, writing: codes) }
                add(Row(name: "SDXL \(format.reportName) codes \(name), LayerNorm writing them, graph", shape: "[\(rows),\(k)]",
                        milliseconds: normMs, rate: bytes / normMs / 1e6, unit: "GB/s"))
                if format == .int8 {
                    let halfMs = try graphTime(context) { try kernels.layerNorm(x, weight: gamma, bias: beta, epsilon: 1e-5) }
                    add(Row(name: "SDXL 16-bit LayerNorm \(name), graph", shape: "[\(rows),\(k)]",
                            milliseconds: halfMs, rate: Double(rows * k * 4) / halfMs / 1e6, unit: "GB/s"))
                }
                // with SmoothQuant factors (INT8's recommended recipe) and without (FP8's); each thread takes 2 items
                // (the default), 4 or 1
                let factors = try context.upload(Tensor(shape: [k], scalars: (0..<k).map { Float(0.5) + Float($0 % 11) * 0.1 }), dtype: .float32)
                let itemsByDefault = kernels.quantizePassItemsPerThread
                for (smoothing, label) in [(factors, " with SmoothQuant factors"), (nil, "")] {
                    for items in [2, 4, 1] {
                        kernels.quantizePassItemsPerThread = items
                        defer { kernels.quantizePassItemsPerThread = itemsByDefault }
                        let passMs = try graphTime(context) { try kernels.quantize(x, format: format, scale: w.inputScale, smoothing: smoothing) }
                        add(Row(name: "SDXL \(format.reportName) codes \(name), quantize pass\(label), \(items) item\(items == 1 ? "" : "s") a thread, graph",
                                shape: "[\(rows),\(k)]", milliseconds: passMs, rate: bytes / passMs / 1e6, unit: "GB/s"))
                    }
                }
            }
            for (name, rows, k, n, withResidual) in linears {
                let (w, x) = try layer(format, rows: rows, k: k, n: n)
                let residual = withResidual ? try kernels.upload(random.normalHalfRounded([rows, n])) : nil
                for path in CUDAEightBitLinear.GEMMPath.candidates(format, depth: k, wgmma: kernels.runsWarpSpecializedGEMM) {
                    w.forcedGEMM = path
                    // the first call outside the capture makes the path's plan or descriptors
                    guard (try? kernels.eightBitLinear(x, w, residual: residual)) != nil, w.fallbackReason == nil else { continue }
                    let ms = try graphTime(context) { try kernels.eightBitLinear(x, w, residual: residual) }
                    add(Row(name: "SDXL 8-bit \(name), \(path.description(for: format)), graph", shape: "M\(rows) K\(k) N\(n)",
                            milliseconds: ms, rate: 2.0 * Double(rows * n) * Double(k) / ms / 1e9, unit: "TFLOP/s"))
                }
            }
            for (name, rows, k, n) in gegluProjections {
                let (w, x) = try layer(format, rows: rows, k: k, n: 2 * n)
                let (reader, _) = try layer(format, rows: 16, k: n, n: k)
                for path in kernels.runsWarpSpecializedGEMM ? CUDAEightBitLinear.GEGLUPath.candidates(format, depth: k) : [.separate] {
                    w.forcedGEGLU = path
                    guard (try? kernels.eightBitGEGLU(x, w, reader: reader)) != nil, w.fallbackReason == nil else { continue }
                    let ms = try graphTime(context) { try kernels.eightBitGEGLU(x, w, reader: reader) }
                    add(Row(name: "SDXL 8-bit \(name) \(format.reportName), \(path), graph", shape: "M\(rows) K\(k) N2×\(n)",
                            milliseconds: ms, rate: 4.0 * Double(rows * n) * Double(k) / ms / 1e9, unit: "TFLOP/s"))
                }
            }
        }
    }

    /// 8-bit 3×3 convolutions at SDXL's shapes (batch 2), each a whole layer (input quantize, convolution, back to
    /// NCHW): cuDNN's 8-bit graph and our implicit-GEMM kernel in each tile variant, per call of ten captured in a CUDA
    /// graph (device time, as in a captured UNet).
    private static func eightBitConvolutionRows(kernels: CUDAKernels, random: inout SelfTestRandom, add: (Row) -> Void) throws {
        let context = kernels.context
        let (major, minor) = context.computeCapability
        guard context.hasCUDNN || kernels.runsWarpSpecializedGEMM else { return }
        let shapes = [(1280, 1280, 32), (1280, 1280, 64), (1920, 640, 64), (640, 640, 64), (960, 320, 128), (320, 320, 128)]
        for format in [QuantizedFormat.int8, .fp8] where format == .int8 || major * 10 + minor >= 89 {
            for (c, o, size) in shapes {
                let x = random.normalHalfRounded([2, c, size, size])
                let weight = random.normalHalfRounded([o, c, 3, 3], scale: 0.02), bias = random.normalHalfRounded([o])
                let layer = QuantizedLayer(name: "bench", kind: .conv2d,
                                           weight: QuantizedWeight(quantizing: weight, format: format, perChannel: format == .int8),
                                           inputAmax: 3, smoothing: nil, outputAmax: nil)
                let conv = Conv2d(name: "bench", weight: layer.weight.dequantized(), bias: bias, stride: 1, padding: 1)
                let input = try kernels.upload(x)
                let paths: [CUDAKernels.WarpSpecializedGEMM?] = (context.hasCUDNN ? [nil] : [])
                    + (kernels.runsWarpSpecializedGEMM ? CUDAKernels.WarpSpecializedGEMM.variants(format, depth: 9 * c) : [])
                let flop = 2.0 * 2 * Double(size * size) * Double(o) * Double(c * 9)
                for variant in paths {
                    let w = try CUDAEightBitConvolution(kernels, conv, layer, withBias: true)
                    w.choosesFastestPath = false
                    w.forcedWGMMA = variant
                    // the first call outside the capture picks and times cuDNN's plan
                    guard (try? kernels.eightBitConvolution(input, w)) != nil, w.runsEightBit else { continue }
                    let ms = try graphTime(context) { try kernels.eightBitConvolution(input, w) }
                    add(Row(name: "SDXL conv 3x3 \(format.reportName), \(variant.map { "\($0)" } ?? "cuDNN"), graph",
                            shape: "[2,\(c),\(size),\(size)]→\(o)", milliseconds: ms, rate: flop / ms / 1e9, unit: "TFLOP/s"))
                }
            }
        }
    }
}
