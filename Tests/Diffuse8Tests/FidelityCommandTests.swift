import Foundation
import XCTest
import Diffuse8
import Diffuse8PNG

/// End-to-end checks of `diffuse8 fidelity` and `diffuse8 evaluate-fidelity` (the executable, run as a process).
/// Images are ground truth from `Tests/Fixtures/fidelity/samples.safetensors`, written as PNG here.
final class FidelityCommandTests: ExecutableTestCase {
    /// A ground-truth image with a relation caption, as a PNG file.
    private func groundTruthPNG() throws -> (path: String, caption: String) {
        let sample = try FidelityEvaluationTests.groundTruth().first { $0.caption.contains(" above ") }!
        let path = scratch.appendingPathComponent("truth.png").path
        try PNGEncoder.write(sample.image, to: path)
        return (path, sample.caption)
    }

    func testFidelityPrintsScoreAndEveryCheck() throws {
        let (path, caption) = try groundTruthPNG()
        let parsed = try CaptionParser.parse(caption)
        let result = try run(["fidelity", path, caption])
        XCTAssertEqual(result.status, 0, result.stderr)
        // a [size] [colour] [shape] above a [size] [colour] [shape]: 2 + 3 * 2 + 1 attributes, all right on ground truth.
        XCTAssertTrue(result.stdout.contains("score: 1.000 (9/9 attributes)"), result.stdout)
        for shape in parsed.shapes {
            for value in [shape.colour, shape.shape, shape.size] {
                XCTAssertTrue(result.stdout.contains("expected \(value)"), "\(value) in \(result.stdout)")
            }
        }
        XCTAssertTrue(result.stdout.contains("relation"), result.stdout)
        XCTAssertFalse(result.stdout.contains("MISS"), result.stdout)

        // The same image against a caption with the relation turned round: that check fails, the command still succeeds.
        let wrong = try run(["fidelity", path, caption.replacingOccurrences(of: " above ", with: " below ")])
        XCTAssertEqual(wrong.status, 0, wrong.stderr)
        XCTAssertTrue(wrong.stdout.contains("score: 0.889 (8/9 attributes)"), wrong.stdout)
        XCTAssertTrue(wrong.stdout.contains("MISS relation"), wrong.stdout)
        XCTAssertTrue(wrong.stdout.contains("read above"), wrong.stdout)
    }

    func testCaptionOutsideTheTemplatesFails() throws {
        let (path, _) = try groundTruthPNG()
        let result = try run(["fidelity", path, "a photo of a cat"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("cannot parse caption \"a photo of a cat\""), result.stderr)
        XCTAssertEqual(result.stdout, "")
    }

    func testNotAPNGFails() throws {
        let path = scratch.appendingPathComponent("not.png").path
        try Data("hello".utf8).write(to: URL(fileURLWithPath: path))
        let result = try run(["fidelity", path, "a small red circle on the left on a white background"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("not a PNG"), result.stderr)
    }

    /// The whole evaluate loop on the tiny random-weight pipeline (noise images, so only the plumbing is checked).
    func testEvaluateFidelityWritesJSONGridAndCaptions() throws {
        let prompts = scratch.appendingPathComponent("prompts.txt")
        try "a small red circle on the left on a white background\na large blue square above a small green circle on a black background\nnot read (limit 2)\n"
            .write(to: prompts, atomically: true, encoding: .utf8)
        let json = scratch.appendingPathComponent("results.json").path, grid = scratch.appendingPathComponent("grid.png").path
        // The third line is outside the templates: the whole file is checked before --limit applies.
        let bad = try run(["evaluate-fidelity", "--model", Fixtures.path("tiny-sd15"), "--prompts", prompts.path,
                           "--steps", "1", "--limit", "2", "-o", json])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("prompts.txt:3"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: json))

        try "a small red circle on the left on a white background\na large blue square above a small green circle on a black background\na small red circle at the top on a gray background\n"
            .write(to: prompts, atomically: true, encoding: .utf8)
        let result = try run(["evaluate-fidelity", "--model", Fixtures.path("tiny-sd15"), "--prompts", prompts.path,
                              "--steps", "2", "--cfg", "5", "--seeds", "2", "--limit", "2", "--grid", grid, "-o", json])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("prompt 4/4"), result.stderr)
        XCTAssertTrue(result.stderr.contains("ETA"), result.stderr)
        XCTAssertTrue(result.stdout.contains("overall attribute accuracy:"), result.stdout)
        XCTAssertTrue(result.stdout.contains("mean image score:"), result.stdout)
        XCTAssertTrue(result.stdout.contains("background"), result.stdout)

        let decoded = try JSONDecoder().decode(FidelityEvaluationResult.self, from: Data(contentsOf: URL(fileURLWithPath: json)))
        XCTAssertEqual(decoded.samples.map(\.seed), [0, 1, 0, 1])
        XCTAssertEqual(decoded.samples.map(\.checks.count), [6, 6, 9, 9])
        XCTAssertEqual(decoded.options, FidelityEvaluationOptions(steps: 2, guidanceScale: 5, seeds: 2))

        let image = try PNGDecoder.read(path: grid).image
        XCTAssertEqual([image.width, image.height, image.channels], [2 * 64 + 3 * 2, 2 * 64 + 3 * 2, 3])
        let captions = try String(contentsOfFile: scratch.appendingPathComponent("grid.txt").path, encoding: .utf8)
        XCTAssertEqual(captions.split(separator: "\n").count, 4)
        XCTAssertTrue(captions.hasPrefix("1\tseed 0\tscore "), captions)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: scratch.path)),
                       ["prompts.txt", "results.json", "grid.png", "grid.txt"], "no temporary files left behind")
    }
}
