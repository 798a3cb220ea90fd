import Foundation
import XCTest
@testable import Diffuse8

/// Calibration statistics on the tiny SD1.5 fixture: exact shard merging, the file format, refusals of
/// statistics from another model or T, and the quantized model folder round trip.
final class QuantCalibrationTests: XCTestCase {
    static let prompts = ["a red circle", "a blue square above a green triangle", "a yellow star", "two purple dots"]
    private var scratch: String!

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "d8-quant-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: scratch) }

    private func calibrate(_ pipeline: StableDiffusionPipeline, steps: Int = 2, shard: (Int, Int) = (0, 1), batch: Int = 1) throws -> CalibrationStatistics {
        var o = CalibrationOptions(steps: steps)
        o.shardIndex = shard.0
        o.shardCount = shard.1
        o.batchSize = batch
        o.reservoirCapacity = 16
        return try Calibrator.calibrate(pipeline, prompts: Self.prompts, options: o)
    }

    func testShardsMergeExactlyAndFilesRoundTrip() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        let whole = try calibrate(pipeline)
        let parts = try [(0, 3), (1, 3), (2, 3)].map { try calibrate(pipeline, shard: $0) }
        let merged = try CalibrationStatistics.merge([parts[2], parts[0], parts[1]])
        XCTAssertTrue(merged.isComplete)
        XCTAssertEqual(merged.layers, whole.layers)  // sums, max, min, counts, channel amax, reservoirs: bit-identical
        // Every step saw one batch per prompt; a Linear layer has a full reservoir and Q/K/V output amax.
        XCTAssertEqual(whole.layers[0].batchCount, [4, 4])
        let toQ = try XCTUnwrap(whole.layers.first { $0.name.hasSuffix("attn1.to_q") })
        XCTAssertEqual(toQ.reservoir?.count, 16)
        XCTAssertNotNil(toQ.outputAmax)
        XCTAssertGreaterThan(toQ.channelAmax!.max()!, 0)
        // Per-step statistics are consistent: min ≤ mean ≤ max.
        for layer in whole.layers { for t in 0..<2 {
            XCTAssertLessThanOrEqual(Double(layer.amaxMin[t]), layer.amaxSum[t] / layer.batchCount[t] + 1e-6)
            XCTAssertLessThanOrEqual(layer.amaxSum[t] / layer.batchCount[t], Double(layer.amaxMax[t]) + 1e-6)
        } }

        let path = scratch + "/s.d8s"
        try CalibrationStatisticsFile.write(merged, to: path)
        XCTAssertEqual(try CalibrationStatisticsFile.read(path), merged)

        // Batches of 2 prompts: 2 batches per step, each the max over its prompts.
        let batched = try calibrate(pipeline, batch: 2)
        XCTAssertEqual(batched.layers[0].batchCount, [2, 2])
        XCTAssertEqual(batched.layers[0].amaxMax, whole.layers[0].amaxMax)

        // Refusals: another T, the same shard twice, another model.
        let otherT = try calibrate(pipeline, steps: 3, shard: (0, 3))
        XCTAssertThrowsError(try CalibrationStatistics.merge([parts[1], otherT])) { XCTAssertTrue("\($0)".contains("calibration steps")) }
        XCTAssertThrowsError(try CalibrationStatistics.merge([parts[0], parts[0]])) { XCTAssertTrue("\($0)".contains("repeats shard")) }
        var foreign = parts[1]
        foreign.provenance.modelFingerprint = "0000000000000000"
        XCTAssertThrowsError(try CalibrationStatistics.merge([parts[0], foreign])) { XCTAssertTrue("\($0)".contains("another model")) }
        XCTAssertThrowsError(try Quantizer.quantize(pipeline.unet!, statistics: foreign, recipe: QuantizationRecipe())) {
            XCTAssertTrue("\($0)".contains("another model"))
        }
    }

    func testDamagedOrForeignFilesAreRejected() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        var o = CalibrationOptions(steps: 1)
        o.reservoirCapacity = 0
        let stats = try Calibrator.calibrate(pipeline, prompts: ["a red circle"], options: o)
        let path = scratch + "/s.d8s"
        try CalibrationStatisticsFile.write(stats, to: path)
        // A truncated file (what a crash mid-write would leave without the atomic rename) does not load.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: scratch + "/cut.d8s"))
        XCTAssertThrowsError(try CalibrationStatisticsFile.read(scratch + "/cut.d8s"))
        // A plain safetensors file is not statistics.
        XCTAssertThrowsError(try CalibrationStatisticsFile.read(Fixtures.path("tiny-sd15/unet/diffusion_pytorch_model.safetensors"))) {
            XCTAssertTrue("\($0)".contains("not a Diffuse8 calibration statistics file"))
        }
        // α search without sampled rows: clear error.
        var recipe = QuantizationRecipe()
        recipe.smoothing = .search
        XCTAssertThrowsError(try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: recipe)) { XCTAssertTrue("\($0)".contains("--reservoir-rows")) }
        // Prompt files: comments and blanks skipped; empty → error.
        try "# header\n\n  a red circle \n#x\nblue\n".write(toFile: scratch + "/p.txt", atomically: true, encoding: .utf8)
        XCTAssertEqual(try Calibrator.readPrompts(scratch + "/p.txt"), ["a red circle", "blue"])
        try "# only comments\n\n".write(toFile: scratch + "/empty.txt", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Calibrator.readPrompts(scratch + "/empty.txt")) { XCTAssertTrue("\($0)".contains("no prompts")) }
    }

    func testQuantizedFolderRoundTripAndSimulatedUNet() throws {
        let source = Fixtures.path("tiny-sd15")
        let pipeline = try StableDiffusionPipeline(directory: source)
        let stats = try calibrate(pipeline)
        var recipe = QuantizationRecipe()
        recipe.smoothing = .search
        let quantized = try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: recipe)
        XCTAssertFalse(quantized.layers.contains { QuantizationLevel.isExcluded($0.name) })
        XCTAssertEqual(quantized.alphas.count + quantized.unsmoothedLayers.count, quantized.layers.filter { $0.kind == .linear }.count)
        let output = scratch + "/q"
        try QuantizedModelFolder.write(source: source, quantized: quantized, to: output)
        XCTAssertThrowsError(try QuantizedModelFolder.write(source: source, quantized: quantized, to: output)) { XCTAssertTrue("\($0)".contains("already exists")) }

        let file = try SafetensorsFile(path: output + "/unet/diffusion_pytorch_model.safetensors")
        let first = quantized.layers[0]
        XCTAssertEqual(try file.entry(named: first.name + ".weight").dtype, .i8)
        XCTAssertEqual(Array(try file.rawBytes(named: first.name + ".weight")), first.weight.codes)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/unet/quantization.json"))) as! [String: Any]
        XCTAssertEqual(manifest["format"] as? String, "int8")
        XCTAssertEqual(manifest["level"] as? String, "3")
        XCTAssertEqual(manifest["calibration_steps"] as? Int, 2)

        let loaded = try StableDiffusionPipeline(directory: output)
        let hooked = loaded.unet!.linearLayers.filter { $0.executionHook != nil }.count + loaded.unet!.convolutionLayers.filter { $0.executionHook != nil }.count
        XCTAssertEqual(hooked, quantized.layers.count)
        // The loaded UNet computes what the in-memory quantized layers define, and stays close to FP.
        let sample = TorchGenerator(seed: 3).randnTensor([2, 4, 8, 8])
        var g = TorchGenerator(seed: 4)
        let context = g.randn([2, 77, pipeline.unet!.configuration.crossAttentionDim[0]])
        let fp = pipeline.unet!(sample: sample, timestep: 500, encoderHiddenStates: context)
        let q = loaded.unet!(sample: sample, timestep: 500, encoderHiddenStates: context)
        XCTAssertGreaterThan(ImageMetrics.sqnr(reference: fp, q), 20)
        XCTAssertLessThan(ImageMetrics.sqnr(reference: fp, q), 200)  // it is quantized, not FP

        // FP8 level 4 and dynamic INT8 also load and run.
        recipe.format = .fp8
        recipe.level = .fp8Attention
        recipe.smoothing = .fixed(0.8)
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: recipe), to: scratch + "/f8")
        let f8 = try StableDiffusionPipeline(directory: scratch + "/f8")
        XCTAssertGreaterThan(ImageMetrics.sqnr(reference: fp, f8.unet!(sample: sample, timestep: 500, encoderHiddenStates: context)), 15)
        var dynamic = QuantizationRecipe()
        dynamic.dynamic = true
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(pipeline.unet!, statistics: nil, recipe: dynamic), to: scratch + "/dyn")
        let dyn = try StableDiffusionPipeline(directory: scratch + "/dyn")
        XCTAssertGreaterThan(ImageMetrics.sqnr(reference: fp, dyn.unet!(sample: sample, timestep: 500, encoderHiddenStates: context)), 20)
    }

    func testFP8AttentionSimulationQuantizesProbabilities() {
        // One head, head_dim 16: with FP8 probabilities the result differs from FP32 SDPA only slightly.
        var g = TorchGenerator(seed: 9)
        let q = g.randn([1, 5, 16]), k = g.randn([1, 7, 16]), v = g.randn([1, 7, 16])
        let exact = CPUKernels.attention(query: q, key: k, value: v, heads: 1)
        let simulated = FP8AttentionSimulation.attention(query: q, key: k, value: v, heads: 1)
        let error = simulated.relativeL2(to: exact)
        XCTAssertGreaterThan(error, 0)
        XCTAssertLessThan(error, 0.05)
    }
}

private extension TorchGenerator {
    func randnTensor(_ shape: [Int]) -> Tensor {
        var copy = self
        return copy.randn(shape)
    }
}
