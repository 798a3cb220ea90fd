import Diffuse8
/// Micro-benchmarks of the CPU kernels at the shapes the SD1.5 UNet uses at a 64×64 latent
/// (batch 2): the GEMMs of its linear layers, its 3×3 convolutions and its self-attention.
/// Reports GFLOP/s next to the times so the kernels can be compared with the machine's peak.
public enum KernelBenchmark {
    public struct Entry: Sendable {
        public var result: BenchmarkResult
        /// Floating-point operations of one run (2 per multiply-add).
        public var flops: Double
        public var gflopsPerSecond: Double { flops / (result.median * 1e6) }
        /// Throughput per core actually used: robust to other processes taking CPU time.
        public var gflopsPerCoreSecond: Double {
            flops * Double(result.milliseconds.count) / (result.cpuMilliseconds.reduce(0, +) * 1e6)
        }
    }

    /// Runs every kernel benchmark (or those whose name contains `only`); `quick` halves the spatial sizes.
    public static func run(iterations: Int = 5, quick: Bool = false, only: String? = nil) -> [Entry] {
        var entries: [Entry] = []
        // A row left out by `only` is not run; its result has no runs and is dropped at the end.
        func measure(_ name: String, iterations: Int, _ body: () -> Void) -> BenchmarkResult {
            guard only.map({ name.contains($0) }) ?? true else { return BenchmarkResult(name: name, milliseconds: []) }
            return Benchmark.measure(name, iterations: iterations, body)
        }
        let side = quick ? 32 : 64
        let tokens = 2 * side * side
        func random(_ shape: [Int], seed: UInt64) -> Tensor {
            var state = seed &* 6364136223846793005 &+ 1442695040888963407
            return Tensor(shape: shape) { p in
                for i in 0..<p.count {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    p[i] = Float(Int32(truncatingIfNeeded: state >> 33)) / Float(Int32.max)
                }
            }
        }
        // Linear: tokens × 320 → 320 (attention projections) and 320 → 2560 (GEGLU input).
        for (inF, outF) in [(320, 320), (320, 2560), (1280, 320)] {
            let x = random([tokens, inF], seed: 1), w = random([outF, inF], seed: 2), b = random([outF], seed: 3)
            let r = measure("linear \(tokens)x\(inF) -> \(outF)", iterations: iterations) {
                _ = CPUKernels.linear(x, weight: w, bias: b)
            }
            entries.append(Entry(result: r, flops: 2 * Double(tokens * inF * outF)))
        }
        // 3×3 convolutions, padding 1, at 64×64 (320 ch) and 32×32 (640 ch), and one stride-2 downsample.
        for (channels, s, stride) in [(320, side, 1), (640, side / 2, 1), (320, side, 2)] {
            let x = random([2, channels, s, s], seed: 4)
            let w = random([channels, channels, 3, 3], seed: 5), b = random([channels], seed: 6)
            let os = (s + 2 - 3) / stride + 1
            let r = measure("conv3x3 2x\(channels)x\(s)x\(s) stride \(stride)", iterations: iterations) {
                _ = CPUKernels.conv2d(x, weight: w, bias: b, stride: stride, padding: 1)
            }
            entries.append(Entry(result: r, flops: 2 * Double(2 * channels * os * os * channels * 9)))
        }
        // The UNet's 3×3 stride-1 convolutions (input channels, output channels, side), im2col GEMM against Winograd
        // F(4×4, 3×3); rows report the direct convolution's FLOPs, so Winograd's GFLOP/s are an equivalent rate.
        for (batch, inChannels, outChannels, s) in [(2, 4, 320, side), (2, 320, 320, side), (2, 960, 320, side), (2, 320, 4, side),
                                                    (2, 640, 640, side / 2), (2, 1920, 640, side / 2), (2, 1280, 1280, side / 4),
                                                    (2, 2560, 1280, side / 4), (1, 1280, 1280, side / 4), (1, 1280, 1280, 12),
                                                    (2, 1280, 1280, side / 8), (2, 2560, 1280, side / 8)] {
            let x = random([batch, inChannels, s, s], seed: 4)
            let w = random([outChannels, inChannels, 3, 3], seed: 5), b = random([outChannels], seed: 6)
            for algorithm in [Conv2dAlgorithm.im2col, .winograd] {
                let r = measure("conv3x3 \(batch)x\(inChannels)x\(s)x\(s) -> \(outChannels) \(algorithm)", iterations: iterations) {
                    _ = CPUKernels.conv2d(x, weight: w, bias: b, padding: 1, algorithm: algorithm)
                }
                entries.append(Entry(result: r, flops: 2 * Double(batch * inChannels * s * s * outChannels * 9)))
            }
        }
        // The same FP32 shapes through the model's layers, whose weights are packed once (`CPUFloatKernel.active`).
        let floatKernel = CPUFloatKernel.active.rawValue
        for (inF, outF) in [(320, 320), (320, 2560), (1280, 320)] {
            let x = random([tokens, inF], seed: 1)
            let layer = Linear(name: "linear", weight: random([outF, inF], seed: 2), bias: random([outF], seed: 3))
            _ = layer(Tensor(zeros: [1, inF]))
            let r = measure("Linear layer \(tokens)x\(inF) -> \(outF) fp32 \(floatKernel)", iterations: iterations) {
                _ = layer(x)
            }
            entries.append(Entry(result: r, flops: 2 * Double(tokens * inF * outF)))
        }
        // (`fullPrecision`: the im2col GEMM on the packed weight, never Winograd.)
        for (channels, s, stride) in [(320, side, 1), (640, side / 2, 1), (320, side, 2)] {
            let x = random([2, channels, s, s], seed: 4)
            let conv = Conv2d(name: "conv", weight: random([channels, channels, 3, 3], seed: 5), bias: random([channels], seed: 6),
                              stride: stride, padding: 1)
            _ = conv.fullPrecision(Tensor(zeros: [1, channels, 4, 4]))
            let os = (s + 2 - 3) / stride + 1
            let r = measure("Conv2d layer im2col 3x3 2x\(channels)x\(s)x\(s) stride \(stride) fp32 \(floatKernel)",
                            iterations: iterations) {
                _ = conv.fullPrecision(x)
            }
            entries.append(Entry(result: r, flops: 2 * Double(2 * channels * os * os * channels * 9)))
        }
        // The same Linear and 3×3 convolution shapes in real INT8 (`CPUInt8Kernel.active`; 2 ops per multiply-add).
        let kernel = CPUInt8Kernel.active.rawValue
        for (inF, outF) in [(320, 320), (320, 2560), (1280, 320)] {
            let x = random([tokens, inF], seed: 1), w = random([outF, inF], seed: 2), b = random([outF], seed: 3)
            let weight = QuantizedWeight(quantizing: w, format: .int8, perChannel: true)
            let hook = CPUInt8LayerHook(QuantizedLayer(name: "linear", kind: .linear, weight: weight, inputAmax: 1, smoothing: nil, outputAmax: nil))
            let layer = Linear(name: "linear", weight: Tensor(zeros: [0]), bias: b)
            let r = measure("int8 \(kernel) linear \(tokens)x\(inF) -> \(outF)", iterations: iterations) {
                _ = hook.run(layer, x, residual: nil)
            }
            entries.append(Entry(result: r, flops: 2 * Double(tokens * inF * outF)))
        }
        for (channels, s, stride) in [(320, side, 1), (640, side / 2, 1), (320, side, 2)] {
            let x = random([2, channels, s, s], seed: 4)
            let w = random([channels, channels, 3, 3], seed: 5), b = random([channels], seed: 6)
            let weight = QuantizedWeight(quantizing: w, format: .int8, perChannel: true)
            let hook = CPUInt8LayerHook(QuantizedLayer(name: "conv", kind: .conv2d, weight: weight, inputAmax: 1, smoothing: nil, outputAmax: nil))
            let conv = Conv2d(name: "conv", weight: w, bias: b, stride: stride, padding: 1)
            let os = (s + 2 - 3) / stride + 1
            let r = measure("int8 \(kernel) conv3x3 2x\(channels)x\(s)x\(s) stride \(stride)", iterations: iterations) {
                _ = hook.run(conv, x)
            }
            entries.append(Entry(result: r, flops: 2 * Double(2 * channels * os * os * channels * 9)))
        }
        // The same shapes in FP8 (per-tensor weight scale, static input scale): the simulation on the dequantized FP32
        // weight, and native execution on the 1-byte codes expanded per tile (`CPUFP8LayerHook`): same FP32 kernels.
        for (inF, outF) in [(320, 320), (320, 2560), (1280, 320)] {
            let x = random([tokens, inF], seed: 1), w = random([outF, inF], seed: 2), b = random([outF], seed: 3)
            let weight = QuantizedWeight(quantizing: w, format: .fp8, perChannel: false)
            let layer = QuantizedLayer(name: "linear", kind: .linear, weight: weight, inputAmax: 1, smoothing: nil, outputAmax: nil)
            let simulated = Linear(name: "linear", weight: weight.dequantized(), bias: b)
            simulated.executionHook = SimulatedQuantizationHook(layer)
            let native = Linear(name: "linear", weight: Tensor(zeros: [0]), bias: b)
            native.executionHook = CPUFP8LayerHook(layer)
            for (mode, linear) in [("simulated", simulated), ("native", native)] {
                let r = measure("fp8 \(mode) linear \(tokens)x\(inF) -> \(outF)", iterations: iterations) { _ = linear(x) }
                entries.append(Entry(result: r, flops: 2 * Double(tokens * inF * outF)))
            }
        }
        for (channels, s, stride) in [(320, side, 1), (640, side / 2, 1), (320, side, 2)] {
            let x = random([2, channels, s, s], seed: 4)
            let w = random([channels, channels, 3, 3], seed: 5), b = random([channels], seed: 6)
            let weight = QuantizedWeight(quantizing: w, format: .fp8, perChannel: false)
            let layer = QuantizedLayer(name: "conv", kind: .conv2d, weight: weight, inputAmax: 1, smoothing: nil, outputAmax: nil)
            let simulated = Conv2d(name: "conv", weight: weight.dequantized(), bias: b, stride: stride, padding: 1)
            simulated.executionHook = SimulatedQuantizationHook(layer)
            let native = Conv2d(name: "conv", weight: Tensor(zeros: [0]), bias: b, stride: stride, padding: 1)
            native.executionHook = CPUFP8LayerHook(layer)
            let os = (s + 2 - 3) / stride + 1
            for (mode, conv) in [("simulated", simulated), ("native", native)] {
                let r = measure("fp8 \(mode) conv3x3 2x\(channels)x\(s)x\(s) stride \(stride)", iterations: iterations) { _ = conv(x) }
                entries.append(Entry(result: r, flops: 2 * Double(2 * channels * os * os * channels * 9)))
            }
        }
        // Self-attention at 64×64 (8 heads × 40) and cross-attention to 77 tokens.
        let q = random([2, side * side, 320], seed: 7)
        let k = random([2, side * side, 320], seed: 8), v = random([2, side * side, 320], seed: 9)
        let r = measure("self-attention 2x\(side * side)x320, 8 heads", iterations: iterations) {
            _ = CPUKernels.attention(query: q, key: k, value: v, heads: 8)
        }
        entries.append(Entry(result: r, flops: 4 * Double(2 * side * side * side * side * 320)))
        let kc = random([2, 77, 320], seed: 10), vc = random([2, 77, 320], seed: 11)
        let rc = measure("cross-attention 2x\(side * side)x320 -> 77, 8 heads", iterations: iterations) {
            _ = CPUKernels.attention(query: q, key: kc, value: vc, heads: 8)
        }
        entries.append(Entry(result: rc, flops: 4 * Double(2 * side * side * 77 * 320)))
        let x = random([2, 320, side, side], seed: 12)
        let gw = random([320], seed: 13), gb = random([320], seed: 14)
        let rg = measure("groupNorm+SiLU 2x320x\(side)x\(side)", iterations: iterations) {
            _ = CPUKernels.groupNorm(x, groups: 32, weight: gw, bias: gb, epsilon: 1e-5, fusedSiLU: true)
        }
        entries.append(Entry(result: rg, flops: 0))
        let gx = random([2, side * side, 2560], seed: 15)
        let rgg = measure("geglu 2x\(side * side)x2560", iterations: iterations) { _ = CPUKernels.geglu(gx) }
        entries.append(Entry(result: rgg, flops: 0))
        // INT8 input codes written by the producers vs the layers' own pass, at the default model's shapes and these.
        for (channels, s) in [(64, 16), (320, side)] where only.map({ "producers c\(channels)".contains($0) }) ?? true {
            entries += ProducerQuantizationBenchmark.run(label: "producers c\(channels)", channels: channels, side: s, iterations: iterations)
                .map { Entry(result: $0, flops: 0) }
        }
        return entries.filter { !$0.result.milliseconds.isEmpty }
    }
}
