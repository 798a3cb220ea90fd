import Foundation
import XCTest
@testable import Diffuse8

/// Prompt-fidelity checker on ground-truth images of the shapes data set (`Tests/Fixtures/fidelity/samples.safetensors`,
/// written by `training/make_fidelity_fixture.py`: U8 [N, 64, 64, 3] + the captions in `__metadata__`).
final class PromptFidelityTests: XCTestCase {
    private func samples() throws -> (images: [[UInt8]], captions: [String]) {
        let file = try SafetensorsFile(path: Fixtures.path("fidelity/samples.safetensors"))
        let entry = try file.entry(named: "images")
        XCTAssertEqual(entry.dtype, .u8)
        XCTAssertEqual(Array(entry.shape.dropFirst()), [64, 64, 3])
        let bytes = Array(try file.rawBytes(named: "images"))
        let captions = try JSONDecoder().decode([String].self, from: Data(file.metadata["captions"]!.utf8))
        XCTAssertEqual(captions.count, entry.shape[0])
        let size = 64 * 64 * 3
        return ((0..<captions.count).map { Array(bytes[($0 * size)..<(($0 + 1) * size)]) }, captions)
    }

    func testParsesTheThreeTemplates() throws {
        let one = try CaptionParser.parse("a large purple triangle at the top on a brown background")
        XCTAssertEqual(one, ParsedCaption(background: "brown", shapes: [ExpectedShape(size: "large", colour: "purple", shape: "triangle")],
                                          layout: .position("at the top")))
        let two = try CaptionParser.parse("a small red circle left of a large blue square on a white background")
        XCTAssertEqual(two.shapes, [ExpectedShape(size: "small", colour: "red", shape: "circle"),
                                    ExpectedShape(size: "large", colour: "blue", shape: "square")])
        XCTAssertEqual(two.layout, .relation("left of"))
        let three = try CaptionParser.parse(
            "a small orange circle, a large green circle and a small green triangle from left to right on a black background")
        XCTAssertEqual(three.shapes.map(\.shape), ["circle", "circle", "triangle"])
        XCTAssertEqual(three.shapes.map(\.colour), ["orange", "green", "green"])
        XCTAssertEqual(three.layout, .leftToRight)
        XCTAssertEqual(three.background, "black")
    }

    func testRejectsCaptionsOutsideTheTemplates() {
        XCTAssertThrowsError(try CaptionParser.parse("a photo of a cat")) { error in
            XCTAssertTrue("\(error)".contains("a photo of a cat"))
        }
        XCTAssertThrowsError(try CaptionParser.parse("a small magenta circle on the left on a white background"))
        XCTAssertThrowsError(try CaptionParser.parse("a small red circle somewhere on a white background"))
    }

    func testReadsGroundTruthImagesBack() throws {
        let (images, captions) = try samples()
        var total = 0, correct = 0
        var byKind: [String: (Int, Int)] = [:]
        for (image, caption) in zip(images, captions) {
            let report = try PromptFidelity.evaluate(caption: caption, image: image, width: 64, height: 64)
            total += report.checks.count
            correct += report.correctCount
            for check in report.checks {
                let (c, n) = byKind[check.kind, default: (0, 0)]
                byKind[check.kind] = (c + (check.correct ? 1 : 0), n + 1)
            }
            for check in report.checks where !check.correct {
                print("fidelity miss: \(caption): \(check.name) expected \(check.expected), read \(check.observed)")
            }
        }
        print("fidelity on ground truth: \(correct)/\(total); " + byKind.keys.sorted().map { "\($0) \(byKind[$0]!.0)/\(byKind[$0]!.1)" }.joined(separator: ", "))
        XCTAssertGreaterThanOrEqual(Double(correct) / Double(total), 0.95)
        XCTAssertEqual(byKind.keys.sorted(), ["background", "colour", "count", "order", "position", "relation", "shape", "size"])
    }

    func testWrongCaptionsScoreLower() throws {
        let (images, captions) = try samples()
        let swaps = [("red", "green"), ("green", "red"), ("blue", "yellow"), ("yellow", "blue"), ("orange", "cyan"),
                     ("cyan", "orange"), ("purple", "pink"), ("pink", "purple")]
        for (image, caption) in zip(images, captions) {
            let truth = try PromptFidelity.evaluate(caption: caption, image: image, width: 64, height: 64)
            // Change the first shape's colour: that colour check must fail.
            var words = caption.split(separator: " ").map(String.init)
            let (from, to) = swaps.first { $0.0 == words[2] }!
            words[2] = to
            let wrong = try PromptFidelity.evaluate(caption: words.joined(separator: " "), image: image, width: 64, height: 64)
            XCTAssertLessThan(wrong.score, truth.score, "colour \(from)->\(to) in \(caption)")
            XCTAssertEqual(wrong.checks.first { $0.name == "shape 1 colour" }?.correct, false, caption)
        }
        // A swapped relation is caught too.
        if let i = captions.firstIndex(where: { $0.contains(" above ") }) {
            let wrong = try PromptFidelity.evaluate(caption: captions[i].replacing(" above ", with: " below "),
                                                    image: images[i], width: 64, height: 64)
            XCTAssertEqual(wrong.checks.first { $0.kind == "relation" }?.correct, false)
        }
    }

    func testBlankImageFindsNoShapes() throws {
        let white = [UInt8](repeating: 245, count: 64 * 64 * 3)
        let report = try PromptFidelity.evaluate(caption: "a small red circle on the left on a white background",
                                                 image: white, width: 64, height: 64)
        XCTAssertEqual(report.background, "white")
        XCTAssertTrue(report.detected.isEmpty)
        XCTAssertEqual(report.correctCount, 1)  // only the background
    }
}
