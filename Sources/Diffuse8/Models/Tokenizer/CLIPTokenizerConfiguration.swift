#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The parts of a transformers tokenizer folder's `tokenizer_config.json` and `special_tokens_map.json` that
/// change CLIP's ids: the special tokens, `model_max_length`, and which added tokens are matched on the raw text
/// versus after normalization.
///
/// Resolution, as transformers 5.x does it for the folders diffusers ships: `special_tokens_map.json` values
/// override `tokenizer_config.json`'s; a token given as a plain string is matched on the raw text, one given as
/// an `AddedToken` object uses its `normalized` flag, and when several roles share a spelling the last of
/// bos, eos, unk, pad decides. Entries of `added_tokens_decoder` take precedence (their id and flags are used).
struct CLIPTokenizerConfiguration {
    struct AddedTokenSpec {
        var content: String
        var id: Int?
        var normalized: Bool
    }

    var bosToken = "<|startoftext|>"
    var eosToken = "<|endoftext|>"
    var unknownToken = "<|endoftext|>"
    var padToken = "<|endoftext|>"
    var modelMaxLength = 77
    /// Special tokens split out of the text before BPE, in no particular order.
    var addedTokens: [AddedTokenSpec] = []

    init(directory: String?) throws {
        var config: [String: JSONValue] = [:]
        let source = (directory ?? ".") + "/tokenizer_config.json"
        if let directory {
            for name in ["tokenizer_config.json", "special_tokens_map.json"] {
                let path = directory + "/" + name
                guard FileManager.default.fileExists(atPath: path) else { continue }
                guard let data = InputFile.contents(atPath: path),
                      let object = (try? JSONDecoder().decode(JSONValue.self, from: data))?.object else {
                    throw TokenizerError("\(path): not a JSON object; fix or remove it (the tokenizer then uses CLIP's defaults)")
                }
                for (key, value) in object { config[key] = value }
            }
        }
        // Roles in the order transformers registers them; a later role with the same spelling decides the flag.
        var normalizedBySpelling: [String: Bool] = [:]
        func read(_ key: String, into value: inout String) throws {
            guard let entry = config[key], !entry.isNull else { return }
            if let text = entry.string {
                value = text
                normalizedBySpelling[text] = false
            } else if let content = entry["content"]?.string {
                value = content
                normalizedBySpelling[content] = entry["normalized"]?.bool ?? false
            } else {
                throw TokenizerError("\(source): key '\(key)' must be a string or an object with 'content', got \(entry)")
            }
        }
        try read("bos_token", into: &bosToken)
        try read("eos_token", into: &eosToken)
        try read("unk_token", into: &unknownToken)
        try read("pad_token", into: &padToken)
        if let length = config["model_max_length"], !length.isNull {
            guard let value = length.double, value >= 2 else {
                throw TokenizerError("\(source): key 'model_max_length' must be a number >= 2, got \(length)")
            }
            // Some configs store "infinity" as 1e30: keep CLIP's context then.
            modelMaxLength = value > 1e6 ? 77 : Int(value)
        }

        var specs: [String: AddedTokenSpec] = [:]
        for (spelling, normalized) in normalizedBySpelling {
            specs[spelling] = AddedTokenSpec(content: spelling, id: nil, normalized: normalized)
        }
        if let decoder = config["added_tokens_decoder"]?.object {
            for (key, entry) in decoder {
                guard let id = Int(key), let content = entry["content"]?.string else {
                    throw TokenizerError("\(source): 'added_tokens_decoder' entry '\(key)' needs an integer key and a 'content' string")
                }
                specs[content] = AddedTokenSpec(content: content, id: id, normalized: entry["normalized"]?.bool ?? false)
            }
        }
        addedTokens = specs.keys.sorted().map { specs[$0]! }
    }
}
