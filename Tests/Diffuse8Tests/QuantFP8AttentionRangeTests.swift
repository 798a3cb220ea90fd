import Foundation
import XCTest
@testable import Diffuse8

/// Level-4 FP8 attention with a calibrated probability amax: the rounding against a hand calculation, the
/// calibration statistic (recorded, merged, stored), the quantized folder key, and the FP8 preset.
final class QuantFP8AttentionRangeTests: XCTestCase {
    private var scratch: String!

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "d8-fp8attn-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: scratch) }

    /// One head of dim 16, one query, four keys whose scores are ln 4, ln 2, 0, 0 (q = e0, k_j = 4·ln w_j · e0,
    /// scale 1/√16): probabilities 4/8, 2/8, 1/8, 1/8. V = the first four unit vectors, so O = P̂.
    private func tinyAttention() -> (q: Tensor, k: Tensor, v: Tensor) {
        let d = 16, weights: [Float] = [4, 2, 1, 1]
        var q = [Float](repeating: 0, count: d), k = [Float](repeating: 0, count: 4 * d), v = [Float](repeating: 0, count: 4 * d)
        q[0] = 1
        for j in 0..<4 {
            k[j * d] = 4 * Float(log(Double(weights[j])))
            v[j * d + j] = 1
        }
        return (Tensor(shape: [1, 1, d], scalars: q), Tensor(shape: [1, 4, d], scalars: k), Tensor(shape: [1, 4, d], scalars: v))
    }

    func testProbabilityRoundingAndSaturationByHand() {
        let (q, k, v) = tinyAttention()
        // amax 1 (folders without a calibrated value): P·448 = 224, 112, 56, 56 are E4M3 values, so P is exact.
        let unit = FP8AttentionSimulation.attention(query: q, key: k, value: v, heads: 1)
        for (got, want) in zip(unit.scalars.prefix(4), [0.5, 0.25, 0.125, 0.125] as [Float]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        XCTAssertEqual(Array(unit.scalars.dropFirst(4)), [Float](repeating: 0, count: 12))

        // amax 0.4: scale 0.4/448. 0.5 → 560 saturates to 448 → 0.4; 0.25 → 280 rounds to 288 (grid 32 in
        // [256, 512)) → 288·0.4/448; 0.125 → 140 rounds to 144 (grid 16 in [128, 256)) → 144·0.4/448.
        let calibrated = FP8AttentionSimulation.attention(query: q, key: k, value: v, heads: 1, probabilityAmax: 0.4)
        let expected: [Float] = [0.4, 288 * 0.4 / 448, 144 * 0.4 / 448, 144 * 0.4 / 448]
        for (got, want) in zip(calibrated.scalars.prefix(4), expected) { XCTAssertEqual(got, want, accuracy: 1e-6) }

        // amax 0.6: 0.5 → 373.33 rounds to 384 (grid 32) → 384·0.6/448 (no saturation below the amax).
        let wide = FP8AttentionSimulation.attention(query: q, key: k, value: v, heads: 1, probabilityAmax: 0.6)
        XCTAssertEqual(wide.scalars[0], 384 * 0.6 / 448, accuracy: 1e-6)

        // The calibration statistic: the largest probability, 1/2.
        XCTAssertEqual(FP8AttentionSimulation.maxProbability(query: q, key: k, heads: 1), 0.5, accuracy: 1e-6)
    }

    func testMaxProbabilityMatchesADoubleReference() {
        var g = TorchGenerator(seed: 21)
        let heads = 2, d = 16
        let q = g.randn([2, 5, heads * d]), k = g.randn([2, 9, heads * d])
        let width = heads * d
        var reference = 0.0
        for b in 0..<2 { for h in 0..<heads { for i in 0..<5 {
            var scores: [Double] = []
            for j in 0..<9 {
                var dot = 0.0
                for t in 0..<d {
                    let qv = Double(q.scalars[(b * 5 + i) * width + h * d + t]), kv = Double(k.scalars[(b * 9 + j) * width + h * d + t])
                    dot += qv * kv
                }
                scores.append(dot / 4)  // 1/√16
            }
            let m = scores.max()!
            var sum = 0.0
            for x in scores { sum += exp(x - m) }
            reference = max(reference, 1 / sum)
        } } }
        XCTAssertEqual(Double(FP8AttentionSimulation.maxProbability(query: q, key: k, heads: heads)), reference, accuracy: 1e-5)
    }

    private func calibrate(_ pipeline: StableDiffusionPipeline, prompts: [String], shard: (Int, Int) = (0, 1)) throws -> CalibrationStatistics {
        var o = CalibrationOptions(steps: 2)
        o.shardIndex = shard.0
        o.shardCount = shard.1
        o.reservoirCapacity = 0
        return try Calibrator.calibrate(pipeline, prompts: prompts, options: o)
    }

    func testCalibrationRecordsMergesAndStoresTheProbabilityAmax() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        let prompts = ["a red circle", "a blue square above a green triangle", "a yellow star"]
        let whole = try calibrate(pipeline, prompts: prompts)
        let queries = whole.layers.filter { $0.name.hasSuffix(".to_q") }
        XCTAssertFalse(queries.isEmpty)
        for layer in whole.layers {
            guard let p = layer.probabilityAmax else { XCTAssertFalse(layer.name.hasSuffix(".to_q"), layer.name); continue }
            XCTAssertTrue(layer.name.hasSuffix(".to_q"), layer.name)
            // A probability; and a row's largest probability is at least 1/keys (cross-attention reads 77 tokens).
            for value in p { XCTAssertLessThanOrEqual(value, 1); XCTAssertGreaterThanOrEqual(value, 1 / 77 - 1e-6) }
        }

        // Shards merge to the one-shard run: the per-step max of the parts.
        let parts = try [(0, 2), (1, 2)].map { try calibrate(pipeline, prompts: prompts, shard: $0) }
        let merged = try CalibrationStatistics.merge(parts)
        XCTAssertEqual(merged.layers, whole.layers)
        let name = queries[0].name
        let a = try XCTUnwrap(parts[0].layer(named: name)?.probabilityAmax), b = try XCTUnwrap(parts[1].layer(named: name)?.probabilityAmax)
        XCTAssertEqual(merged.layer(named: name)?.probabilityAmax, zip(a, b).map { max($0, $1) })

        // The file keeps it; a shard written before the field existed merges to statistics without it.
        let path = scratch + "/s.d8s"
        try CalibrationStatisticsFile.write(merged, to: path)
        XCTAssertEqual(try CalibrationStatisticsFile.read(path), merged)
        var old = parts[1]
        for i in old.layers.indices { old.layers[i].probabilityAmax = nil }
        let mixed = try CalibrationStatistics.merge([parts[0], old])
        XCTAssertTrue(mixed.layers.allSatisfy { $0.probabilityAmax == nil })
        XCTAssertEqual(mixed.layers.map(\.amaxMax), merged.layers.map(\.amaxMax))

        // A backend that does not compute the statistic (the protocol's default) leaves the statistics without it.
        let recorder = CalibrationRecorder(unet: pipeline.unet!, steps: 1, reservoirCapacity: 0)
        let recording = RecordingBackend(NoProbabilityBackend(), recorder: recorder)
        let firstQuery = pipeline.unet!.linearLayers.first { $0.name.hasSuffix(".to_q") }!
        _ = try recording.linear(try recording.upload(Tensor(shape: [1, 3, firstQuery.inFeatures], scalars: [Float](repeating: 0.5, count: 3 * firstQuery.inFeatures))), firstQuery, residual: nil)
        let c = Columns(try recording.upload(Tensor(shape: [1, 3, 32], scalars: [Float](repeating: 0.1, count: 96))), width: 32)
        _ = try recording.attention(query: c, key: c, value: c, heads: 1, causal: false, fp8: false)
        XCTAssertNil(recorder.statistics.first { $0.name == firstQuery.name }?.probabilityAmax)

        // A value outside [0, 1] in a file is refused with the tensor's name.
        var bad = merged
        let index = bad.layers.firstIndex { $0.name == name }!
        bad.layers[index].probabilityAmax![0] = 1.5
        try CalibrationStatisticsFile.write(bad, to: scratch + "/bad.d8s")
        XCTAssertThrowsError(try CalibrationStatisticsFile.read(scratch + "/bad.d8s")) {
            XCTAssertTrue("\($0)".contains("L\(index).probability_amax") && "\($0)".contains("[0, 1]"), "\($0)")
        }
    }

    func testLevel4FolderStoresAndLoadsTheProbabilityAmax() throws {
        let source = Fixtures.path("tiny-sd15")
        let pipeline = try StableDiffusionPipeline(directory: source)
        let stats = try calibrate(pipeline, prompts: ["a red circle", "a yellow star"])
        var recipe = try QuantizationRecipe.preset(named: "recommended", format: .fp8)
        recipe.level = .fp8Attention
        recipe.calibratedProbabilityRange = true
        let quantized = try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: recipe)
        XCTAssertFalse(quantized.fp8AttentionModules.isEmpty)
        for module in quantized.fp8AttentionModules {
            let recorded = stats.layer(named: module + ".to_q")!.probabilityAmax!.max()!
            if recorded < 1 { XCTAssertEqual(quantized.fp8ProbabilityAmax[module], recorded) }
        }
        XCTAssertFalse(quantized.fp8ProbabilityAmax.isEmpty)
        try QuantizedModelFolder.write(source: source, quantized: quantized, to: scratch + "/f8")
        let file = try SafetensorsFile(path: scratch + "/f8/unet/diffusion_pytorch_model.safetensors")
        let (module, amax) = quantized.fp8ProbabilityAmax.min { $0.key < $1.key }!
        XCTAssertEqual(try file.tensor(named: module + ".probability_amax").scalars, [amax])
        let loaded = try QuantizedModelFolder.loadUNet(directory: scratch + "/f8/unet")
        for attention in Quantizer.attentionModules(loaded) where attention.usesFP8Attention {
            let prefix = String(attention.query.name.dropLast(".to_q".count))
            XCTAssertEqual(attention.fp8ProbabilityAmax, quantized.fp8ProbabilityAmax[prefix] ?? 1, prefix)
        }

        // amax 1 (the default): no key written, and the loaded model rounds with 1, as folders written before the key.
        recipe.calibratedProbabilityRange = false
        let unit = try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: recipe)
        XCTAssertTrue(unit.fp8ProbabilityAmax.isEmpty)
        try QuantizedModelFolder.write(source: source, quantized: unit, to: scratch + "/f8unit")
        let unitFile = try SafetensorsFile(path: scratch + "/f8unit/unet/diffusion_pytorch_model.safetensors")
        XCTAssertFalse(unitFile.tensorNames.contains { $0.hasSuffix(".probability_amax") })
        let unitModel = try QuantizedModelFolder.loadUNet(directory: scratch + "/f8unit/unet")
        XCTAssertTrue(Quantizer.attentionModules(unitModel).filter(\.usesFP8Attention).allSatisfy { $0.fp8ProbabilityAmax == 1 })

        // A folder whose probability amax lies outside (0, 1] is refused with the tensor's name.
        var broken = quantized
        broken.fp8ProbabilityAmax[module] = 2
        try QuantizedModelFolder.write(source: source, quantized: broken, to: scratch + "/f8bad")
        XCTAssertThrowsError(try QuantizedModelFolder.loadUNet(directory: scratch + "/f8bad/unet")) {
            XCTAssertTrue("\($0)".contains(module + ".probability_amax") && "\($0)".contains("(0, 1]"), "\($0)")
        }
    }

    func testRecommendedPresetPerFormat() throws {
        let fp8 = try QuantizationRecipe.preset(named: "recommended", format: .fp8)
        XCTAssertEqual(fp8.format, .fp8)
        XCTAssertEqual(fp8.calibration, .max)
        XCTAssertEqual(fp8.smoothing, SmoothingChoice.none)
        XCTAssertNil(fp8.applicable(toCalibrationPrompts: 1).warning)  // nothing clips or smooths: no guard needed
        XCTAssertFalse(fp8.calibratedProbabilityRange)
        let int8 = try QuantizationRecipe.preset(named: "recommended", format: .int8)
        XCTAssertEqual(int8.format, .int8)
        XCTAssertEqual(int8.calibration, .percentile)
        XCTAssertEqual(int8.collectMethod, .meanMax)
        XCTAssertEqual(int8.smoothing, SmoothingChoice.fixed(0.8))
        XCTAssertEqual(int8.minimumCalibrationPrompts, 32)
        // The other presets do not depend on the format.
        let nvidia = try QuantizationRecipe.preset(named: "nvidia", format: .fp8)
        XCTAssertEqual(nvidia.collectMethod, .minMean)
        XCTAssertEqual(nvidia.smoothing, SmoothingChoice.fixed(0.8))
        XCTAssertEqual(try QuantizationRecipe.preset(named: "naive", format: .int8).calibration, .max)
        XCTAssertThrowsError(try QuantizationRecipe.preset(named: "fast", format: .fp8)) { XCTAssertTrue("\($0)".contains("recommended, nvidia or naive")) }
    }
}

/// The CPU backend without its probability statistic: what a backend that does not implement it records.
private final class NoProbabilityBackend: ModelBackend {
    typealias Value = Tensor
    let cpu = CPUBackend.shared
    func fusionPlan(for model: AnyObject) -> FusionPlan? { nil }
    func shape(of x: Tensor) -> [Int] { x.shape }
    func upload(_ x: Tensor) -> Tensor { x }
    func download(_ x: Tensor) -> Tensor { x }
    func reshape(_ x: Tensor, _ shape: [Int]) throws -> Tensor { try cpu.reshape(x, shape) }
    func linear(_ x: Tensor, _ layer: Linear, residual: Tensor?) throws -> Tensor { try cpu.linear(x, layer, residual: residual) }
    func stackedLinear(_ x: Tensor, _ stack: LinearStack) throws -> Tensor { try cpu.stackedLinear(x, stack) }
    func conv2d(_ x: Tensor, _ layer: Conv2d) throws -> Tensor { try cpu.conv2d(x, layer) }
    func groupNorm(_ x: Tensor, _ norm: GroupNorm, silu: Bool) throws -> Tensor { try cpu.groupNorm(x, norm, silu: silu) }
    func layerNorm(_ x: Tensor, _ norm: LayerNorm) throws -> Tensor { try cpu.layerNorm(x, norm) }
    func attention(query: Columns<Tensor>, key: Columns<Tensor>, value: Columns<Tensor>, heads: Int, causal: Bool, fp8: Bool) throws -> Tensor {
        try cpu.attention(query: query, key: key, value: value, heads: heads, causal: causal, fp8: fp8)
    }
    func silu(_ x: Tensor) throws -> Tensor { try cpu.silu(x) }
    func gelu(_ x: Tensor) throws -> Tensor { try cpu.gelu(x) }
    func quickGELU(_ x: Tensor) throws -> Tensor { try cpu.quickGELU(x) }
    func geglu(_ x: Tensor) throws -> Tensor { try cpu.geglu(x) }
    func add(_ a: Tensor, _ b: Tensor) throws -> Tensor { try cpu.add(a, b) }
    func affine(_ x: Tensor, scale: Float, shift: Float) throws -> Tensor { try cpu.affine(x, scale: scale, shift: shift) }
    func addChannelVector(_ x: Tensor, _ rows: Tensor, offset: Int) throws -> Tensor { try cpu.addChannelVector(x, rows, offset: offset) }
    func resnetOutput(_ h: Tensor, residual: Tensor, block: ResnetBlock2D) throws -> Tensor { try cpu.resnetOutput(h, residual: residual, block: block) }
    func concatChannels(_ a: Tensor, _ b: Tensor) throws -> Tensor { try cpu.concatChannels(a, b) }
    func concatColumns(_ a: Tensor, _ b: Tensor) throws -> Tensor { try cpu.concatColumns(a, b) }
    func channelsToTokens(_ x: Tensor) throws -> Tensor { try cpu.channelsToTokens(x) }
    func tokensToChannels(_ x: Tensor, height: Int, width: Int, residual: Tensor?) throws -> Tensor {
        try cpu.tokensToChannels(x, height: height, width: width, residual: residual)
    }
    func upsampleNearest(_ x: Tensor, height: Int, width: Int) throws -> Tensor { try cpu.upsampleNearest(x, height: height, width: width) }
    func padRightBottom(_ x: Tensor) throws -> Tensor { try cpu.padRightBottom(x) }
    func gatherRows(_ x: Tensor, positions: [Int]) throws -> Tensor { try cpu.gatherRows(x, positions: positions) }
    func absMax(_ x: Tensor) throws -> Float { try cpu.absMax(x) }
    func columnAbsMax(_ x: Tensor) throws -> [Float] { try cpu.columnAbsMax(x) }
    func rows(_ x: Tensor, _ indices: [Int]) throws -> [[Float]] { try cpu.rows(x, indices) }
}
