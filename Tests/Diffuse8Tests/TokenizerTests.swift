import XCTest
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import Diffuse8

/// Compares `CLIPTokenizer` with transformers' `CLIPTokenizer` ids recorded by `tools/reference/tokenizer.py`
/// (full CLIP vocabulary with several tokenizer configs, and the tiny fixture pipelines' tokenizers).
final class TokenizerTests: XCTestCase {
    struct Reference: Decodable {
        struct Row: Decodable { let ids: [Int]; let untruncated: [Int] }
        struct Case: Decodable { let model_max_length: Int; let pad_token_id: Int; let rows: [Row] }
        struct Fuzz: Decodable { let strings: [String]; let tokenizers: [String: [[Int]]] }
        let strings: [String]
        let tokenizers: [String: Case]
        let fuzz: Fuzz
    }

    static let reference: Reference = {
        let data = FileManager.default.contents(atPath: Fixtures.path("reference/tokenizer.json"))!
        return try! JSONDecoder().decode(Reference.self, from: data)
    }()

    static let fullVocabulary = CLIPVocabulary.default.vocabularyFile
    static let fullMerges = CLIPVocabulary.default.mergesFile

    private func tokenizer(for name: String) throws -> CLIPTokenizer {
        if name.hasPrefix("full/") {
            return try CLIPTokenizer(vocabularyFile: Self.fullVocabulary, mergesFile: Self.fullMerges,
                                     configDirectory: Fixtures.path("tokenizer/configs/" + name.dropFirst(5)))
        }
        return try CLIPTokenizer(directory: Fixtures.path(name))
    }

    private func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try XCTUnwrap(Self.reference.tokenizers[name], name)
        let tokenizer = try tokenizer(for: name)
        XCTAssertEqual(tokenizer.contextLength, reference.model_max_length, name, file: file, line: line)
        XCTAssertEqual(tokenizer.padTokenID, reference.pad_token_id, name, file: file, line: line)
        for (string, row) in zip(Self.reference.strings, reference.rows) {
            let label = "\(name): \(string.debugDescription.prefix(80))"
            let tokenized = tokenizer.tokenize(string)
            XCTAssertEqual(tokenized.ids, row.ids, label, file: file, line: line)
            XCTAssertEqual(tokenizer.encode(string), Array(row.untruncated.dropFirst().dropLast()), label, file: file, line: line)
            XCTAssertEqual(tokenized.droppedTokenCount, max(0, row.untruncated.count - reference.model_max_length), label,
                           file: file, line: line)
            XCTAssertEqual(tokenized.eosIndex, row.ids.firstIndex(of: tokenizer.eosTokenID), label, file: file, line: line)
        }
    }

    func testFullVocabularySD15Config() throws { try check("full/sd15") }
    /// SDXL's tokenizer_2: pad token "!" (id 0), which transformers also splits out of the prompt.
    func testFullVocabularySDXLTokenizer2Config() throws { try check("full/sdxl-tokenizer-2") }
    /// openai/clip-vit-large-patch14 style config: specials marked `normalized` match after lowercasing.
    func testFullVocabularyNormalizedSpecials() throws { try check("full/openai-normalized") }
    /// Older SD1.x folders: AddedToken objects in tokenizer_config.json plus special_tokens_map.json.
    func testFullVocabularyLegacyAddedTokenConfig() throws { try check("full/legacy-addedtoken") }
    func testFullVocabularyShortContext() throws { try check("full/sd15-maxlen-32") }
    func testTinySD15Tokenizer() throws { try check("tiny-sd15/tokenizer") }
    func testTinySDXLTokenizers() throws {
        try check("tiny-sdxl/tokenizer")
        try check("tiny-sdxl/tokenizer_2")
    }

    /// 150 random strings mixing letters, digits, punctuation, contractions, specials, accents, CJK, emoji and
    /// unusual whitespace.
    func testRandomStringsMatchTransformers() throws {
        for (name, expected) in Self.reference.fuzz.tokenizers {
            let tokenizer = try tokenizer(for: name)
            var mismatches = 0
            for (string, ids) in zip(Self.reference.fuzz.strings, expected) {
                let actual = [tokenizer.bosTokenID] + tokenizer.encode(string) + [tokenizer.eosTokenID]
                if actual != ids {
                    mismatches += 1
                    if mismatches <= 3 { XCTFail("\(name): \(string.debugDescription): \(actual) != \(ids)") }
                }
            }
            XCTAssertEqual(mismatches, 0, name)
            XCTAssertEqual(expected.count, 150)
        }
    }

    func testTruncationReportsDroppedTokens() throws {
        let tokenizer = try tokenizer(for: "full/sd15")
        let prompt = Array(repeating: "cat", count: 80).joined(separator: " ")
        let tokenized = tokenizer.tokenize(prompt)
        XCTAssertTrue(tokenized.wasTruncated)
        XCTAssertEqual(tokenized.droppedTokenCount, 5)
        XCTAssertEqual(tokenizer.decode(tokenized.droppedIDs), "cat cat cat cat cat")
        XCTAssertEqual(tokenized.ids.count, 77)
        XCTAssertFalse(tokenizer.tokenize("a cat").wasTruncated)
    }

    func testDecodeRoundTrip() throws {
        let tokenizer = try tokenizer(for: "full/sd15")
        XCTAssertEqual(tokenizer.decode(tokenizer.tokenize("A photo of a Cat, 8k!").ids), "a photo of a cat , 8 k !")
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("日本語 🙂")), "日本語 🙂")
    }

    func testMissingFilesGiveClearErrors() {
        XCTAssertThrowsError(try CLIPTokenizer(directory: "/nonexistent/tokenizer")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/tokenizer/vocab.json"), "\(error)")
        }
    }
}
