import Foundation
import XCTest
@testable import Diffuse8

/// A LoRA on a quantized folder, merged into re-derived full-precision weights and re-quantized with the stored
/// statistics (no calibration run): (quantized + LoRA) must be as close to (FP + LoRA) as (quantized) is to (FP).
final class QuantizedLoRATests: XCTestCase {
    private var scratch: String!

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "d8-qlora-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: scratch) }

    /// The tiny fixture quantized at INT8 level 3 (α 0.8) with 5 calibration prompts × 4 steps, written to `path`.
    private func quantizedFixture(_ source: String, to path: String) throws {
        let fp = try StableDiffusionPipeline(directory: source)
        var options = CalibrationOptions(steps: 4)
        options.reservoirCapacity = 0
        let stats = try Calibrator.calibrate(fp, prompts: ["a red circle", "a blue square above a green triangle", "a yellow star",
                                                           "two purple dots", "a small red circle above a large blue square"], options: options)
        var recipe = QuantizationRecipe()
        recipe.level = .allLinear
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(fp.unet!, statistics: stats, recipe: recipe), to: path)
    }

    func testLoRAOnQuantizedFolderKeepsItsDistanceToFullPrecision() throws {
        let source = Fixtures.path("tiny-sd15")
        let quantized = scratch + "/q"
        try quantizedFixture(source, to: quantized)

        let lora = try LoRAFile(path: Fixtures.path("lora/tiny-sd15-kohya.safetensors"))
        let weight: Float = 0.25  // at 0.5 this random LoRA outweighs the tiny model's own weights (see docs/QUALITY.md)
        // four seeds: one image's PSNR moves by a dB or more when a re-quantization only re-draws roundings
        func images(_ directory: String, _ loras: [(file: LoRAFile, weight: Float)]) throws -> [PixelImage] {
            let pipeline = try StableDiffusionPipeline(directory: directory, loras: loras)
            XCTAssertEqual(pipeline.loraWarnings, [])
            return try (11...14).map { seed in
                let request = GenerationRequest(prompt: "a small red circle above a large blue square", steps: 4, guidanceScale: 5,
                                                seed: UInt64(seed), width: 64, height: 64)
                return ImageConversion.pixelImages(fromDecoded: try pipeline.generate(request).image)[0]
            }
        }
        func meanPSNR(_ a: [PixelImage], _ b: [PixelImage]) -> Double { zip(a, b).map { ImageMetrics.psnr($0, $1) }.reduce(0, +) / Double(a.count) }
        let (plainFP, plainQ) = (try images(source, []), try images(quantized, []))
        let (loraFP, loraQ) = (try images(source, [(lora, weight)]), try images(quantized, [(lora, weight)]))
        let without = meanPSNR(plainQ, plainFP), with = meanPSNR(loraQ, loraFP), change = meanPSNR(loraFP, plainFP)
        print("LoRA on the quantized tiny fixture: PSNR to FP \(with) dB with it, \(without) dB without; FP + LoRA vs FP \(change) dB")
        XCTAssertGreaterThan(with, without - 1, "PSNR to FP: \(with) dB with the LoRA, \(without) dB without")
        XCTAssertLessThan(change, with - 3, "the LoRA must change the image more than quantization does")

        // the re-quantized layers are really re-quantized: with the update, codes differ from the stored ones
        let q = try StableDiffusionPipeline(directory: quantized, loras: [(lora, weight)]).cpuUNet()
        let untouched = try StableDiffusionPipeline(directory: quantized).cpuUNet()
        let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        let a = q.linearLayers.first { $0.name == name }!, b = untouched.linearLayers.first { $0.name == name }!
        XCTAssertNotNil(a.quantization)
        XCTAssertNotEqual(a.quantization?.weight.codes, b.quantization?.weight.codes)
    }

    /// A LoRA too small for the stored 8-bit weights to represent leaves every quantized layer as it was, bit for bit
    /// (codes, scales, SmoothQuant factors, ranges); a larger one re-quantizes.
    func testUpdateBelowTheStoredResolutionLeavesTheQuantizedLayersBitForBit() throws {
        let source = Fixtures.path("tiny-sd15")
        let quantized = scratch + "/q"
        try quantizedFixture(source, to: quantized)
        let lora = try LoRAFile(path: Fixtures.path("lora/tiny-sd15-kohya.safetensors"))
        let plain = try StableDiffusionPipeline(directory: quantized, quantizedExecution: .simulated)
        let tiny = try StableDiffusionPipeline(directory: quantized, loras: [(lora, 1e-7)], quantizedExecution: .simulated)
        let small = try StableDiffusionPipeline(directory: quantized, loras: [(lora, 1e-2)], quantizedExecution: .simulated)
        func layers(_ p: StableDiffusionPipeline) throws -> [String: QuantizedLayer] {
            let unet = try p.cpuUNet()
            let all = unet.linearLayers.compactMap { $0.quantization } + unet.convolutionLayers.compactMap { $0.quantization }
            return Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
        }
        let (before, after, changed) = (try layers(plain), try layers(tiny), try layers(small))
        XCTAssertFalse(before.isEmpty)
        XCTAssertEqual(Set(before.keys), Set(after.keys))
        var requantized = 0
        for (name, a) in before {
            let b = try XCTUnwrap(after[name])
            XCTAssertTrue(a.weight.codes == b.weight.codes, "\(name): codes")
            XCTAssertTrue(a.weight.scales == b.weight.scales, "\(name): weight scales")
            XCTAssertTrue(a.smoothing == b.smoothing, "\(name): SmoothQuant factors")
            XCTAssertEqual(a.inputAmax, b.inputAmax, "\(name): input amax")
            if let c = changed[name], c.weight.codes != a.weight.codes { requantized += 1 }
        }
        XCTAssertGreaterThan(requantized, 0, "an update of weight 0.01 is above the resolution somewhere")
    }

    /// Layers quantized as one (attention Q/K/V, cross-attention K/V: one SmoothQuant vector and input amax) still share
    /// them after a LoRA re-quantizes some of them: the factors are re-derived from the stacked merged weights.
    func testLayersReadingOneTensorKeepSharingTheirFactors() throws {
        let source = Fixtures.path("tiny-sd15")
        let quantized = scratch + "/q"
        try quantizedFixture(source, to: quantized)
        let lora = try LoRAFile(path: Fixtures.path("lora/tiny-sd15-kohya.safetensors"))
        let plain = try StableDiffusionPipeline(directory: quantized, quantizedExecution: .simulated).cpuUNet()
        let merged = try StableDiffusionPipeline(directory: quantized, loras: [(lora, 0.25)], quantizedExecution: .simulated).cpuUNet()
        func groups(_ unet: UNet2DConditionModel) -> [[QuantizedLayer]] {
            unet.transformers.flatMap(\.blocks).flatMap { block in
                [[block.selfAttention.query, block.selfAttention.key, block.selfAttention.value],
                 [block.crossAttention.key, block.crossAttention.value]].map { $0.compactMap(\.quantization) }
            }
        }
        var rederived = 0
        for (before, after) in zip(groups(plain), groups(merged)) {
            XCTAssertGreaterThan(after.count, 1)
            for layer in before.dropFirst() { XCTAssertTrue(layer.smoothing == before[0].smoothing, "\(layer.name): the quantizer shares the factors") }
            for layer in after.dropFirst() {
                XCTAssertTrue(layer.smoothing == after[0].smoothing, "\(layer.name): SmoothQuant factors shared with \(after[0].name)")
                XCTAssertEqual(layer.inputAmax, after[0].inputAmax, "\(layer.name): input amax shared with \(after[0].name)")
            }
            if after[0].smoothing != before[0].smoothing { rederived += 1 }
        }
        XCTAssertGreaterThan(rederived, 0, "the LoRA changes some group's factors")
    }
}
