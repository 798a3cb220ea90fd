import XCTest
@testable import Diffuse8
import Diffuse8PNG

/// Image-to-image against diffusers' `StableDiffusionImg2ImgPipeline` (`tools/reference/img2img.py`): same init
/// image, prompt, strength, steps and seed give the same latents and image, for every scheduler.
final class ImageToImageTests: XCTestCase {
    func testImg2ImgMatchesDiffusersForEveryScheduler() throws {
        let reference = try Fixtures.reference("img2img")
        let s = reference.metadata
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        let initImage = try PNGDecoder.read(path: Fixtures.path("img2img/init.png")).image
        for kind in SchedulerKind.allCases {
            var request = GenerationRequest(prompt: s["prompt"]!, negativePrompt: s["negative_prompt"]!, steps: Int(s["steps"]!)!,
                                            guidanceScale: Float(s["guidance"]!)!, seed: UInt64(s["seed"]!)!,
                                            width: initImage.width, height: initImage.height, scheduler: kind)
            request.initImage = ImageConversion.initImageTensor(initImage)
            request.strength = Float(s["strength"]!)!
            var progress: [Int] = []
            let result = try pipeline.generate(request) { progress.append($0.totalSteps) }
            XCTAssertEqual(progress.count, 3, "\(kind.rawValue): int(5 × 0.6) = 3 steps run")
            try Fixtures.assertMatches(result, reference, key: kind.rawValue)
        }
    }

    func testSDXLImg2ImgMatchesDiffusersXLImg2ImgPipeline() throws {
        let reference = try Fixtures.reference("img2img")
        let s = reference.metadata
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sdxl"))
        let initImage = try PNGDecoder.read(path: Fixtures.path("img2img/init.png")).image
        var request = GenerationRequest(prompt: s["prompt"]!, negativePrompt: s["negative_prompt"]!, steps: Int(s["steps"]!)!,
                                        guidanceScale: Float(s["guidance"]!)!, seed: UInt64(s["seed"]!)!,
                                        width: initImage.width, height: initImage.height, scheduler: .euler)
        request.initImage = ImageConversion.initImageTensor(initImage)
        request.strength = Float(s["strength"]!)!
        let result = try pipeline.generate(request)
        try Fixtures.assertMatches(result, reference, key: "sdxl-euler")
    }

    func testStrengthOutsideUnitIntervalAndWrongSizeAreRejected() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        let initImage = try PNGDecoder.read(path: Fixtures.path("img2img/init.png")).image
        var request = GenerationRequest(prompt: "x", steps: 4, width: 64, height: 64)
        request.initImage = ImageConversion.initImageTensor(initImage)
        request.strength = 1.5
        XCTAssertThrowsError(try pipeline.generate(request)) { XCTAssertTrue("\($0)".contains("outside [0, 1]"), "\($0)") }
        request.strength = 0.1
        XCTAssertThrowsError(try pipeline.generate(request)) { XCTAssertTrue("\($0)".contains("no denoising step"), "\($0)") }
        request.strength = 0.5
        request.width = 32
        XCTAssertThrowsError(try pipeline.generate(request)) { XCTAssertTrue("\($0)".contains("resize"), "\($0)") }
    }

    func testResizeKeepsAFlatImageFlatAndHasTheAskedSize() {
        let flat = PixelImage(width: 10, height: 6, channels: 3, pixels: Array(repeating: 77, count: 180))
        let resized = ImageConversion.resized(flat, width: 16, height: 8)
        XCTAssertEqual([resized.width, resized.height], [16, 8])
        XCTAssertEqual(Set(resized.pixels), [77])
    }
}
