#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Diffuse8

/// One kernel checked on the GPU against `CPUKernels` (FP32 on the CPU, same FP16-rounded inputs).
public struct CUDASelfTestResult: Sendable {
    public let name: String
    public let shape: String
    /// ‖gpu − cpu‖ / ‖cpu‖.
    public let relativeL2: Double
    public let threshold: Double
    /// Elements left NaN (outputs are poisoned with NaN before the kernel runs).
    public let nonFinite: Int
    public let error: String?

    public var passed: Bool { error == nil && nonFinite == 0 && relativeL2 <= threshold }
}

/// The GPU tests: every CUDA kernel on fresh random data, compared with the CPU reference kernels.
///
/// Inputs are drawn from a normal distribution, rounded to FP16 on the host, and the same rounded values
/// feed the CPU reference, so the measured error is the kernel's own (FP16 output rounding, FP16 P in
/// attention, FP32 accumulation order). Thresholds: 1e-3 (2e-3 for attention, whose probabilities are
/// rounded to FP16 before P·V as in FlashAttention). Outputs are poisoned with NaN so unwritten elements fail.
public enum CUDASelfTest {
    /// Runs all checks, or with `only` those whose name contains it (ignoring case). `large` adds a 4096-token attention
    /// case (a few seconds of CPU reference).
    public static func run(kernels: CUDAKernels, large: Bool = false, only: String? = nil, seed: UInt64 = 0x5EED,
                           progress: ((CUDASelfTestResult) -> Void)? = nil) -> [CUDASelfTestResult] {
        var random = SelfTestRandom(seed: seed)
        var results: [CUDASelfTestResult] = []
        let context = kernels.context
        let previousPoison = context.poisonsAllocations
        context.poisonsAllocations = true
        defer { context.poisonsAllocations = previousPoison }

        func check(_ name: String, _ shape: String, threshold: Double = 1e-3,
                   _ body: (inout SelfTestRandom) throws -> (gpu: CUDATensor, cpu: Tensor)) {
            if let only, !name.lowercased().contains(only.lowercased()) { return }
            let result = compare(name, shape, threshold: threshold, context: context) { try body(&random) }
            results.append(result)
            progress?(result)
        }
        func pair(_ shape: [Int], _ r: inout SelfTestRandom, scale: Float = 1) throws -> (CUDATensor, Tensor) {
            let host = r.normalHalfRounded(shape, scale: scale)
            return (try kernels.upload(host), host)
        }

        // GEMMs (cuBLASLt).
        for (rows, k, n, bias) in [(2 * 77, 768, 320, true), (300, 320, 1280, true), (64, 1024, 2048, false)] {
            check("linear\(bias ? "+bias" : "")", "[\(rows),\(k)]·[\(n),\(k)]ᵀ") { r in
                let (x, xh) = try pair([rows, k], &r), (w, wh) = try pair([n, k], &r, scale: 0.05)
                let (b, bh) = try pair([n], &r)
                return (try kernels.linear(x, weight: w, bias: bias ? b : nil),
                        CPUKernels.linear(xh, weight: wh, bias: bias ? bh : nil))
            }
        }
        check("linear+bias+GELU(tanh)", "[256,320]·[640,320]ᵀ") { r in
            let (x, xh) = try pair([256, 320], &r), (w, wh) = try pair([640, 320], &r, scale: 0.05), (b, bh) = try pair([640], &r)
            return (try kernels.linear(x, weight: w, bias: b, tanhGELU: true),
                    CPUKernels.map(CPUKernels.linear(xh, weight: wh, bias: bh), Self.geluTanh))
        }
        check("matmulTransposedB", "[3,100,64]·[3,70,64]ᵀ") { r in
            let (a, ah) = try pair([3, 100, 64], &r), (b, bh) = try pair([3, 70, 64], &r)
            let reference = Tensor.concatenate((0..<3).map { i in
                CPUKernels.linear(ah.slice(i, i + 1).reshaped([100, 64]), weight: bh.slice(i, i + 1).reshaped([70, 64]),
                                  bias: nil).reshaped([1, 100, 70])
            })
            return (try kernels.matmulTransposedB(a, b), reference)
        }
        // Convolutions, through cuDNN (when it loads), im2col + cuBLASLt, and the direct kernels for few input or
        // output channels (conv_in and conv_out shapes; widths that are and are not multiples of 4, the 3×3 kernels'
        // vector and scalar paths; stride 2 and 1×1, the general kernels).
        let hasCUDNN = (try? context.cudnn()) != nil
        let backends: [(String, CUDAKernels.ConvolutionBackend)] =
            (hasCUDNN ? [("cuDNN", .cudnn), ("cuDNN NHWC", .cudnnChannelsLast)] : []) + [("im2col", .im2colGEMM), ("direct", .direct)]
        let previousBackend = kernels.convolutionBackend
        defer { kernels.convolutionBackend = previousBackend }
        let convolutionCases = [(32, 64, 16, 3, 1, 1), (64, 64, 16, 3, 2, 1), (64, 128, 16, 1, 1, 0), (4, 32, 16, 3, 1, 1)]
        let fewChannelCases = [(320, 4, 19, 3, 1, 1), (96, 3, 16, 3, 1, 1), (130, 3, 17, 3, 2, 1), (72, 8, 16, 1, 1, 0),
                               (4, 320, 21, 3, 1, 1), (3, 130, 18, 3, 2, 1), (8, 70, 16, 1, 1, 0)]
        for (backendName, backend) in backends {
        kernels.convolutionBackend = backend
        for (c, o, hw, k, stride, padding) in backend == .direct ? convolutionCases + fewChannelCases : convolutionCases {
            let direct = CUDAKernels.directConvolutionApplies(inputChannels: c, outputChannels: o, kernelHeight: k, kernelWidth: k)
            if backend == .cudnnChannelsLast && c % 8 != 0 || backend == .direct && !direct { continue }
            check("conv2d \(k)x\(k) s\(stride) p\(padding) \(backendName)", "[2,\(c),\(hw),\(hw)]→\(o)") { r in
                let (x, xh) = try pair([2, c, hw, hw], &r), (w, wh) = try pair([o, c, k, k], &r, scale: 0.1)
                let (b, bh) = try pair([o], &r)
                let last = try kernels.upload(CUDAKernels.channelsLastWeight(wh))
                return (try kernels.conv2d(x, weight: w, bias: b, stride: stride, padding: padding, weightChannelsLast: last),
                        CPUKernels.conv2d(xh, weight: wh, bias: bh, stride: stride, padding: padding))
            }
        }
        }
        kernels.convolutionBackend = previousBackend
        for (c, o) in [(64, 64), (320, 4), (4, 320)] {
            check("conv2d 3x3 s1 p1 automatic", "[2,\(c),32,32]→\(o)") { r in
                kernels.convolutionBackend = .automatic
                let (x, xh) = try pair([2, c, 32, 32], &r), (w, wh) = try pair([o, c, 3, 3], &r, scale: 0.1)
                let (b, bh) = try pair([o], &r)
                return (try kernels.conv2d(x, weight: w, bias: b, padding: 1),
                        CPUKernels.conv2d(xh, weight: wh, bias: bh, padding: 1))
            }
        }
        kernels.convolutionBackend = previousBackend
        // Normalisation: one block per group (small groups or forced), split groups (vector and scalar paths),
        // and values far from zero (mean 10) to catch E[x²] − E[x]² cancellation.
        let groupNormCases: [([Int], Bool, Float, Bool)] = [
            ([2, 64, 16, 16], false, 0, false), ([2, 64, 16, 16], true, 0, false), ([2, 320, 32, 32], true, 0, false),
            ([2, 320, 32, 32], true, 0, true), ([1, 64, 45, 47], true, 0, false), ([1, 128, 128, 128], false, 10, false)]
        for (shape, silu, offset, oneBlock) in groupNormCases {
            let label = "groupNorm\(silu ? "+SiLU" : "")\(offset != 0 ? " mean 10" : "")\(oneBlock ? " 1-block" : "")"
            check(label, "\(shape)") { r in
                kernels.splitGroupNormDisabled = oneBlock
                defer { kernels.splitGroupNormDisabled = false }
                var xh = r.normalHalfRounded(shape, scale: 2)
                if offset != 0 { xh = Tensor(shape: shape, scalars: xh.scalars.map { Float(Float16($0 + offset)) }) }
                let x = try kernels.upload(xh)
                let (w, wh) = try pair([shape[1]], &r), (b, bh) = try pair([shape[1]], &r)
                return (try kernels.groupNorm(x, groups: 32, weight: w, bias: b, epsilon: 1e-5, fusedSiLU: silu),
                        CPUKernels.groupNorm(xh, groups: 32, weight: wh, bias: bh, epsilon: 1e-5, fusedSiLU: silu))
            }
        }
        for shape in [[2, 77, 768], [2, 256, 320], [2, 64, 1280], [3, 5, 100], [1, 3, 2048], [1, 3, 2056]] {
            check("layerNorm", "\(shape)") { r in
                let (x, xh) = try pair(shape, &r), (w, wh) = try pair([shape[2]], &r), (b, bh) = try pair([shape[2]], &r)
                return (try kernels.layerNorm(x, weight: w, bias: b, epsilon: 1e-5),
                        CPUKernels.layerNorm(xh, weight: wh, bias: bh, epsilon: 1e-5))
            }
        }
        // Element-wise and layout.
        let unaries: [(String, (CUDATensor) throws -> CUDATensor, (Tensor) -> Tensor)] = [
            ("silu", kernels.silu, CPUKernels.silu), ("gelu", kernels.gelu, CPUKernels.gelu),
            ("geluTanh", kernels.geluTanh, { CPUKernels.map($0, Self.geluTanh) }),
            ("quickGELU", kernels.quickGELU, CPUKernels.quickGELU),
            ("scale(0.18215)", { try kernels.scale($0, 0.18215) }, { CPUKernels.scale($0, 0.18215) }),
        ]
        for (name, gpu, cpu) in unaries {
            check(name, "[2,64,33,17]") { r in let (x, xh) = try pair([2, 64, 33, 17], &r, scale: 3); return (try gpu(x), cpu(xh)) }
        }
        check("geglu", "[2,64,1280]") { r in let (x, xh) = try pair([2, 64, 1280], &r); return (try kernels.geglu(x), CPUKernels.geglu(xh)) }
        check("geglu (scalar path)", "[3,7,200]") { r in let (x, xh) = try pair([3, 7, 200], &r); return (try kernels.geglu(x), CPUKernels.geglu(xh)) }
        check("add", "[2,320,8,8]") { r in
            let (a, ah) = try pair([2, 320, 8, 8], &r), (b, bh) = try pair([2, 320, 8, 8], &r)
            return (try kernels.add(a, b), CPUKernels.add(ah, bh))
        }
        check("addChannelBias", "[2,320,8,8]+[2,320]") { r in
            let (a, ah) = try pair([2, 320, 8, 8], &r), (v, vh) = try pair([2, 320], &r)
            return (try kernels.addChannelBias(a, v), CPUKernels.addChannelBias(ah, vh))
        }
        for shape in [[64, 77], [8, 4096]] {
            check("softmax", "\(shape)") { r in let (x, xh) = try pair(shape, &r, scale: 3); return (try kernels.softmax(x), CPUKernels.softmax(xh)) }
        }
        check("upsampleNearest2x", "[2,32,9,7]") { r in
            let (x, xh) = try pair([2, 32, 9, 7], &r); return (try kernels.upsampleNearest2x(x), CPUKernels.upsampleNearest2x(xh))
        }
        for shape in [[2, 16, 6, 12], [1, 3, 5, 4]] {   // widths of whole quads: the vectorised kernel
            check("upsampleNearest2x", "\(shape)") { r in
                let (x, xh) = try pair(shape, &r); return (try kernels.upsampleNearest2x(x), CPUKernels.upsampleNearest2x(xh))
            }
        }
        check("channelsToTokens", "[2,40,9,7]") { r in
            let (x, xh) = try pair([2, 40, 9, 7], &r); return (try kernels.channelsToTokens(x), CPUKernels.channelsToTokens(xh))
        }
        check("tokensToChannels", "[2,63,40]") { r in
            let (x, xh) = try pair([2, 63, 40], &r)
            return (try kernels.tokensToChannels(x, height: 9, width: 7), CPUKernels.tokensToChannels(xh, height: 9, width: 7))
        }
        // 16-byte vectors (both parts' images a multiple of 8 values), and device copies (not)
        for (ca, cb) in [(24, 8), (3, 2)] {
            check("concatChannels", "[2,\(ca),5,5]+[2,\(cb),5,5]") { r in
                let (a, ah) = try pair([2, ca, 5, 5], &r), (b, bh) = try pair([2, cb, 5, 5], &r)
                return (try kernels.concatChannels(a, b), CPUKernels.concatChannels(ah, bh))
            }
        }
        // Fused attention: every head dim, ragged query/key counts, cross-attention with 77 keys (and the short-key
        // kernel's two key tiles: 77 and 100 keys, and 128).
        var attentionCases: [(batch: Int, heads: Int, lq: Int, lk: Int, d: Int)] =
            CUDAAttentionSource.headDims.map { (2, 2, 200, 200, $0) }
        attentionCases += [(2, 8, 256, 77, 40), (2, 10, 64, 77, 64), (1, 4, 1024, 1024, 64), (2, 2, 7, 3, 80),
                           (1, 2, 333, 130, 32), (2, 2, 64, 77, 8), (2, 2, 100, 77, 16), (2, 2, 70, 70, 48),
                           (1, 3, 333, 100, 80), (2, 5, 1000, 128, 64)]
        if large { attentionCases += [(1, 2, 4096, 4096, 40), (1, 1, 4096, 4096, 64)] }
        let previousAttention = kernels.attentionKernel
        defer { kernels.attentionKernel = previousAttention }
        for c in attentionCases {
            var variants: [(String, CUDAKernels.AttentionKernel)] = CUDAAttentionSource.pipelinedHeadDims.contains(c.d)
                ? [("", .simple), (" pipelined", .pipelined)] : [("", .simple)]
            // cuDNN's fused attention at the head dims SD/SDXL use (it may not fuse every other one).
            if [32, 40, 64, 80, 128].contains(c.d) && kernels.context.hasCUDNN { variants.append((" cuDNN", .cudnn)) }
            if CUDAAttentionSource.shortKeyHeadDims.contains(c.d) && c.lk <= 128 { variants.append((" short keys", .shortKeys)) }
            for (label, variant) in variants {
            kernels.attentionKernel = variant
            check("attention d=\(c.d)\(label)", "B\(c.batch) H\(c.heads) Lq\(c.lq) Lk\(c.lk)", threshold: 2e-3) { r in
                let channels = c.heads * c.d
                let (q, qh) = try pair([c.batch, c.lq, channels], &r), (k, kh) = try pair([c.batch, c.lk, channels], &r)
                let (v, vh) = try pair([c.batch, c.lk, channels], &r)
                return (try kernels.attention(query: q, key: k, value: v, heads: c.heads),
                        CPUKernels.attention(query: qh, key: kh, value: vh, heads: c.heads))
            }
            }
        }
        kernels.attentionKernel = previousAttention
        for c in fusedCases(kernels) + eightBitCases(kernels) { check(c.name, c.shape, threshold: c.threshold, c.body) }
        return results
    }

    /// Runs `body` (GPU result, CPU reference) and scores it: relative L2 of the finite GPU values, NaNs left in the
    /// (poisoned) output counted as unwritten, a thrown error or a shape mismatch recorded as the failure.
    static func compare(_ name: String, _ shape: String, threshold: Double, context: CUDAContext,
                        _ body: () throws -> (gpu: CUDATensor, cpu: Tensor)) -> CUDASelfTestResult {
        do {
            let (gpu, cpu) = try body()
            let host = try context.download(gpu)
            let nonFinite = host.scalars.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
            let error = host.shape == cpu.shape ? nil : "shape \(host.shape) ≠ reference \(cpu.shape)"
            let finite = Tensor(shape: host.shape, scalars: host.scalars.map { $0.isFinite ? $0 : 0 })
            let l2 = error == nil ? finite.relativeL2(to: cpu) : .infinity
            return CUDASelfTestResult(name: name, shape: shape, relativeL2: l2, threshold: threshold, nonFinite: nonFinite, error: error)
        } catch {
            return CUDASelfTestResult(name: name, shape: shape, relativeL2: .infinity, threshold: threshold, nonFinite: 0, error: "\(error)")
        }
    }

    static func geluTanh(_ x: Float) -> Float {
        0.5 * x * (1 + tanhf(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    }

    /// A table of results, one line each, and a summary line.
    public static func table(_ results: [CUDASelfTestResult]) -> String {
        var lines = [pad("kernel", 30) + pad("shape", 30) + pad("rel. L2", 11) + pad("limit", 8) + "result"]
        for r in results {
            let status = r.passed ? "ok" : "FAIL" + (r.nonFinite > 0 ? " (\(r.nonFinite) unwritten/NaN)" : "")
                + (r.error.map { ": " + $0 } ?? "")
            lines.append(pad(r.name, 30) + pad(r.shape, 30) + pad(scientific(r.relativeL2), 11)
                         + pad(scientific(r.threshold), 8) + status)
        }
        let failed = results.filter { !$0.passed }.count
        lines.append(failed == 0 ? "all \(results.count) GPU checks passed" : "\(failed) of \(results.count) GPU checks FAILED")
        return lines.joined(separator: "\n")
    }

    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
    }

    static func scientific(_ value: Double) -> String {
        guard value.isFinite else { return "inf" }
        guard value > 0 else { return "0" }
        let exponent = Int(floor(log10(value)))
        let mantissa = value / pow(10, Double(exponent))
        let rounded = (mantissa * 10).rounded() / 10
        return "\(rounded)e\(exponent)"
    }
}

/// SplitMix64 + Box–Muller: deterministic normal samples for the self-test.
struct SelfTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) / Double(1 << 53) }

    /// Normal samples times `scale`, rounded to FP16 and back so host and device see identical values.
    mutating func normalHalfRounded(_ shape: [Int], scale: Float = 1) -> Tensor {
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let u1 = uniform(), u2 = uniform()
            let radius = (-2 * log(u1)).squareRoot()
            values[i] = Float(Float16(Float(radius * cos(2 * .pi * u2)) * scale))
            if i + 1 < count { values[i + 1] = Float(Float16(Float(radius * sin(2 * .pi * u2)) * scale)) }
            i += 2
        }
        return Tensor(shape: shape, scalars: values)
    }
}
