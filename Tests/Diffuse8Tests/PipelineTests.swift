import XCTest
@testable import Diffuse8

/// Whole-pipeline parity with diffusers (`tools/reference/pipeline.py`): same prompt, negative prompt, seed,
/// steps and guidance give the same final latents and the same 8-bit image, for every scheduler.
final class PipelineTests: XCTestCase {
    func testSD15PipelineMatchesDiffusersForEveryScheduler() throws {
        try checkPipeline(folder: "tiny-sd15", reference: "pipeline_sd15")
    }

    func testSDXLPipelineMatchesDiffusersForEveryScheduler() throws {
        try checkPipeline(folder: "tiny-sdxl", reference: "pipeline_sdxl")
    }

    private func checkPipeline(folder: String, reference name: String) throws {
        let reference = try Fixtures.reference(name)
        let settings = reference.metadata
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path(folder))
        for kind in SchedulerKind.allCases {
            let request = GenerationRequest(
                prompt: settings["prompt"]!, negativePrompt: settings["negative_prompt"]!,
                steps: Int(settings["steps"]!)!, guidanceScale: Float(settings["guidance"]!)!,
                seed: UInt64(settings["seed"]!)!, width: Int(settings["width"]!)!, height: Int(settings["height"]!)!,
                scheduler: kind)
            let result = try pipeline.generate(request)
            let expectedLatents = try reference.tensor(named: "\(kind.rawValue).latents")
            let latentError = result.latents.relativeL2(to: expectedLatents)
            XCTAssertLessThan(latentError, 1e-3, "\(folder) \(kind.rawValue): final latents relative L2 \(latentError)")

            let expectedImage = try reference.tensor(named: "\(kind.rawValue).image")  // HWC, 0…255
            let image = ImageConversion.pixelImages(fromDecoded: result.image)[0]
            XCTAssertEqual(image.pixels.count, expectedImage.count)
            let meanAbsoluteDifference = zip(image.pixels, expectedImage.scalars)
                .map { abs(Double($0.0) - Double($0.1)) }.reduce(0, +) / Double(image.pixels.count)
            XCTAssertLessThanOrEqual(meanAbsoluteDifference, 1.0, "\(folder) \(kind.rawValue): image MAD \(meanAbsoluteDifference) grey levels")
        }
    }

    func testSizeThatIsNotAMultipleOfEightIsRejectedBeforeAnyWork() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        let request = GenerationRequest(prompt: "x", steps: 2, width: 60, height: 64)
        XCTAssertThrowsError(try pipeline.generate(request)) { error in
            XCTAssertTrue("\(error)".contains("width 60"), "\(error)")
        }
    }
}
