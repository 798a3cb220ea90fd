import Foundation
import XCTest
@testable import Diffuse8

/// Layers that read one tensor — an attention module's `to_q`/`to_k`/`to_v`, every cross-attention's `to_k`/`to_v`
/// (they all read the text context) — are quantized as one layer of their stacked weights (as SmoothQuant smooths a transformer's Q/K/V jointly, its factors
/// folded into the LayerNorm they share), so that a backend runs them as one 8-bit GEMM. Checked against the
/// SmoothQuant formula computed here by hand from the FP weights and the calibration statistics.
final class QuantSharedInputTests: ExecutableTestCase {
    func testSiblingsShareSmoothingInputScaleAndWeightScale() throws {
        let source = Fixtures.path("tiny-sd15")
        let pipeline = try StableDiffusionPipeline(directory: source)
        let unet = try XCTUnwrap(pipeline.unet)
        var options = CalibrationOptions(steps: 2)
        options.reservoirCapacity = 0
        let stats = try Calibrator.calibrate(pipeline, prompts: ["a red circle above a blue square", "a green triangle"], options: options)
        var recipe = QuantizationRecipe()
        recipe.format = .fp8
        recipe.calibration = .max
        let alpha: Float = 0.5
        recipe.smoothing = .fixed(alpha)
        let quantized = try Quantizer.quantize(unet, statistics: stats, recipe: recipe)
        let byName = Dictionary(uniqueKeysWithValues: quantized.layers.map { ($0.name, $0) })

        let block = try XCTUnwrap(unet.transformers.first?.blocks.first)
        let a = block.selfAttention, c = block.crossAttention
        let contextReaders = unet.transformers.flatMap(\.blocks).flatMap { [$0.crossAttention.key, $0.crossAttention.value] }
        XCTAssertGreaterThan(contextReaders.count, 2, "the fixture has several cross-attentions")
        for group in [[a.query, a.key, a.value], contextReaders] {
            let layers = try group.map { try XCTUnwrap(byName[$0.name]) }
            // by hand: s_j = (max over the group's rows |W[:, j]|)^(1-α) / x_j^α, x_j the input's channel amax
            let x = try XCTUnwrap(stats.layer(named: group[0].name)?.channelAmax)
            let columns = group[0].inFeatures
            var w = [Float](repeating: 0, count: columns)
            for linear in group {
                for (i, v) in linear.weight.scalars.enumerated() { w[i % columns] = max(w[i % columns], abs(v)) }
            }
            let expected: [Float] = (0..<columns).map { j in
                guard w[j] > 0, x[j] > 0 else { return 1 }
                return min(max(Float(pow(Double(w[j]), Double(1 - alpha)) / pow(Double(x[j]), Double(alpha))), 1e-4), 1e4)
            }
            var weightAmax: Float = 0
            for linear in group {
                for (i, v) in linear.weight.scalars.enumerated() { weightAmax = max(weightAmax, abs(v / expected[i % columns])) }
            }
            let inputAmax = zip(x, expected).map { $0 * $1 }.max()!
            for layer in layers {
                let s = try XCTUnwrap(layer.smoothing, layer.name)
                for j in 0..<columns { XCTAssertEqual(s[j], expected[j], accuracy: 1e-5 * expected[j], "\(layer.name)[\(j)]") }
                XCTAssertEqual(try XCTUnwrap(layer.inputAmax), inputAmax, accuracy: 1e-5 * inputAmax, layer.name)
                XCTAssertEqual(layer.weight.scales.count, 1, layer.name)
                XCTAssertEqual(layer.weight.scales[0], weightAmax / 448, accuracy: 1e-6 * weightAmax, layer.name)
                XCTAssertEqual(quantized.alphas[layer.name], alpha)
            }
            XCTAssertTrue(layers.allSatisfy { $0.smoothing == layers[0].smoothing && $0.weight.scales == layers[0].weight.scales })
        }
        // A layer reading another tensor keeps its own factors.
        XCTAssertNotEqual(byName[c.query.name]?.smoothing, byName[c.key.name]?.smoothing)

        // Loaded back (simulated, as the GPU loader reads it: the fusion plan stacks the dequantized weights), the
        // fusion plan stacks every group: one product per self-attention Q/K/V, one for every cross K/V, each module's
        // keys and values at their place in it.
        try QuantizedModelFolder.write(source: source, quantized: quantized, to: scratch.path + "/q")
        let loaded = try XCTUnwrap(try StableDiffusionPipeline(directory: scratch.path + "/q", quantizedExecution: .simulated).unet)
        let plan = try FusionPlan(loaded)
        let blocks = loaded.transformers.flatMap { $0.blocks }
        XCTAssertEqual(plan.selfProjections.count, blocks.count)
        XCTAssertEqual(Set(plan.contextSlots.keys), Set(blocks.map { ObjectIdentifier($0.crossAttention) }))
        XCTAssertTrue(plan.contextProjections.allSatisfy { $0.layers.allSatisfy { $0.quantization != nil } })
        XCTAssertEqual(plan.contextProjections.count, 1)
        let contextStack = try XCTUnwrap(plan.contextProjections.first)
        XCTAssertEqual(contextStack.layers.map(\.name), contextReaders.map(\.name))
        for block in blocks {
            let slot = try XCTUnwrap(plan.contextSlots[ObjectIdentifier(block.crossAttention)])
            let index = try XCTUnwrap(contextStack.layers.firstIndex { $0 === block.crossAttention.key })
            XCTAssertEqual(slot.stack, 0)
            XCTAssertEqual(slot.offset, contextStack.offsets[index])
            XCTAssertTrue(contextStack.layers[index + 1] === block.crossAttention.value)
        }
        // A folder whose cross-attentions quantize the context each their own way (smoothed per module): one product
        // per module.
        let first = try XCTUnwrap(blocks.first?.crossAttention)
        for layer in [first.key, first.value] {
            let q = try XCTUnwrap(layer.quantization)
            layer.executionHook = SimulatedQuantizationHook(QuantizedLayer(
                name: q.name, kind: q.kind, weight: q.weight, inputAmax: q.inputAmax,
                smoothing: q.smoothing.map { $0.map { $0 * 2 } }, outputAmax: q.outputAmax))
        }
        let perModule = try FusionPlan(loaded)
        XCTAssertEqual(perModule.contextProjections.count, blocks.count)
        XCTAssertTrue(perModule.contextProjections.allSatisfy { $0.layers.count == 2 })
        XCTAssertTrue(perModule.contextSlots.values.allSatisfy { $0.offset == 0 })
        XCTAssertTrue(plan.selfProjections.values.allSatisfy { $0.layers.allSatisfy { $0.quantization != nil } })
        // Level 4 rounds each projection's output with its own amax after the GEMM: stacked all the same.
        recipe.level = .fp8Attention
        let level4 = try Quantizer.quantize(unet, statistics: stats, recipe: recipe)
        XCTAssertFalse(level4.fp8AttentionModules.isEmpty)
        try QuantizedModelFolder.write(source: source, quantized: level4, to: scratch.path + "/q4")
        let loaded4 = try XCTUnwrap(try StableDiffusionPipeline(directory: scratch.path + "/q4", quantizedExecution: .simulated).unet)
        let plan4 = try FusionPlan(loaded4)
        for block in loaded4.transformers.flatMap({ $0.blocks }) where block.selfAttention.usesFP8Attention {
            let stack = try XCTUnwrap(plan4.selfProjections[ObjectIdentifier(block.selfAttention)])
            XCTAssertTrue(stack.layers.allSatisfy { $0.quantization?.outputAmax != nil })
        }
    }

    func testDifferentSmoothingIsNotStacked() {
        let w = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        func layer(_ name: String, smoothing: [Float]) -> Linear {
            let l = Linear(name: name, weight: w, bias: nil)
            l.executionHook = SimulatedQuantizationHook(QuantizedLayer(
                name: name, kind: .linear, weight: QuantizedWeight(quantizing: w, format: .int8, perChannel: true),
                inputAmax: 1, smoothing: smoothing, outputAmax: nil))
            return l
        }
        XCTAssertTrue(FusionPlan.canStack([layer("a", smoothing: [1, 2]), layer("b", smoothing: [1, 2])]))
        XCTAssertFalse(FusionPlan.canStack([layer("a", smoothing: [1, 2]), layer("b", smoothing: [1, 3])]))
        XCTAssertFalse(FusionPlan.canStack([layer("a", smoothing: [1, 2]), Linear(name: "dense", weight: w, bias: nil)]))
        XCTAssertTrue(FusionPlan.canStack([Linear(name: "a", weight: w, bias: nil), Linear(name: "b", weight: w, bias: nil)]))
    }
    /// A statically quantized 1×1 `proj_in`/`proj_out` convolution becomes a quantized Linear on tokens (so a backend
    /// can run it as an 8-bit GEMM) that computes what the quantized convolution computes: same codes, weight scales
    /// and input scale. A dynamically quantized one stays a convolution (per-sample scales are not per-token ones).
    func testQuantizedTokenProjectionComputesTheConvolution() throws {
        var generator = TorchGenerator(seed: 3)
        let (batch, channels, out, side) = (2, 6, 5, 3)
        let weight = generator.randn([out, channels, 1, 1]), bias = generator.randn([out])
        let x = generator.randn([batch, channels, side, side])
        for (format, amax) in [(QuantizedFormat.int8, Float(1.7)), (.fp8, 2.5), (.int8, nil)] {
            let q = QuantizedWeight(quantizing: weight, format: format, perChannel: format == .int8)
            let conv = Conv2d(name: "proj_in", weight: q.dequantized(), bias: bias)
            conv.executionHook = SimulatedQuantizationHook(QuantizedLayer(name: "proj_in", kind: .conv2d, weight: q, inputAmax: amax,
                                                                          smoothing: nil, outputAmax: nil))
            guard let amax else {
                XCTAssertNil(FusionPlan.tokenProjection(conv), "dynamic: stays a convolution")
                continue
            }
            let linear = try XCTUnwrap(FusionPlan.tokenProjection(conv))
            let layer = try XCTUnwrap(linear.quantization)
            XCTAssertEqual(layer.weight.shape, [out, channels])
            XCTAssertEqual(layer.weight.codes, q.codes)
            XCTAssertEqual(layer.inputAmax, amax)
            let expected = conv(x)  // [B, O, H, W]
            // tokens [B, H·W, C] → Linear → back to [B, O, H, W]
            let hw = side * side
            let tokens = Tensor(shape: [batch, hw, channels]) { t in
                for b in 0..<batch { for c in 0..<channels { for p in 0..<hw { t[(b * hw + p) * channels + c] = x.scalars[(b * channels + c) * hw + p] } } }
            }
            let y = linear(tokens)
            let actual = Tensor(shape: expected.shape) { t in
                for b in 0..<batch { for o in 0..<out { for p in 0..<hw { t[(b * out + o) * hw + p] = y.scalars[(b * hw + p) * out + o] } } }
            }
            XCTAssertLessThanOrEqual(actual.relativeL2(to: expected), 1e-6, "\(format)")
            // and the input really was quantized: the same layer without the hook differs
            XCTAssertGreaterThan(conv.fullPrecision(x).relativeL2(to: expected), 1e-4, "\(format)")
        }
    }
}
