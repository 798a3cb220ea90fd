import XCTest
@testable import Diffuse8

/// FP8 layers on the CPU with their 1-byte codes resident (`CPUFP8LayerHook`) against the simulation
/// (`SimulatedQuantizationHook` on the dequantized FP32 weight), bit for bit: same weight values, same input
/// quantization, same FP32 kernels. The decode table is checked against the E4M3 definition computed by hand.
final class CPUFP8ExecutionTests: XCTestCase {
    // MARK: Decode table

    /// E4M3 "fn": sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is subnormal (m · 2^-9); S.1111.111 is
    /// NaN; no infinities. Computed here in Double from the bit fields, independently of `FP8E4M3.decode`.
    func testDecodeTableIsTheE4M3Format() {
        let table = CPUFP8LayerHook.decodeTable
        XCTAssertEqual(table.count, 256)
        for code in 0..<256 {
            let negative = code & 0x80 != 0, exponent = (code >> 3) & 15, mantissa = code & 7
            if exponent == 15 && mantissa == 7 {
                XCTAssertTrue(table[code].isNaN, "code \(code) is NaN")
                continue
            }
            let magnitude = exponent == 0 ? Double(mantissa) / 512 : (1 + Double(mantissa) / 8) * pow(2, Double(exponent - 7))
            XCTAssertEqual(table[code].bitPattern, Float(negative ? -magnitude : magnitude).bitPattern, "code \(code)")
        }
        // Hand-checked values.
        XCTAssertEqual(table[0x7E], 448)             // 0.1111.110: 1.75 · 2^8, the largest finite value
        XCTAssertEqual(table[0xFE], -448)
        XCTAssertEqual(table[0x01], 0.001953125)     // 2^-9, the smallest subnormal
        XCTAssertEqual(table[0x07], 0.013671875)     // 7 · 2^-9, the largest subnormal
        XCTAssertEqual(table[0x08], 0.015625)        // 2^-6, the smallest normal
        XCTAssertEqual(table[0x38], 1)               // exponent 7 = bias
        XCTAssertEqual(table[0x80].bitPattern, (-Float(0)).bitPattern)
        XCTAssertTrue(table[0x7F].isNaN && table[0xFF].isNaN)
        XCTAssertEqual(table.filter(\.isNaN).count, 2, "E4M3 fn has exactly two NaN codes")
    }

    /// table[code] · scale is what `QuantizedWeight.dequantized()` (the simulation's FP32 weight) holds, for every
    /// code, per tensor and per channel, with scales that are not powers of two.
    func testExpandedCodesAreTheDequantizedWeight() {
        let codes = (0..<512).map { UInt8($0 % 256) }
        for scales in [[Float(0.0371)], [0.0371, 1.7e-3]] {
            let weight = QuantizedWeight(format: .fp8, shape: [2, 256], codes: codes, scales: scales)
            let dequantized = weight.dequantized().scalars
            for i in 0..<codes.count {
                let expanded = CPUFP8LayerHook.decodeTable[Int(codes[i])] * scales[scales.count == 1 ? 0 : i / 256]
                if dequantized[i].isNaN {
                    XCTAssertTrue(expanded.isNaN, "code \(codes[i])")
                } else {
                    XCTAssertEqual(expanded.bitPattern, dequantized[i].bitPattern, "code \(codes[i]), scales \(scales)")
                }
            }
        }
    }

    // MARK: Layers

    func testLinearEqualsSimulation() {
        for perChannel in [false, true] {
            for dynamic in [false, true] {
                for smoothed in [false, true] { linear(perChannel: perChannel, dynamic: dynamic, smoothed: smoothed, outputAmax: nil) }
            }
        }
    }

    /// Level 4: Q/K/V projections round their output to FP8 with the calibrated output amax.
    func testAttentionProjectionOutputRoundingEqualsSimulation() {
        linear(perChannel: false, dynamic: false, smoothed: true, outputAmax: 3.7)
        linear(perChannel: false, dynamic: true, smoothed: false, outputAmax: 0.9)
    }

    func testConvolutionEqualsSimulation() {
        for (kernelSize, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
            for dynamic in [false, true] {
                for panelFloats in [1 << 22, 0] {  // one panel, or panels of MR output channels (the last one partial)
                    conv(kernelSize: kernelSize, stride: stride, padding: padding, dynamic: dynamic, panelFloats: panelFloats)
                }
            }
        }
    }

    /// 13 rows, K = 1021 (four K slices of the GEMM, the last partial), 400 outputs (two column tiles of the GEMM
    /// task split, partial slivers); codes over the whole finite range.
    private func linear(perChannel: Bool, dynamic: Bool, smoothed: Bool, outputAmax: Float?) {
        let rows = 13, k = 1021, outputs = 400
        var random = TorchGenerator(seed: 7)
        let weight = Self.randomWeight(shape: [outputs, k], perChannel: perChannel, random: &random)
        let smoothing: [Float]? = smoothed ? (0..<k).map { [0.5, 1, 2, 4, 0.3][$0 % 5] } : nil
        var x = random.randn([rows, k])
        for r in 0..<rows { for j in 0..<k { x.scalars[r * k + j] *= Float(r + 1) * 0.7 } }  // per-token ranges differ
        let bias = random.randn([outputs])
        let layer = QuantizedLayer(name: "fp8", kind: .linear, weight: weight, inputAmax: dynamic ? nil : 9.5,
                                   smoothing: smoothing, outputAmax: outputAmax)
        let simulated = Linear(name: "fp8", weight: weight.dequantized(), bias: bias)
        simulated.executionHook = SimulatedQuantizationHook(layer)
        let expected = simulated(x)

        let native = Linear(name: "fp8", weight: weight.dequantized(), bias: bias)
        CPUFP8LayerHook.install(layer, on: native)
        XCTAssertEqual(native.weight.count, 0, "the FP32 weight is released")
        XCTAssertEqual(native.weightShape, [outputs, k])
        let real = native(x)
        let label = "linear perChannel \(perChannel) dynamic \(dynamic) smoothed \(smoothed) output amax \(outputAmax.map { "\($0)" } ?? "none")"
        XCTAssertEqual(real.shape, expected.shape, label)
        XCTAssertNil(Self.firstDifference(real.scalars, expected.scalars), label)
        // Premise: the input quantization (and the output rounding) show in the result, so a hook skipping them fails.
        let unquantizedInput = CPUKernels.linear(x, weight: weight.dequantized(), bias: bias)
        XCTAssertNotNil(Self.firstDifference(unquantizedInput.scalars, expected.scalars), label)
        if outputAmax != nil {
            let unrounded = CPUKernels.linear(layer.quantizedInput(x), weight: weight.dequantized(), bias: bias)
            XCTAssertNotNil(Self.firstDifference(unrounded.scalars, expected.scalars), label)
        }
    }

    /// 2 images of 13 channels 9 × 9 → 40 channels; static scale or per-sample dynamic scales.
    private func conv(kernelSize: Int, stride: Int, padding: Int, dynamic: Bool, panelFloats: Int) {
        let n = 2, c = 13, size = 9, outputs = 40
        var random = TorchGenerator(seed: 5)
        let weight = Self.randomWeight(shape: [outputs, c, kernelSize, kernelSize], perChannel: false, random: &random)
        var x = random.randn([n, c, size, size])
        for i in 0..<(c * size * size) { x.scalars[i] *= 3.1 }  // the samples' ranges differ
        let bias = random.randn([outputs])
        let layer = QuantizedLayer(name: "fp8", kind: .conv2d, weight: weight, inputAmax: dynamic ? nil : 5.3, smoothing: nil, outputAmax: nil)
        let simulated = Conv2d(name: "fp8", weight: weight.dequantized(), bias: bias, stride: stride, padding: padding)
        simulated.executionHook = SimulatedQuantizationHook(layer)
        let expected = simulated(x)

        let native = Conv2d(name: "fp8", weight: weight.dequantized(), bias: bias, stride: stride, padding: padding)
        native.releaseHostWeight()
        native.executionHook = CPUFP8LayerHook(layer, panelFloats: panelFloats)
        let real = native(x)
        let label = "conv k\(kernelSize) s\(stride) p\(padding) dynamic \(dynamic) panel \(panelFloats)"
        XCTAssertEqual(real.shape, expected.shape, label)
        XCTAssertNil(Self.firstDifference(real.scalars, expected.scalars), label)
        let unquantizedInput = CPUKernels.conv2d(x, weight: weight.dequantized(), bias: bias, stride: stride, padding: padding)
        XCTAssertNotNil(Self.firstDifference(unquantizedInput.scalars, expected.scalars), label)
    }

    // MARK: Whole model

    /// A level-4 FP8 folder of the tiny fixture (static scales from a short calibration, SmoothQuant, FP8 Q/K/V and
    /// attention) loaded natively: every quantized layer keeps only its codes, and the UNet's output equals the
    /// simulated UNet's bit for bit; the pipeline picks native execution for it.
    func testNativeUNetMatchesSimulatedUNet() throws {
        let source = Fixtures.path("tiny-sd15")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("d8-fp8-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let pipeline = try StableDiffusionPipeline(directory: source)
        var options = CalibrationOptions(steps: 2)
        options.reservoirCapacity = 0
        let statistics = try Calibrator.calibrate(pipeline, prompts: ["a red circle", "a blue square"], options: options)
        var recipe = QuantizationRecipe()
        recipe.format = .fp8
        recipe.level = .fp8Attention
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(pipeline.unet!, statistics: statistics, recipe: recipe),
                                       to: scratch)
        let (simulated, manifest) = try QuantizedModelFolder.loadQuantizedUNet(directory: scratch + "/unet", execution: .simulated)
        XCTAssertFalse(manifest.fp8AttentionModules.isEmpty)
        let (native, _) = try QuantizedModelFolder.loadQuantizedUNet(directory: scratch + "/unet", execution: .native)
        let nativeLinears = native.linearLayers.filter { $0.executionHook is CPUFP8LayerHook }
        let nativeConvs = native.convolutionLayers.filter { $0.executionHook is CPUFP8LayerHook }
        XCTAssertEqual(nativeLinears.count, simulated.linearLayers.filter { $0.quantization != nil }.count)
        XCTAssertEqual(nativeConvs.count, simulated.convolutionLayers.filter { $0.quantization != nil }.count)
        XCTAssertFalse(nativeLinears.isEmpty || nativeConvs.isEmpty)
        XCTAssertTrue(nativeLinears.allSatisfy { $0.weight.count == 0 } && nativeConvs.allSatisfy { $0.weight.count == 0 })
        XCTAssertTrue(nativeLinears.contains { $0.quantization?.outputAmax != nil }, "level 4 rounds Q/K/V outputs")
        XCTAssertTrue(native.linearLayers.allSatisfy { $0.quantization == nil || $0.quantization!.inputAmax != nil }, "static scales")

        var noise = TorchGenerator(seed: 3)
        let sample = noise.randn([2, 4, 8, 8])
        let context = noise.randn([2, 77, pipeline.unet!.configuration.crossAttentionDim[0]])
        let reference = simulated(sample: sample, timestep: 500, encoderHiddenStates: context)
        let real = native(sample: sample, timestep: 500, encoderHiddenStates: context)
        XCTAssertNil(Self.firstDifference(real.scalars, reference.scalars))
        let plain = pipeline.unet!(sample: sample, timestep: 500, encoderHiddenStates: context)
        XCTAssertNotNil(Self.firstDifference(plain.scalars, reference.scalars), "the FP8 folder differs from full precision")

        let loaded = try StableDiffusionPipeline(directory: scratch, quantizedExecution: .native)
        XCTAssertTrue(loaded.unet!.linearLayers.contains { $0.executionHook is CPUFP8LayerHook })
        let simulatedPipeline = try StableDiffusionPipeline(directory: scratch, quantizedExecution: .simulated)
        XCTAssertFalse(simulatedPipeline.unet!.linearLayers.contains { $0.executionHook is CPUFP8LayerHook })
        XCTAssertTrue(simulatedPipeline.unet!.linearLayers.contains { $0.executionHook is SimulatedQuantizationHook })

        // With a LoRA: merged into the simulated layers (re-quantized), then switched to native execution.
        let lora = try LoRAFile(path: Fixtures.path("lora/tiny-sd15-kohya.safetensors"))
        let nativeLoRA = try XCTUnwrap(StableDiffusionPipeline(directory: scratch, loras: [(lora, 0.8)], quantizedExecution: .native).unet)
        let simulatedLoRA = try XCTUnwrap(StableDiffusionPipeline(directory: scratch, loras: [(lora, 0.8)], quantizedExecution: .simulated).unet)
        XCTAssertFalse(nativeLoRA.linearLayers.contains { $0.executionHook is SimulatedQuantizationHook })
        XCTAssertTrue(nativeLoRA.linearLayers.contains { $0.executionHook is CPUFP8LayerHook && $0.weight.count == 0 })
        let withLoRA = simulatedLoRA(sample: sample, timestep: 500, encoderHiddenStates: context)
        XCTAssertNil(Self.firstDifference(nativeLoRA(sample: sample, timestep: 500, encoderHiddenStates: context).scalars, withLoRA.scalars))
        XCTAssertNotNil(Self.firstDifference(withLoRA.scalars, reference.scalars), "the LoRA changes the UNet")
    }

    // MARK: Helpers

    /// Random finite E4M3 codes (NaN codes excluded) with scales that are not powers of two.
    private static func randomWeight(shape: [Int], perChannel: Bool, random: inout TorchGenerator) -> QuantizedWeight {
        let count = shape.reduce(1, *)
        let codes = (0..<count).map { _ -> UInt8 in
            let code = UInt8(truncatingIfNeeded: random.nextUInt64())
            return code & 0x7F == 0x7F ? code ^ 1 : code
        }
        let scales = perChannel ? (0..<shape[0]).map { Float(0.00137) * Float($0 % 5 + 1) + 0.00011 * Float($0) } : [0.00213]
        return QuantizedWeight(format: .fp8, shape: shape, codes: codes, scales: scales)
    }

    /// The first index where the arrays differ bitwise, with both values; nil when equal.
    private static func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
        guard a.count == b.count else { return "\(a.count) vs \(b.count) values" }
        guard let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) else { return nil }
        return "element \(i): \(a[i]) vs \(b[i])"
    }
}
