#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A tokenizer loading or configuration error; the description names the file and what to do.
public struct TokenizerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The ids of one prompt as diffusers feeds them to a CLIP text encoder:
/// `tokenizer(prompt, padding="max_length", max_length=model_max_length, truncation=True).input_ids`.
public struct TokenizedPrompt: Sendable, Equatable {
    /// BOS, the first `contextLength - 2` prompt tokens, EOS, then padding: `contextLength` ids.
    public let ids: [Int]
    /// The first index holding the EOS id: the token transformers' CLIP text model pools
    /// (`(input_ids == eos_token_id).argmax()`). It is the appended EOS unless the prompt itself contains
    /// `<|endoftext|>`.
    public let eosIndex: Int
    /// Prompt tokens cut off by truncation (0 when the prompt fits). Callers print
    /// "prompt truncated: N tokens dropped", as diffusers warns.
    public let droppedTokenCount: Int
    /// The ids that were cut off, for messages (decode them with `CLIPTokenizer.decode`).
    public let droppedIDs: [Int]

    public var wasTruncated: Bool { droppedTokenCount > 0 }
}

/// CLIP's byte-level BPE tokenizer, giving the same ids as transformers' `CLIPTokenizer` (5.x, backed by the
/// `tokenizers` crate) for the folder it is loaded from.
///
/// Loads a diffusers `tokenizer/` folder: `vocab.json`, `merges.txt`, and when present `tokenizer_config.json`
/// and `special_tokens_map.json` (bos/eos/unk/pad tokens, `model_max_length`, `added_tokens_decoder`).
/// Reproduces: special (added) tokens split out of the text first (those marked `normalized` matched after
/// normalization, the others on the raw text — so SDXL's `tokenizer_2`, whose pad token is `!`, turns every `!`
/// into id 0 like transformers does), the normalizer and pre-tokenizer of `CLIPPreTokenizer`, byte-level symbols
/// (every UTF-8 byte has a symbol, so any character encodes), BPE with the `</w>` end-of-word suffix, BOS/EOS,
/// truncation to `contextLength` and right padding with the folder's pad token.
///
/// Limitations: no `tokenizer.json`-only folders (diffusers' SD folders always carry vocab.json + merges.txt);
/// added tokens' `lstrip`/`rstrip`/`single_word` flags are ignored (CLIP folders set them false).
public struct CLIPTokenizer: Sendable {
    /// Token string → id, from `vocab.json`.
    public let vocabulary: [String: Int]
    /// `model_max_length` (77 for every SD/SDXL CLIP tokenizer).
    public let contextLength: Int
    public let bosTokenID: Int
    public let eosTokenID: Int
    public let padTokenID: Int
    public let unknownTokenID: Int

    private let tokensByID: [Int: String]
    /// (left id, right id) → (rank, merged id).
    private let merges: [UInt64: (rank: Int, id: Int)]
    /// Id of each byte's symbol, without and with the `</w>` suffix (nil when the vocabulary lacks it).
    private let byteIDs: [Int?]
    private let finalByteIDs: [Int?]
    private let addedTokens: [AddedToken]

    struct AddedToken: Sendable {
        let content: [Unicode.Scalar]
        let id: Int
        let normalized: Bool
    }

    /// Loads `directory/vocab.json`, `directory/merges.txt` and the optional config files in `directory`.
    public init(directory: String) throws {
        try self.init(vocabularyFile: directory + "/vocab.json", mergesFile: directory + "/merges.txt",
                      configDirectory: directory)
    }

    /// Loads the vocabulary and merges from explicit files, the configuration (tokenizer_config.json,
    /// special_tokens_map.json) from `configDirectory` when given. Without configuration the CLIP defaults apply:
    /// `<|startoftext|>`, `<|endoftext|>` as unk and pad, 77 tokens.
    public init(vocabularyFile: String, mergesFile: String, configDirectory: String? = nil) throws {
        guard let vocabData = InputFile.contents(atPath: vocabularyFile) else {
            throw TokenizerError("\(vocabularyFile): cannot read the tokenizer vocabulary (expected vocab.json of a CLIP tokenizer)")
        }
        let vocabulary: [String: Int]
        do { vocabulary = try JSONDecoder().decode([String: Int].self, from: vocabData) } catch {
            throw TokenizerError("\(vocabularyFile): not a JSON object of token → id (\(error))")
        }
        guard let mergesData = InputFile.contents(atPath: mergesFile) else {
            throw TokenizerError("\(mergesFile): cannot read the BPE merges (expected merges.txt of a CLIP tokenizer)")
        }
        let configuration = try CLIPTokenizerConfiguration(directory: configDirectory)
        try self.init(vocabulary: vocabulary, mergesText: String(decoding: mergesData, as: UTF8.self),
                      configuration: configuration, source: mergesFile)
    }

    init(vocabulary: [String: Int], mergesText: String, configuration: CLIPTokenizerConfiguration, source: String) throws {
        // Ids index the text encoder's embedding rows (checked against `vocab_size` when a pipeline loads).
        if let (token, id) = vocabulary.first(where: { !(0...Self.maximumID).contains($0.value) }) {
            throw TokenizerError("\(source): token '\(token.prefix(40))' has id \(id) in vocab.json; ids must be in 0...\(Self.maximumID)")
        }
        self.vocabulary = vocabulary
        var tokensByID: [Int: String] = [:]
        tokensByID.reserveCapacity(vocabulary.count)
        for (token, id) in vocabulary { tokensByID[id] = token }

        var merges: [UInt64: (rank: Int, id: Int)] = [:]
        var rank = 0
        for (lineNumber, line) in mergesText.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.hasSuffix("\r") ? line.dropLast() : line[...]
            if trimmed.isEmpty || (lineNumber == 0 && trimmed.hasPrefix("#version")) { continue }
            let parts = trimmed.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError("\(source): line \(lineNumber + 1) is not a merge of two symbols separated by one space: '\(trimmed)'")
            }
            let left = String(parts[0]), right = String(parts[1])
            guard let leftID = vocabulary[left], let rightID = vocabulary[right], let mergedID = vocabulary[left + right] else {
                throw TokenizerError("\(source): merge '\(trimmed)' (line \(lineNumber + 1)) uses a symbol missing from vocab.json")
            }
            let key = Self.pairKey(leftID, rightID)
            if merges[key] == nil { merges[key] = (rank, mergedID) }
            rank += 1
        }
        self.merges = merges
        self.tokensByID = tokensByID

        let symbols = ByteLevelAlphabet.symbols
        byteIDs = symbols.map { vocabulary[$0] }
        finalByteIDs = symbols.map { vocabulary[$0 + "</w>"] }

        func id(of token: String, role: String) throws -> Int {
            guard let id = vocabulary[token] else {
                throw TokenizerError("\(source): the \(role) token '\(token)' named by the tokenizer config is not in vocab.json")
            }
            return id
        }
        bosTokenID = try id(of: configuration.bosToken, role: "bos")
        eosTokenID = try id(of: configuration.eosToken, role: "eos")
        padTokenID = try id(of: configuration.padToken, role: "pad")
        unknownTokenID = try id(of: configuration.unknownToken, role: "unk")
        contextLength = configuration.modelMaxLength
        guard contextLength >= 2 else {
            throw TokenizerError("\(source): model_max_length \(contextLength) leaves no room for BOS and EOS")
        }
        var added: [AddedToken] = []
        for token in configuration.addedTokens {
            let tokenID = try token.id ?? id(of: token.content, role: "added")
            guard (0...Self.maximumID).contains(tokenID) else {
                throw TokenizerError("\(source): added token '\(token.content.prefix(40))' has id \(tokenID); ids must be in 0...\(Self.maximumID)")
            }
            guard !token.content.isEmpty else { throw TokenizerError("\(source): an added token (id \(tokenID)) is empty") }
            added.append(AddedToken(content: Array(token.content.unicodeScalars), id: tokenID, normalized: token.normalized))
        }
        addedTokens = added
    }

    /// Largest token id accepted from the files.
    public static let maximumID = ModelLimits.maximumVocabulary - 1

    /// The largest id this tokenizer can produce (vocabulary, special and added tokens).
    public var largestID: Int {
        ([bosTokenID, eosTokenID, padTokenID, unknownTokenID] + Array(vocabulary.values) + addedTokens.map(\.id)).max() ?? 0
    }

    // MARK: Encoding

    /// The BPE ids of `text`, without BOS/EOS, truncation or padding.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        let raw = addedTokens.filter { !$0.normalized }
        let normalizedTokens = addedTokens.filter { $0.normalized }
        for segment in Self.split(Array(text.unicodeScalars), on: raw) {
            switch segment {
            case .token(let id): ids.append(id)
            case .text(let scalars):
                for inner in Self.split(CLIPPreTokenizer.normalize(scalars), on: normalizedTokens) {
                    switch inner {
                    case .token(let id): ids.append(id)
                    case .text(let normalized):
                        for word in CLIPPreTokenizer.words(normalized) { ids.append(contentsOf: bpe(word)) }
                    }
                }
            }
        }
        return ids
    }

    /// The ids diffusers passes to the text encoder: BOS + up to `contextLength - 2` tokens + EOS, padded to
    /// `contextLength` with the pad token; reports what truncation dropped.
    public func tokenize(_ prompt: String) -> TokenizedPrompt {
        let tokens = encode(prompt)
        let kept = min(tokens.count, contextLength - 2)
        var ids = [bosTokenID]
        ids.append(contentsOf: tokens[0..<kept])
        ids.append(eosTokenID)
        ids.append(contentsOf: repeatElement(padTokenID, count: contextLength - ids.count))
        return TokenizedPrompt(ids: ids, eosIndex: ids.firstIndex(of: eosTokenID)!, droppedTokenCount: tokens.count - kept,
                               droppedIDs: Array(tokens[kept...]))
    }

    /// Text of `ids` the way transformers decodes CLIP ids: symbols joined, `</w>` read as a space, bytes
    /// decoded as UTF-8 (invalid sequences replaced), trimmed. Special tokens are kept unless `skipSpecial`.
    public func decode(_ ids: [Int], skipSpecial: Bool = true) -> String {
        let special = Set([bosTokenID, eosTokenID, padTokenID] + addedTokens.map(\.id))
        var bytes: [UInt8] = []
        for id in ids {
            if skipSpecial && special.contains(id) { continue }
            guard let token = tokensByID[id] else { continue }
            let hasSuffix = token.hasSuffix("</w>")
            let body = hasSuffix ? String(token.dropLast(4)) : token
            if let decoded = ByteLevelAlphabet.bytes(of: body) {
                bytes.append(contentsOf: decoded)
            } else {
                bytes.append(contentsOf: Array(body.utf8))
            }
            if hasSuffix { bytes.append(0x20) }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        return String(text.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }

    // MARK: Internals

    private enum Segment {
        case text([Unicode.Scalar])
        case token(Int)
    }

    /// Splits out added tokens, leftmost match first and the longest at one position (tokenizers' matcher).
    private static func split(_ text: [Unicode.Scalar], on tokens: [AddedToken]) -> [Segment] {
        if tokens.isEmpty || text.isEmpty { return text.isEmpty ? [] : [.text(text)] }
        var segments: [Segment] = []
        var pending: [Unicode.Scalar] = []
        var i = 0
        while i < text.count {
            var best: AddedToken?
            for token in tokens where token.content.count > (best?.content.count ?? 0) && i + token.content.count <= text.count {
                if text[i..<(i + token.content.count)].elementsEqual(token.content) { best = token }
            }
            if let best {
                if !pending.isEmpty { segments.append(.text(pending)); pending = [] }
                segments.append(.token(best.id))
                i += best.content.count
            } else {
                pending.append(text[i])
                i += 1
            }
        }
        if !pending.isEmpty { segments.append(.text(pending)) }
        return segments
    }

    /// Byte-level BPE of one word: lowest-rank adjacent merge first (leftmost on ties), `</w>` on the last byte.
    ///
    /// The candidate pairs sit in a min-heap ordered by (rank, position) and symbols in a linked list, so a word
    /// of n bytes takes O(n log n) (the merge-and-rescan loop took O(n²): a 120 000-byte word took ~40 s). A
    /// heap entry is stale, and skipped, once either symbol changed or they are no longer neighbours; positions
    /// are the original byte indices, so "leftmost" is the same order as in the rescanning loop.
    private func bpe(_ word: ArraySlice<Unicode.Scalar>) -> [Int] {
        var utf8: [UInt8] = []
        for scalar in word { utf8.append(contentsOf: UTF8.encode(scalar)!) }
        let n = utf8.count
        var symbols: [Int] = []
        symbols.reserveCapacity(n)
        for (k, byte) in utf8.enumerated() {
            let id = k == n - 1 ? finalByteIDs[Int(byte)] : byteIDs[Int(byte)]
            symbols.append(id ?? unknownTokenID)
        }
        guard n > 1 else { return symbols }
        var next = Array(1...n)          // n = none
        var previous = Array(-1..<(n - 1))  // -1 = none
        var heap = PairHeap()
        func offer(_ left: Int) {
            let right = next[left]
            guard right < n, let merge = merges[Self.pairKey(symbols[left], symbols[right])] else { return }
            heap.push(.init(rank: merge.rank, left: left, right: right, leftID: symbols[left], rightID: symbols[right], merged: merge.id))
        }
        for k in 0..<(n - 1) { offer(k) }
        while let candidate = heap.pop() {
            let (l, r) = (candidate.left, candidate.right)
            guard next[l] == r, symbols[l] == candidate.leftID, symbols[r] == candidate.rightID, symbols[r] >= 0 else { continue }
            symbols[l] = candidate.merged
            symbols[r] = -1  // removed
            next[l] = next[r]
            if next[r] < n { previous[next[r]] = l }
            if previous[l] >= 0 { offer(previous[l]) }
            offer(l)
        }
        var result: [Int] = []
        var k = 0
        while k < n { result.append(symbols[k]); k = next[k] }
        return result
    }

    static func pairKey(_ left: Int, _ right: Int) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: left)) << 32 | UInt64(UInt32(truncatingIfNeeded: right))
    }
}

/// A binary min-heap of BPE merge candidates ordered by (rank, left position).
private struct PairHeap {
    struct Entry {
        var rank: Int, left: Int, right: Int, leftID: Int, rightID: Int, merged: Int
        func precedes(_ other: Entry) -> Bool { (rank, left) < (other.rank, other.left) }
    }

    private var items: [Entry] = []

    mutating func push(_ entry: Entry) {
        items.append(entry)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count && items[left].precedes(items[smallest]) { smallest = left }
                if right < items.count && items[right].precedes(items[smallest]) { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}

/// GPT-2/CLIP's reversible map from bytes to printable characters (`bytes_to_unicode`).
enum ByteLevelAlphabet {
    /// The symbol string of each byte value.
    static let symbols: [String] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var codePoints = printable
        var extra = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            codePoints.append(256 + extra)
            extra += 1
        }
        var table = [String](repeating: "", count: 256)
        for (byte, codePoint) in zip(printable, codePoints) {
            table[byte] = String(Character(Unicode.Scalar(UInt32(codePoint))!))
        }
        return table
    }()

    private static let byteOfScalar: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (byte, symbol) in symbols.enumerated() { map[symbol.unicodeScalars.first!.value] = UInt8(byte) }
        return map
    }()

    /// The bytes a string of byte-level symbols stands for, nil if it holds another character.
    static func bytes(of text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        for scalar in text.unicodeScalars {
            guard let byte = byteOfScalar[scalar.value] else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}
