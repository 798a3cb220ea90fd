import Foundation
import XCTest
@testable import Diffuse8

/// A1111 prompt syntax, long prompts and clip skip against `tools/reference/prompt_weighting.py` (A1111's algorithm
/// re-implemented in Python, run with transformers' CLIP on the tiny fixtures), and the parser against the examples
/// in A1111's `parse_prompt_attention` documentation.
final class PromptWeightingTests: XCTestCase {
    private struct Case: Decodable { let prompt: String; let clip_skip: Int }

    private func cases() throws -> (SafetensorsFile, [Case]) {
        let reference = try Fixtures.reference("prompt_weighting")
        let cases = try JSONDecoder().decode([Case].self, from: Data(reference.metadata["cases"]!.utf8))
        return (reference, cases)
    }

    func testParserMatchesA1111DocumentedExamples() {
        func parsed(_ s: String) -> [String] { PromptAttention.parse(s).map { "\($0.text)|\(String(format: "%.6f", $0.weight))" } }
        XCTAssertEqual(parsed("normal text"), ["normal text|1.000000"])
        XCTAssertEqual(parsed("an (important) word"), ["an |1.000000", "important|1.100000", " word|1.000000"])
        XCTAssertEqual(parsed("(unbalanced"), ["unbalanced|1.100000"])
        XCTAssertEqual(parsed("\\(literal\\]"), ["(literal]|1.000000"])
        XCTAssertEqual(parsed("(unnecessary)(parens)"), ["unnecessaryparens|1.100000"])
        XCTAssertEqual(parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
                       ["a |1.000000", "house|1.573000", " |1.100000", "on|1.000000", " a |1.100000", "hill|0.550000",
                        ", sun, |1.100000", "sky|1.464100", ".|1.100000"])
        XCTAssertEqual(parsed("a BREAK b"), ["a|1.000000", "BREAK|-1.000000", "b|1.000000"])
    }

    func testChunksMatchA1111Tokenization() throws {
        let (reference, cases) = try cases()
        let tokenizer = try CLIPTokenizer(directory: Fixtures.path("tiny-sd15/tokenizer"))
        for (i, c) in cases.enumerated() {
            let chunks = PromptChunks(prompt: c.prompt, tokenizer: tokenizer)
            let tokens = try reference.tensor(named: "sd15.\(i).tokens")
            let multipliers = try reference.tensor(named: "sd15.\(i).multipliers")
            XCTAssertEqual(chunks.tokens.flatMap { $0 }.map(Float.init), tokens.scalars, "case \(i) tokens")
            XCTAssertEqual(chunks.tokens.count, tokens.shape[0], "case \(i) chunk count")
            for (a, b) in zip(chunks.multipliers.flatMap { $0 }, multipliers.scalars) {
                XCTAssertEqual(a, b, accuracy: 1e-6, "case \(i) multipliers")
            }
        }
    }

    func testSD15EmbeddingsMatchA1111WithEmphasisChunksAndClipSkip() throws {
        let (reference, cases) = try cases()
        // the tiny encoder with a non-trivial final layer norm (see the reference tool)
        let conditioning = TextConditioning(
            encoders: [.init(tokenizer: try CLIPTokenizer(directory: Fixtures.path("tiny-sd15/tokenizer")),
                             model: try CLIPTextModel.load(directory: Fixtures.path("prompt-weighting/text_encoder")))],
            usesPenultimateLayer: false)
        var warnings: [String] = []
        for (i, c) in cases.enumerated() {
            let embeddings = try conditioning.encode(c.prompt, clipSkip: c.clip_skip, warnings: &warnings)
            let expected = try reference.tensor(named: "sd15.\(i).embeddings")
            XCTAssertEqual(embeddings.hiddenStates.shape, expected.shape, "case \(i)")
            let error = embeddings.hiddenStates.relativeL2(to: expected)
            XCTAssertLessThan(error, 1e-5, "sd15 case \(i) (\(c.prompt.prefix(40))…, clip skip \(c.clip_skip)): relative L2 \(error)")
        }
    }

    func testSDXLEmbeddingsAndPooledMatchA1111() throws {
        let (reference, cases) = try cases()
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sdxl"))
        var warnings: [String] = []
        for (i, c) in cases.enumerated() {
            let embeddings = try pipeline.conditioning.encode(c.prompt, warnings: &warnings)
            let expected = try reference.tensor(named: "sdxl.\(i).embeddings")
            XCTAssertEqual(embeddings.hiddenStates.shape, expected.shape, "case \(i)")
            XCTAssertLessThan(embeddings.hiddenStates.relativeL2(to: expected), 1e-5, "sdxl case \(i)")
            XCTAssertLessThan(embeddings.pooled!.relativeL2(to: try reference.tensor(named: "sdxl.\(i).pooled")), 1e-5, "sdxl case \(i) pooled")
        }
    }

    func testLongPromptAndShortNegativeArePaddedToEqualLengthAndGenerate() throws {
        let (_, cases) = try cases()
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        var request = GenerationRequest(prompt: cases[2].prompt, negativePrompt: "blurry", steps: 2, guidanceScale: 5, width: 64, height: 64)
        var warnings: [String] = []
        let conditioning = try pipeline.encodeConditioning(request, warnings: &warnings)
        XCTAssertEqual(conditioning.encoderHiddenStates.shape, [2, 4 * 77, 32])
        // the negative half's extra chunks are the empty prompt's encoding
        let empty = try pipeline.conditioning.encode("", warnings: &warnings).hiddenStates.scalars
        let width = 32, chunk = 77 * width
        let negativeChunk4 = Array(conditioning.encoderHiddenStates.scalars[(3 * chunk)..<(4 * chunk)])
        XCTAssertEqual(negativeChunk4, empty)
        request.clipSkip = 2
        XCTAssertNoThrow(try pipeline.generate(request))
        request.clipSkip = 9
        XCTAssertThrowsError(try pipeline.generate(request)) { XCTAssertTrue("\($0)".contains("1...3"), "\($0)") }
    }
}
