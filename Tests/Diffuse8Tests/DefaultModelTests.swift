import Foundation
import XCTest
@testable import Diffuse8

/// The embedded default model (`models/default`): the Swift pipeline matches diffusers on it
/// (`tools/reference/default_model.py`: 2 held-out prompts × seeds 0, 1, Euler, CFG 5, 8 steps), and
/// `DefaultModel.locate()` finds it.
final class DefaultModelTests: XCTestCase {
    private var modelDirectory: String { Fixtures.root + "/../../models/default" }

    private struct Case: Decodable { let prompt: String; let seed: UInt64 }

    func testSwiftPipelineMatchesDiffusersOnTheDefaultModel() throws {
        let reference = try Fixtures.reference("default_model")
        let cases = try JSONDecoder().decode([Case].self, from: Data(reference.metadata["cases"]!.utf8))
        XCTAssertEqual(cases.count, 4)
        let steps = Int(reference.metadata["steps"]!)!, guidance = Float(reference.metadata["guidance"]!)!
        let pipeline = try StableDiffusionPipeline(directory: modelDirectory)
        for (k, c) in cases.enumerated() {
            let request = GenerationRequest(prompt: c.prompt, steps: steps, guidanceScale: guidance, seed: c.seed, scheduler: .euler)
            let result = try pipeline.generate(request)
            let expectedLatents = try reference.tensor(named: "case\(k).latents")
            XCTAssertEqual(result.latents.shape, expectedLatents.shape)
            let latentError = result.latents.relativeL2(to: expectedLatents)
            XCTAssertLessThan(latentError, 1e-3, "case \(k) (\(c.prompt), seed \(c.seed)): final latents relative L2 \(latentError)")

            let entry = try reference.entry(named: "case\(k).image")
            XCTAssertEqual(entry.shape, [64, 64, 3])
            let expectedImage = Array(try reference.rawBytes(named: "case\(k).image"))
            let image = ImageConversion.pixelImages(fromDecoded: result.image)[0]
            XCTAssertEqual([image.height, image.width, image.channels], entry.shape)
            let meanAbsoluteDifference = zip(image.pixels, expectedImage)
                .map { abs(Double($0.0) - Double($0.1)) }.reduce(0, +) / Double(image.pixels.count)
            XCTAssertLessThanOrEqual(meanAbsoluteDifference, 1.0, "case \(k): image MAD \(meanAbsoluteDifference) grey levels")
            print("default model case \(k): latents relative L2 \(latentError), image MAD \(meanAbsoluteDifference) grey levels")
        }
    }

    func testLocateFindsTheEmbeddedModel() throws {
        if let variable = ProcessInfo.processInfo.environment[DefaultModel.environmentVariable], !variable.isEmpty {
            throw XCTSkip("\(DefaultModel.environmentVariable) is set; locate() returns it first")
        }
        let located = try DefaultModel.locate()
        let resolved = URL(fileURLWithPath: located).standardizedFileURL.resolvingSymlinksInPath().path
        let expected = URL(fileURLWithPath: modelDirectory).standardizedFileURL.resolvingSymlinksInPath().path
        XCTAssertEqual(resolved, expected)
        XCTAssertTrue(FileManager.default.fileExists(atPath: located + "/unet/diffusion_pytorch_model.safetensors"))
    }
}
