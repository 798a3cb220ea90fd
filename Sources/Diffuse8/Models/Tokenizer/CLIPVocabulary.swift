#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The CLIP BPE vocabulary (`vocab.json` + `merges.txt`, OpenAI CLIP's 49408 tokens) shipped with Diffuse8: the
/// tokenizer of every SD1.x and SDXL text encoder. SDXL's second tokenizer is the same vocabulary with `!` as its
/// pad token, which its tokenizer settings say. Single-file checkpoints carry no tokenizer, so they use this one.
///
/// Found like `DefaultModel`: the `DIFFUSE8_CLIP_VOCABULARY` environment variable (a folder holding the two files),
/// else `models/tokenizers/clip` of this repository.
public struct CLIPVocabulary: Sendable, Equatable {
    public static let environmentVariable = "DIFFUSE8_CLIP_VOCABULARY"

    public let vocabularyFile: String
    public let mergesFile: String

    public init(directory: String) {
        vocabularyFile = directory + "/vocab.json"
        mergesFile = directory + "/merges.txt"
    }

    /// The vocabulary in the environment variable's folder, else the repository's.
    public static var `default`: CLIPVocabulary {
        if let fromEnvironment = ProcessInfo.processInfo.environment[environmentVariable], !fromEnvironment.isEmpty {
            return CLIPVocabulary(directory: fromEnvironment)
        }
        return CLIPVocabulary(directory: DefaultModel.repositoryRoot + "/models/tokenizers/clip")
    }

    /// `default`, checked to exist.
    public static func locate() throws -> CLIPVocabulary {
        let vocabulary = Self.default
        for file in [vocabulary.vocabularyFile, vocabulary.mergesFile] where !FileManager.default.fileExists(atPath: file) {
            throw TokenizerError("the CLIP vocabulary is missing (no \(file)); set \(environmentVariable) to a folder holding "
                                 + "vocab.json and merges.txt of the CLIP tokenizer, or give the model's diffusers folder with --config DIR")
        }
        return vocabulary
    }

    /// A tokenizer with this vocabulary and the settings (`tokenizer_config.json`, `special_tokens_map.json`) in
    /// `configDirectory`.
    public func tokenizer(configDirectory: String) throws -> CLIPTokenizer {
        try CLIPTokenizer(vocabularyFile: vocabularyFile, mergesFile: mergesFile, configDirectory: configDirectory)
    }
}
