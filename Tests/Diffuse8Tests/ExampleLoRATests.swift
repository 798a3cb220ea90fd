import Foundation
import XCTest
@testable import Diffuse8

/// The shipped example LoRA (`models/examples/red-to-blue.safetensors`, trained by `tools/train_colour_lora.py`) for
/// the default model. It is what `docs/QUALITY.md` measures LoRA-on-quantized quality with, so it must be a LoRA
/// that a quantized model can follow: an edit that overshoots (an update several times the size of the layer's own weight, reaching
/// past "blue") makes the whole network amplify small perturbations — a 1 % weight noise in the layers it does not
/// touch then costs 17 dB — and no 8-bit model, recalibrated or not, stays close to it.
final class ExampleLoRATests: XCTestCase {
    private var model: String { Fixtures.root + "/../../models/default" }
    private var example: String { Fixtures.root + "/../../models/examples/red-to-blue.safetensors" }

    /// Every module's update (alpha / rank) · up · down, computed here from the raw tensors, is at most half the
    /// Frobenius norm of the weight it is added to.
    func testUpdatesAreSmallBesideTheWeightsTheyEdit() throws {
        let lora = try SafetensorsFile(path: example)
        let unet = try SafetensorsFile(path: model + "/unet/diffusion_pytorch_model.safetensors")
        let weightNames = Dictionary(uniqueKeysWithValues: unet.tensorNames.filter { $0.hasSuffix(".weight") }
            .map { ("lora_unet_" + $0.dropLast(".weight".count).replacingOccurrences(of: ".", with: "_"), $0) })
        let stems = lora.tensorNames.filter { $0.hasSuffix(".lora_up.weight") }.map { String($0.dropLast(".lora_up.weight".count)) }
        // every cross-attention key and value projection (22), and nothing outside the attention projections
        let crossAttentionKV = weightNames.keys.filter { $0.hasSuffix("_attn2_to_k") || $0.hasSuffix("_attn2_to_v") }
        XCTAssertEqual(crossAttentionKV.count, 22)
        XCTAssertTrue(Set(crossAttentionKV).isSubset(of: stems), "\(Set(crossAttentionKV).subtracting(stems).sorted().prefix(3))")
        let projections = ["_to_q", "_to_k", "_to_v", "_to_out_0"]
        for stem in stems {
            XCTAssertTrue((stem.contains("_attn1_") || stem.contains("_attn2_")) && projections.contains { stem.hasSuffix($0) }, stem)
        }
        for stem in stems {
            let up = try lora.tensor(named: stem + ".lora_up.weight"), down = try lora.tensor(named: stem + ".lora_down.weight")
            let rank = down.shape[0], inner = down.shape[1], out = up.shape[0]
            let scale = Double(try lora.tensor(named: stem + ".alpha").scalars[0]) / Double(rank)
            let weight = try unet.tensor(named: XCTUnwrap(weightNames[stem], "\(stem) names no UNet weight"))
            XCTAssertEqual(weight.shape, [out, inner])
            var update = 0.0, own = 0.0
            for o in 0..<out {
                for i in 0..<inner {
                    var sum = 0.0
                    for r in 0..<rank { sum += Double(up.scalars[o * rank + r]) * Double(down.scalars[r * inner + i]) }
                    update += scale * scale * sum * sum
                    own += Double(weight.scalars[o * inner + i]) * Double(weight.scalars[o * inner + i])
                }
            }
            XCTAssertLessThan(update.squareRoot(), 0.5 * own.squareRoot(), "\(stem): |ΔW| \(update.squareRoot()), |W| \(own.squareRoot())")
        }
    }

    /// At weight 1 the red shapes of the full-precision model's picture turn blue (and stay where they were).
    func testRedShapesTurnBlue() throws {
        let prompts = ["a large red circle above a small green square on a white background", "a large red square below a small blue circle"]
        func images(_ loras: [(file: LoRAFile, weight: Float)]) throws -> [PixelImage] {
            let pipeline = try StableDiffusionPipeline(directory: model, loras: loras)
            XCTAssertEqual(pipeline.loraWarnings, [])
            return try prompts.map { prompt in
                let request = GenerationRequest(prompt: prompt, steps: 8, guidanceScale: 7.5, seed: 0)
                return ImageConversion.pixelImages(fromDecoded: try pipeline.generate(request).image)[0]
            }
        }
        let plain = try images([]), edited = try images([(try LoRAFile(path: example), 1)])
        for (prompt, (before, after)) in zip(prompts, zip(plain, edited)) {
            var red = 0, blue = 0
            for p in stride(from: 0, to: before.pixels.count, by: before.channels) {
                let (r0, g0, b0) = (Int(before.pixels[p]), Int(before.pixels[p + 1]), Int(before.pixels[p + 2]))
                let (r1, g1, b1) = (Int(after.pixels[p]), Int(after.pixels[p + 1]), Int(after.pixels[p + 2]))
                if r0 > 150, g0 < 90, b0 < 90 {
                    red += 1
                    if b1 > 150, r1 < 120, g1 < 150 { blue += 1 }
                }
            }
            XCTAssertGreaterThan(red, 100, "'\(prompt)' draws a red shape without the LoRA")
            XCTAssertGreaterThan(Double(blue), 0.75 * Double(red), "'\(prompt)': \(blue) of \(red) red pixels turn blue with the LoRA")
        }
    }
}
