/// The text pipeline in front of CLIP's BPE, as transformers' (tokenizers-backed) `CLIPTokenizer` builds it:
/// normalizer `Sequence[NFC, Replace(\s+ → " "), Lowercase]`, then pre-tokenizer
/// `Split(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+,
/// removed, invert)` followed by `ByteLevel(add_prefix_space: false)` (whose GPT-2 regex only splits the two
/// special-token spellings further, into `<|`, the name, `|>`).
///
/// `\s` is Unicode White_Space (Oniguruma's Unicode `\s`), `\p{L}`/`\p{N}` are the general categories, and
/// lowercasing is the per-character full mapping (no final-sigma context), as in the Rust `tokenizers` crate.
/// Unlike OpenAI's original CLIP tokenizer there is no ftfy fix-up and no HTML unescaping.
enum CLIPPreTokenizer {
    /// NFC, whitespace runs collapsed to one space, lowercased.
    static func normalize(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var text = String()
        text.unicodeScalars.append(contentsOf: scalars)
        // The standard library's NFC (underscored but public); FoundationEssentials has no normaliser.
        let composed = String(decoding: text._nfcCodeUnits, as: UTF8.self)
        var collapsed: [Unicode.Scalar] = []
        collapsed.reserveCapacity(scalars.count)
        var inWhitespace = false
        for scalar in composed.unicodeScalars {
            if scalar.properties.isWhitespace {
                if !inWhitespace { collapsed.append(" ") }
                inWhitespace = true
            } else {
                collapsed.append(scalar)
                inWhitespace = false
            }
        }
        var lowered: [Unicode.Scalar] = []
        lowered.reserveCapacity(collapsed.count)
        for scalar in collapsed {
            if scalar.isASCII {
                lowered.append(scalar.value >= 65 && scalar.value <= 90 ? Unicode.Scalar(scalar.value + 32)! : scalar)
            } else if scalar.properties.changesWhenLowercased {
                lowered.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            } else {
                lowered.append(scalar)
            }
        }
        return lowered
    }

    private enum Kind { case letter, number, space, other }

    private static func kind(_ scalar: Unicode.Scalar) -> Kind {
        if scalar.properties.isWhitespace { return .space }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    private static let specialSpellings: [[Unicode.Scalar]] = ["<|startoftext|>", "<|endoftext|>"].map { Array($0.unicodeScalars) }
    private static let contractions: [[Unicode.Scalar]] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    private static func hasPrefix(_ text: [Unicode.Scalar], at index: Int, _ prefix: [Unicode.Scalar]) -> Bool {
        guard index + prefix.count <= text.count else { return false }
        for k in 0..<prefix.count where text[index + k] != prefix[k] { return false }
        return true
    }

    /// Splits normalized text into the words BPE sees (whitespace dropped), each still as scalars.
    static func words(_ text: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
        var words: [ArraySlice<Unicode.Scalar>] = []
        var i = 0
        scan: while i < text.count {
            // Alternatives in the regex's order; the first that matches at `i` wins.
            for special in specialSpellings where hasPrefix(text, at: i, special) {
                // ByteLevel's regex splits it again: "<|", the letters, "|>".
                let end = i + special.count
                words.append(text[i..<(i + 2)])
                words.append(text[(i + 2)..<(end - 2)])
                words.append(text[(end - 2)..<end])
                i = end
                continue scan
            }
            for contraction in contractions where hasPrefix(text, at: i, contraction) {
                words.append(text[i..<(i + contraction.count)])
                i += contraction.count
                continue scan
            }
            let first = kind(text[i])
            switch first {
            case .space:
                i += 1
            case .number:
                words.append(text[i..<(i + 1)])
                i += 1
            case .letter, .other:
                var end = i + 1
                while end < text.count, kind(text[end]) == first { end += 1 }
                words.append(text[i..<end])
                i = end
            }
        }
        return words
    }
}
