import XCTest
@testable import Diffuse8

/// Real INT8 execution on the CPU (`CPUInt8LayerHook`) against hand calculations and against the simulation
/// (`SimulatedQuantizationHook`, the reference), for Linear and Conv2d layers, with bias, residual, smoothing,
/// static and dynamic scales — once per kernel variant; a variant this CPU lacks is skipped with a message.
/// The simulation computes the integer sums exactly and dequantizes them as the kernels' epilogue does, so real and
/// simulated outputs must be equal bit for bit, on ordinary (non-power-of-two) scales.
final class CPUInt8KernelTests: XCTestCase {
    // MARK: Per variant

    func testPortableKernel() throws { try checkEverything(.portable) }
    func testAVX2Kernel() throws { try checkEverything(.avx2) }
    func testAVX512VNNIKernel() throws { try checkEverything(.avx512vnni) }
    func testNEONDotKernel() throws { try checkEverything(.neonDot) }

    private func checkEverything(_ kernel: CPUInt8Kernel) throws {
        guard kernel.isSupported else { throw XCTSkip("this CPU (or architecture) lacks the \(kernel.rawValue) instructions") }
        try handComputedLinear(kernel)
        try handComputedConv(kernel)
        for dynamic in [false, true] {
            for smoothed in [false, true] {
                // Odd sizes: rows not a multiple of the 6-row tile, K not a multiple of 4, outputs over several panels.
                try linearMatchesSimulation(kernel, rows: 37, inFeatures: 75, outFeatures: 70, smoothed: smoothed, dynamic: dynamic)
            }
            try linearMatchesSimulation(kernel, rows: 5, inFeatures: 320, outFeatures: 33, smoothed: true, dynamic: dynamic)
            // Deep K (over 4096: the AVX2 kernel's widened A leaves its stack buffer).
            try linearMatchesSimulation(kernel, rows: 7, inFeatures: 4403, outFeatures: 40, smoothed: false, dynamic: dynamic)
            try convMatchesSimulation(kernel, batch: 2, channels: 13, size: 9, outChannels: 40, kernelSize: 3, stride: 1, padding: 1, dynamic: dynamic)
            try convMatchesSimulation(kernel, batch: 1, channels: 8, size: 10, outChannels: 16, kernelSize: 3, stride: 2, padding: 1, dynamic: dynamic)
            try convMatchesSimulation(kernel, batch: 2, channels: 21, size: 7, outChannels: 35, kernelSize: 1, stride: 1, padding: 0, dynamic: dynamic)
        }
    }

    /// y = Σ q(x ⊙ s) · w · s_x · s_w + b + residual, worked out by hand (s_x = 127 / 127 = 1).
    private func handComputedLinear(_ kernel: CPUInt8Kernel) throws {
        let codes: [Int8] = [1, 2, 3, 4, 5, -1, 0, 1, 0, -128, 127, -127, 0, 2, -3]
        let weight = QuantizedWeight(format: .int8, shape: [3, 5], codes: codes.map { UInt8(bitPattern: $0) }, scales: [0.5, 0.25, 2])
        let layer = QuantizedLayer(name: "hand", kind: .linear, weight: weight, inputAmax: 127, smoothing: [1, 2, 1, 1, 0.5], outputAmax: nil)
        let linear = Linear(name: "hand", weight: weight.dequantized(), bias: Tensor(shape: [3], scalars: [0.25, -1, 3]))
        let hook = CPUInt8LayerHook(layer)
        // Row 0: x ⊙ s = [1, 4, 3, 4, 5] → codes as they are.
        //   · w0 = 1+8+9+16+25 = 59 → 29.5 + 0.25;  · w1 = -1+3-640 = -638 → -159.5 - 1;  · w2 = 127-508+8-15 = -388 → -776 + 3.
        // Row 1: x ⊙ s = [-0.5, 0.6, 300, -2.5, 3.5] → codes [0, 1, 127 (clamped), -2, 4] (ties to even).
        //   · w0 = 2+381-8+20 = 395 → 197.5 + 0.25;  · w1 = 127-512 = -385 → -96.25 - 1;  · w2 = -127-4-12 = -143 → -286 + 3.
        let x = Tensor(shape: [2, 5], scalars: [1, 2, 3, 4, 10, -0.5, 0.3, 300, -2.5, 7])
        let expected: [Float] = [29.75, -160.5, -773, 197.75, -97.25, -283]
        XCTAssertEqual(hook.run(linear, x, residual: nil, kernel: kernel).scalars, expected, "\(kernel.rawValue)")
        let residual = Tensor(shape: [2, 3], scalars: [1, 1, 1, 0, 0, -1])
        XCTAssertEqual(hook.run(linear, x, residual: residual, kernel: kernel).scalars, zip(expected, residual.scalars).map(+), "\(kernel.rawValue)")
    }

    /// A 2×2 kernel over a 2×2 image with padding 1 (3×3 output), computed by hand.
    private func handComputedConv(_ kernel: CPUInt8Kernel) throws {
        let codes: [Int8] = [1, -1, 2, 0]  // w[0,0]=1 w[0,1]=-1 w[1,0]=2 w[1,1]=0
        let weight = QuantizedWeight(format: .int8, shape: [1, 1, 2, 2], codes: codes.map { UInt8(bitPattern: $0) }, scales: [0.5])
        let layer = QuantizedLayer(name: "hand", kind: .conv2d, weight: weight, inputAmax: 254, smoothing: nil, outputAmax: nil)
        let conv = Conv2d(name: "hand", weight: weight.dequantized(), bias: Tensor(shape: [1], scalars: [1]), stride: 1, padding: 1)
        // s_x = 2: image [[2, 4], [6, 9]] → codes [[1, 2], [3, 4]] (4.5 → 4, ties to even).
        let x = Tensor(shape: [1, 1, 2, 2], scalars: [2, 4, 6, 9])
        // out[i][j] = Σ w[a][b] · code[i+a-1][j+b-1]: e.g. out[1][1] = 1·1 - 1·2 + 2·3 + 0·4 = 5.
        // Worked out cell by cell (code c, padding 0):
        // out[0][0] = w11·c00 = 0;            out[0][1] = w10·c00 + w11·c01 = 2;     out[0][2] = w10·c01 = 4
        // out[1][0] = w01·c00 + w11·c10 = -1; out[1][1] = 1 - 2 + 6 + 0 = 5;         out[1][2] = w00·c01 + w10·c11 = 2 + 8 = 10
        // out[2][0] = w01·c10 = -3;           out[2][1] = w00·c10 + w01·c11 = 3 - 4 = -1; out[2][2] = w00·c11 = 4
        let cells: [Float] = [0, 2, 4, -1, 5, 10, -3, -1, 4]
        let expected = cells.map { $0 * 2 * 0.5 + 1 }
        XCTAssertEqual(CPUInt8LayerHook(layer).run(conv, x, kernel: kernel).scalars, expected, "\(kernel.rawValue)")
    }

    private func linearMatchesSimulation(_ kernel: CPUInt8Kernel, rows: Int, inFeatures: Int, outFeatures: Int,
                                         smoothed: Bool, dynamic: Bool) throws {
        var g = TorchGenerator(seed: UInt64(rows * 1000 + inFeatures + outFeatures))
        let fp = g.randn([outFeatures, inFeatures])
        let smoothing: [Float]? = smoothed ? (0..<inFeatures).map { 0.5 + Float($0 % 7) * 0.25 } : nil
        var scaled = fp
        if let smoothing { for o in 0..<outFeatures { for j in 0..<inFeatures { scaled.scalars[o * inFeatures + j] /= smoothing[j] } } }
        let weight = QuantizedWeight(quantizing: scaled, format: .int8, perChannel: true)
        let x = g.randn([rows, inFeatures])
        let layer = QuantizedLayer(name: "l", kind: .linear, weight: weight, inputAmax: dynamic ? nil : 2.5, smoothing: smoothing, outputAmax: nil)
        let bias = g.randn([outFeatures])
        let residual = g.randn([rows, outFeatures])
        let simulated = Linear(name: "l", weight: weight.dequantized(), bias: bias)
        simulated.executionHook = SimulatedQuantizationHook(layer)
        let expected = CPUKernels.add(simulated(x), residual)
        let real = CPUInt8LayerHook(layer).run(Linear(name: "l", weight: Tensor(zeros: [0]), bias: bias), x, residual: residual, kernel: kernel)
        XCTAssertEqual(real.shape, expected.shape)
        XCTAssertNil(Self.firstDifference(real.scalars, expected.scalars),
                     "\(kernel.rawValue) linear \(rows)×\(inFeatures)→\(outFeatures) smoothed \(smoothed) dynamic \(dynamic)")
    }

    private func convMatchesSimulation(_ kernel: CPUInt8Kernel, batch: Int, channels: Int, size: Int, outChannels: Int,
                                       kernelSize: Int, stride: Int, padding: Int, dynamic: Bool) throws {
        var g = TorchGenerator(seed: UInt64(channels * 100 + outChannels + kernelSize))
        let weight = QuantizedWeight(quantizing: g.randn([outChannels, channels, kernelSize, kernelSize]), format: .int8, perChannel: true)
        let x = g.randn([batch, channels, size, size])
        let bias = g.randn([outChannels])
        let layer = QuantizedLayer(name: "c", kind: .conv2d, weight: weight, inputAmax: dynamic ? nil : 2.0, smoothing: nil, outputAmax: nil)
        let simulated = Conv2d(name: "c", weight: weight.dequantized(), bias: bias, stride: stride, padding: padding)
        simulated.executionHook = SimulatedQuantizationHook(layer)
        let expected = simulated(x)
        let conv = Conv2d(name: "c", weight: weight.dequantized(), bias: bias, stride: stride, padding: padding)
        let real = CPUInt8LayerHook(layer).run(conv, x, kernel: kernel)
        XCTAssertEqual(real.shape, expected.shape)
        XCTAssertNil(Self.firstDifference(real.scalars, expected.scalars),
                     "\(kernel.rawValue) conv \(channels)→\(outChannels) k\(kernelSize) s\(stride) p\(padding) dynamic \(dynamic)")
    }

    /// The first index where the arrays differ bitwise, with both values; nil when equal.
    static func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
        guard a.count == b.count else { return "\(a.count) vs \(b.count) values" }
        guard let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) else { return nil }
        return "element \(i) of \(a.count): \(a[i]) vs \(b[i])"
    }

    /// The single-tile entry (`CPUInt8Kernel.tile`) of every variant this CPU runs, against integer sums; K = 4403
    /// (not a multiple of 4, and longer than a small stack buffer).
    func testSingleTileOfEveryVariant() {
        let k = 4403, mr = CPUInt8Kernel.tileRows, nr = CPUInt8Kernel.tileColumns
        var random = TorchGenerator(seed: 17)
        let codes = (0..<(nr * k)).map { i -> Int8 in i < k ? -128 : Int8(truncatingIfNeeded: random.nextUInt64()) }
        let weight = CPUInt8PackedWeight(QuantizedWeight(format: .int8, shape: [nr, k], codes: codes.map { UInt8(bitPattern: $0) }, scales: [1]))
        let lda = weight.kGroups * 4
        var a = [UInt8](repeating: 128, count: mr * lda)
        for r in 0..<mr { for j in 0..<k { a[r * lda + j] = r == 0 ? 0 : UInt8(truncatingIfNeeded: random.nextUInt64()) } }
        var expected = [Int32](repeating: 0, count: mr * nr)
        for r in 0..<mr {
            for o in 0..<nr {
                var sum = 0
                for j in 0..<k { sum += (Int(a[r * lda + j]) - 128) * Int(codes[o * k + j]) }
                expected[r * nr + o] = Int32(sum)
            }
        }
        for kernel in CPUInt8Kernel.allCases where kernel.isSupported {
            var c = [Int32](repeating: 0, count: mr * nr)
            a.withUnsafeBufferPointer { ap in
                c.withUnsafeMutableBufferPointer { cp in
                    kernel.tile(a: ap.baseAddress!, lda: lda, panel: weight.panel(0), compensation: UnsafePointer(weight.compensation),
                                kGroups: weight.kGroups, into: cp.baseAddress!)
                }
            }
            XCTAssertEqual(c, expected, kernel.rawValue)
        }
    }

    // MARK: Whole model

    /// An INT8 folder loaded with real kernels: no FP32 copy of the quantized weights; inside the UNet every layer
    /// gives exactly what the simulation gives on the same input (per variant), and so does the whole UNet.
    func testNativeUNetMatchesSimulatedUNet() throws {
        let source = Fixtures.path("tiny-sd15")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("d8-int8-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let pipeline = try StableDiffusionPipeline(directory: source)
        var recipe = QuantizationRecipe()
        recipe.dynamic = true
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(pipeline.unet!, statistics: nil, recipe: recipe), to: scratch)
        let (simulated, _) = try QuantizedModelFolder.loadQuantizedUNet(directory: scratch + "/unet", execution: .simulated)
        let (native, _) = try QuantizedModelFolder.loadQuantizedUNet(directory: scratch + "/unet", execution: .native)
        let nativeLinears = native.linearLayers.filter { $0.executionHook is CPUInt8LayerHook }
        let nativeConvs = native.convolutionLayers.filter { $0.executionHook is CPUInt8LayerHook }
        XCTAssertEqual(nativeLinears.count, simulated.linearLayers.filter { $0.quantization != nil }.count)
        XCTAssertEqual(nativeConvs.count, simulated.convolutionLayers.filter { $0.quantization != nil }.count)
        XCTAssertFalse(nativeLinears.isEmpty || nativeConvs.isEmpty)
        XCTAssertTrue(nativeLinears.allSatisfy { $0.weight.count == 0 } && nativeConvs.allSatisfy { $0.weight.count == 0 })
        var noise = TorchGenerator(seed: 3)
        let sample = noise.randn([2, 4, 8, 8])
        let context = noise.randn([2, 77, pipeline.unet!.configuration.crossAttentionDim[0]])
        let reference = simulated(sample: sample, timestep: 500, encoderHiddenStates: context)
        for kernel in CPUInt8Kernel.allCases where kernel.isSupported {
            CPUInt8Kernel.forced = kernel
            defer { CPUInt8Kernel.forced = nil }
            let checks = nativeLinears.map { LayerCheck(layer: $0) } + nativeConvs.map { LayerCheck(conv: $0) }
            defer { checks.forEach { $0.restore() } }
            let real = native(sample: sample, timestep: 500, encoderHiddenStates: context)
            XCTAssertEqual(checks.filter { $0.calls > 0 }.count, checks.count, kernel.rawValue)
            for check in checks {
                XCTAssertEqual(check.mismatches, 0, "\(kernel.rawValue) \(check.name): \(check.firstMismatch ?? "")")
            }
            XCTAssertNil(Self.firstDifference(real.scalars, reference.scalars), kernel.rawValue)
        }
    }
}

/// Wraps a layer's real INT8 hook: runs it, and the simulation on the same input, counting calls whose outputs differ
/// in any bit.
private final class LayerCheck: LinearExecutionHook, Conv2dExecutionHook {
    let real: CPUInt8LayerHook
    let name: String
    private let restoreHook: () -> Void
    private(set) var mismatches = 0
    private(set) var firstMismatch: String?
    private(set) var calls = 0

    init(layer: Linear) {
        real = layer.executionHook as! CPUInt8LayerHook
        name = layer.name
        let real = self.real
        restoreHook = { layer.executionHook = real }
        layer.executionHook = self
    }

    init(conv: Conv2d) {
        real = conv.executionHook as! CPUInt8LayerHook
        name = conv.name
        let real = self.real
        restoreHook = { conv.executionHook = real }
        conv.executionHook = self
    }

    func restore() { restoreHook() }

    func run(_ linear: Linear, _ x: Tensor) -> Tensor {
        let y = real.run(linear, x)
        let reference = Linear(name: name, weight: real.layer.weight.dequantized(), bias: linear.bias)
        reference.executionHook = SimulatedQuantizationHook(real.layer)
        record(y, reference(x))
        return y
    }

    func run(_ conv: Conv2d, _ x: Tensor) -> Tensor {
        let y = real.run(conv, x)
        let reference = Conv2d(name: name, weight: real.layer.weight.dequantized(), bias: conv.bias, stride: conv.stride, padding: conv.padding)
        reference.executionHook = SimulatedQuantizationHook(real.layer)
        record(y, reference(x))
        return y
    }

    private func record(_ real: Tensor, _ simulated: Tensor) {
        calls += 1
        if let difference = CPUInt8KernelTests.firstDifference(real.scalars, simulated.scalars) {
            mismatches += 1
            firstMismatch = firstMismatch ?? difference
        }
    }
}
