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

    func testLoRAOnQuantizedFolderKeepsItsDistanceToFullPrecision() throws {
        let source = Fixtures.path("tiny-sd15")
        let fp = try StableDiffusionPipeline(directory: source)
        var options = CalibrationOptions(steps: 4)
        options.reservoirCapacity = 0
        let stats = try Calibrator.calibrate(fp, prompts: ["a red circle", "a blue square above a green triangle", "a yellow star",
                                                           "two purple dots", "a small red circle above a large blue square"], options: options)
        var recipe = QuantizationRecipe()
        recipe.level = .allLinear
        let quantized = scratch + "/q"
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(fp.unet!, statistics: stats, recipe: recipe), to: quantized)

        let lora = try LoRAFile(path: Fixtures.path("lora/tiny-sd15-kohya.safetensors"))
        let weight: Float = 0.25  // at 0.5 this random LoRA outweighs the tiny model's own weights (see docs/QUALITY.md)
        func image(_ directory: String, _ loras: [(file: LoRAFile, weight: Float)]) throws -> PixelImage {
            let pipeline = try StableDiffusionPipeline(directory: directory, loras: loras)
            XCTAssertEqual(pipeline.loraWarnings, [])
            let request = GenerationRequest(prompt: "a small red circle above a large blue square", steps: 4, guidanceScale: 5,
                                            seed: 11, width: 64, height: 64)
            return ImageConversion.pixelImages(fromDecoded: try pipeline.generate(request).image)[0]
        }
        let (plainFP, plainQ) = (try image(source, []), try image(quantized, []))
        let (loraFP, loraQ) = (try image(source, [(lora, weight)]), try image(quantized, [(lora, weight)]))
        let without = ImageMetrics.psnr(plainQ, plainFP), with = ImageMetrics.psnr(loraQ, loraFP)
        XCTAssertGreaterThan(with, without - 1, "PSNR to FP: \(with) dB with the LoRA, \(without) dB without")
        XCTAssertLessThan(ImageMetrics.psnr(loraFP, plainFP), with - 3, "the LoRA must change the image more than quantization does")

        // the re-quantized layers are really re-quantized: with the update, codes differ from the stored ones
        let q = try StableDiffusionPipeline(directory: quantized, loras: [(lora, weight)]).cpuUNet()
        let untouched = try StableDiffusionPipeline(directory: quantized).cpuUNet()
        let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        let a = q.linearLayers.first { $0.name == name }!, b = untouched.linearLayers.first { $0.name == name }!
        XCTAssertNotNil(a.quantization)
        XCTAssertNotEqual(a.quantization?.weight.codes, b.quantization?.weight.codes)
    }
}
