import Foundation
import XCTest
import Diffuse8

/// `FidelityEvaluation` (aggregation, prompts file, JSON) and `ImageGrid`, with a generator that returns the
/// ground-truth images of `Tests/Fixtures/fidelity/samples.safetensors` (so every number is known without a model).
final class FidelityEvaluationTests: XCTestCase {
    static func groundTruth() throws -> [(caption: String, image: PixelImage)] {
        let file = try SafetensorsFile(path: Fixtures.path("fidelity/samples.safetensors"))
        let bytes = Array(try file.rawBytes(named: "images"))
        let captions = try JSONDecoder().decode([String].self, from: Data(file.metadata["captions"]!.utf8))
        let size = 64 * 64 * 3
        return captions.enumerated().map { i, caption in
            (caption, PixelImage(width: 64, height: 64, channels: 3, pixels: Array(bytes[(i * size)..<((i + 1) * size)])))
        }
    }

    func testAggregatesChecksOverPromptsAndSeeds() throws {
        let truth = Array(try Self.groundTruth().prefix(6))
        let images = Dictionary(truth.map { ($0.caption, $0.image) }, uniquingKeysWith: { a, _ in a })
        var requests: [GenerationRequest] = []
        var progress: [FidelityProgress] = []
        let options = FidelityEvaluationOptions(steps: 7, guidanceScale: 3, seeds: 2)
        let (result, kept) = try FidelityEvaluation.run(
            model: "ground truth", prompts: truth.map(\.caption), options: options, keepImages: 4,
            generate: { request in
                requests.append(request)
                // Seed 1 gets a blank image of the right background: only the background can be right.
                return request.seed == 0 ? images[request.prompt]! : PixelImage(width: 64, height: 64, channels: 1,
                                                                                  pixels: [UInt8](repeating: 128, count: 64 * 64))
            }, progress: { progress.append($0) })

        XCTAssertEqual(requests.map(\.seed), [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
        XCTAssertEqual(Set(requests.map(\.steps)), [7])
        XCTAssertEqual(Set(requests.map(\.guidanceScale)), [3])
        XCTAssertEqual(Set(requests.map(\.scheduler)), [.euler])
        XCTAssertEqual(progress.map(\.completed), Array(1...12))
        XCTAssertEqual(progress.last?.total, 12)
        XCTAssertEqual(kept.count, 4)
        XCTAssertEqual(result.samples.count, 12)

        // Independent count: each caption's attributes = background + count + 3 per shape + 1 layout.
        let perImage = truth.map { 2 + 3 * (try! CaptionParser.parse($0.caption)).shapes.count + 1 }
        XCTAssertEqual(result.overall.total, 2 * perImage.reduce(0, +))
        let groundTruthRight = result.samples.filter { $0.seed == 0 }.map { $0.checks.filter(\.correct).count }.reduce(0, +)
        XCTAssertGreaterThanOrEqual(Double(groundTruthRight), 0.95 * Double(perImage.reduce(0, +)))
        for sample in result.samples where sample.seed == 1 {
            // Grey image: nothing detected; only a gray-background caption gets its background right.
            let expectedRight = sample.prompt.hasSuffix("on a gray background") ? 1 : 0
            XCTAssertEqual(sample.checks.filter(\.correct).count, expectedRight, sample.prompt)
        }
        let byKind = Dictionary(uniqueKeysWithValues: result.byKind.map { ($0.kind, $0.accuracy) })
        XCTAssertEqual(byKind["background"]?.total, 12)
        XCTAssertEqual(byKind["count"]?.total, 12)
        XCTAssertEqual(result.byKind.map(\.accuracy.total).reduce(0, +), result.overall.total)
        XCTAssertEqual(result.meanScore, result.samples.map(\.score).reduce(0, +) / 12, accuracy: 1e-12)
        XCTAssertTrue(result.summary.contains("overall attribute accuracy:"), result.summary)

        // JSON round trip keeps every sample; the derived numbers are written too.
        let json = try result.jsonBytes()
        let decoded = try JSONDecoder().decode(FidelityEvaluationResult.self, from: Data(json))
        XCTAssertEqual(decoded.samples.map(\.checks), result.samples.map(\.checks))
        XCTAssertEqual(decoded.options, options)
        let object = try JSONSerialization.jsonObject(with: Data(json)) as! [String: Any]
        XCTAssertEqual((object["overall"] as! [String: Any])["total"] as? Int, result.overall.total)
        XCTAssertNotNil(object["byKind"] as? [String: Any])
        XCTAssertNotNil(object["meanScore"] as? Double)
    }

    func testPromptsFileSkipsCommentsAndNamesTheBadLine() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("d8-fid-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let good = directory.appendingPathComponent("good.txt")
        try "# held-out\n  a small red circle on the left on a white background \n\na large blue square at the top on a black background\n"
            .write(to: good, atomically: true, encoding: .utf8)
        XCTAssertEqual(try FidelityEvaluation.readPrompts(path: good.path),
                       ["a small red circle on the left on a white background", "a large blue square at the top on a black background"])
        let bad = directory.appendingPathComponent("bad.txt")
        try "a small red circle on the left on a white background\na photo of a cat\n".write(to: bad, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try FidelityEvaluation.readPrompts(path: bad.path)) {
            XCTAssertTrue("\($0)".contains("bad.txt:2"), "\($0)")
            XCTAssertTrue("\($0)".contains("a photo of a cat"), "\($0)")
        }
        XCTAssertThrowsError(try FidelityEvaluation.readPrompts(path: directory.path + "/missing.txt"))
    }

    func testGridPlacesTilesInsideBorders() throws {
        let red = PixelImage(width: 3, height: 2, channels: 3, pixels: (0..<18).map { (i: Int) -> UInt8 in i % 3 == 0 ? 200 : 0 })
        let grey = PixelImage(width: 3, height: 2, channels: 1, pixels: [UInt8](repeating: 90, count: 6))
        let grid = ImageGrid.compose([red, grey, red], border: 1, borderColour: (1, 2, 3))
        // 3 images → 2 columns, 2 rows: width 2*3 + 3, height 2*2 + 3.
        XCTAssertEqual([grid.width, grid.height, grid.channels], [9, 7, 3])
        func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(grid.pixels[((y * grid.width + x) * 3)..<((y * grid.width + x) * 3 + 3)]) }
        XCTAssertEqual(pixel(0, 0), [1, 2, 3])
        XCTAssertEqual(pixel(1, 1), [200, 0, 0])     // first tile, top-left
        XCTAssertEqual(pixel(3, 2), [200, 0, 0])     // first tile, bottom-right
        XCTAssertEqual(pixel(4, 1), [1, 2, 3])       // border between tiles
        XCTAssertEqual(pixel(5, 1), [90, 90, 90])    // second tile (grey expanded)
        XCTAssertEqual(pixel(1, 4), [200, 0, 0])     // third tile, second row
        XCTAssertEqual(pixel(5, 4), [1, 2, 3])       // empty fourth cell stays border colour
        XCTAssertEqual(ImageGrid.compose(Array(repeating: grey, count: 16)).width, 4 * 3 + 5 * 2)
    }
}
