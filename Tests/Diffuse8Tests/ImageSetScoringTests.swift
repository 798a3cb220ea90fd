import Foundation
import XCTest
import Diffuse8
import Diffuse8PNG

/// `diffuse8 eval --reference DIR --images DIR…`: images made elsewhere are scored against a reference folder
/// by file name. Expected values are hand calculations on constant images:
/// - every byte off by 5: MSE = 25, PSNR = 10·log10(255² / 25) = 10·log10(2601) = 34.1514 dB;
///   SSIM of two constant images (luma 100 vs 105, zero variance) = (2·100·105 + C1) / (100² + 105² + C1)
///   with C1 = (0.01·255)² = 6.5025: 21006.5025 / 21031.5025 = 0.998811.
/// - one byte of 8·8·3 off by 10: MSE = 100 / 192, PSNR = 10·log10(65025 · 192 / 100) = 50.9638 dB.
final class ImageSetScoringTests: ExecutableTestCase {
    private func constant(_ value: UInt8) -> PixelImage {
        PixelImage(width: 8, height: 8, channels: 3, pixels: [UInt8](repeating: value, count: 8 * 8 * 3))
    }

    private func write(_ image: PixelImage, _ folder: String, _ name: String) throws {
        try FileManager.default.createDirectory(atPath: scratch.path + "/" + folder, withIntermediateDirectories: true)
        try PNGEncoder.write(image, to: scratch.path + "/" + folder + "/" + name)
    }

    func testFileNamesArePromptIndexAndSeed() {
        XCTAssertEqual(ImageSetComparison.fileName(promptIndex: 0, seed: 1000), "000-s1000.png")
        XCTAssertEqual(ImageSetComparison.fileName(promptIndex: 23, seed: 1001), "023-s1001.png")
        XCTAssertEqual(ImageSetComparison.fileName(promptIndex: 1234, seed: 7), "1234-s7.png")
    }

    func testLibraryScoresHandMadeImages() throws {
        var oneOff = constant(100)
        oneOff.pixels[17] = 110
        let images: [String: PixelImage] = ["ref/000-s1000.png": constant(100), "ref/000-s1001.png": constant(100),
                                            "a/000-s1000.png": constant(105), "a/000-s1001.png": oneOff]
        let samples = try ImageSetComparison.samples(prompts: ["not a caption"], seeds: 2, firstSeed: 1000, sets: 1) { set, name in
            images[(set == nil ? "ref/" : "a/") + name]!
        }
        XCTAssertEqual(samples.count, 2)
        XCTAssertEqual(samples[0].psnr[0], 34.1514, accuracy: 1e-4)
        XCTAssertEqual(samples[0].ssim[0], 0.998811, accuracy: 1e-6)
        XCTAssertEqual(samples[1].psnr[0], 50.9638, accuracy: 1e-4)
        let summary = QuantizationEvaluator.summarize(samples, names: ["a"], seconds: [0])[0]
        XCTAssertEqual(summary.meanPSNR, (34.1514 + 50.9638) / 2, accuracy: 1e-4)
        XCTAssertNil(summary.meanFidelity, "a prompt outside the caption templates has no fidelity score")
    }

    func testCommandScoresFoldersAgainstReference() throws {
        let s = scratch.path
        try "a large red circle in the centre on a white background\n".write(toFile: s + "/prompts.txt", atomically: true, encoding: .utf8)
        try write(constant(100), "fp", "000-s1000.png")
        try write(constant(105), "peer", "000-s1000.png")
        try write(constant(100), "same", "000-s1000.png")
        let r = try run(["eval", "--reference", s + "/fp", "--images", s + "/peer", s + "/same", "--prompts", s + "/prompts.txt",
                         "--seeds", "1", "-o", s + "/ev"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: s + "/ev/report.json"))) as! [String: Any]
        let models = json["models"] as! [[String: Any]]
        XCTAssertEqual(models.map { $0["model"] as! String }, ["peer", "same"])
        XCTAssertEqual(models[0]["meanPSNR"] as! Double, 34.1514, accuracy: 1e-4)
        XCTAssertEqual(models[0]["meanSSIM"] as! Double, 0.998811, accuracy: 1e-6)
        XCTAssertEqual(models[1]["meanPSNR"] as! Double, ImageMetrics.psnrCap, "identical images count as the cap")
        // A blank image has no red circle: the fidelity checker scores it like any generated image.
        XCTAssertNotNil(models[0]["meanFidelity"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: s + "/ev/grid.png"))
    }

    func testMissingImageIsNamed() throws {
        let s = scratch.path
        try "a red circle\na blue square\n".write(toFile: s + "/prompts.txt", atomically: true, encoding: .utf8)
        try write(constant(100), "fp", "000-s1000.png")
        try write(constant(100), "fp", "001-s1000.png")
        try write(constant(100), "peer", "000-s1000.png")
        let r = try run(["eval", "--reference", s + "/fp", "--images", s + "/peer", "--prompts", s + "/prompts.txt", "-o", s + "/ev"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("peer/001-s1000.png"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/ev/report.json"))
    }

    func testModesDoNotMix() throws {
        let s = scratch.path
        try "a red circle\n".write(toFile: s + "/prompts.txt", atomically: true, encoding: .utf8)
        var r = try run(["eval", "--reference", s + "/fp", "--prompts", s + "/prompts.txt"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--images"), r.stderr)
        r = try run(["eval", "--reference", s + "/fp", "--images", s + "/a", "--quantized", s + "/q", "--prompts", s + "/prompts.txt"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("not both"), r.stderr)
    }
}
