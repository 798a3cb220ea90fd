/// A prompt cut into CLIP context windows the way AUTOMATIC1111 does (`TextConditionalModel.tokenize_line`):
/// the weighted pieces of `PromptAttention` are tokenized without special tokens and packed 75 tokens per chunk;
/// a chunk that fills up within 20 tokens after a comma moves the words after that comma to the next chunk;
/// `BREAK` starts a new chunk. Each chunk becomes BOS + 75 tokens (padded) + EOS, with one multiplier per token
/// (1 for BOS, EOS and padding). After the first EOS the padding uses the tokenizer's pad token (A1111: the end
/// token for CLIP ViT-L, 0 for OpenCLIP — what SD1.x and SDXL tokenizers' pad tokens are).
public struct PromptChunks: Equatable, Sendable {
    /// Token ids of each chunk, `chunkLength + 2` each.
    public var tokens: [[Int]]
    /// Attention multiplier of each token.
    public var multipliers: [[Float]]

    /// Tokens per chunk between BOS and EOS (A1111's `chunk_length`).
    public static let chunkLength = 75
    /// How far back a comma may be for the words after it to move to the next chunk (A1111's default
    /// `comma_padding_backtrack`).
    public static let commaBacktrack = 20

    public init(tokens: [[Int]], multipliers: [[Float]]) {
        self.tokens = tokens
        self.multipliers = multipliers
    }

    public init(prompt: String, tokenizer: CLIPTokenizer) {
        self.init(pieces: PromptAttention.parse(prompt), tokenizer: tokenizer)
    }

    public init(pieces: [PromptAttention.Piece], tokenizer: CLIPTokenizer) {
        let comma = tokenizer.vocabulary[",</w>"]
        var chunks: [(tokens: [Int], multipliers: [Double])] = []
        var tokens: [Int] = [], weights: [Double] = []
        var lastComma = -1
        func nextChunk() {
            let missing = Self.chunkLength - tokens.count
            if missing > 0 {
                tokens += repeatElement(tokenizer.eosTokenID, count: missing)
                weights += repeatElement(1, count: missing)
            }
            chunks.append(([tokenizer.bosTokenID] + tokens + [tokenizer.eosTokenID], [1] + weights + [1]))
            tokens = []; weights = []
            lastComma = -1
        }
        for piece in pieces {
            if piece.isBreak { nextChunk(); continue }
            for token in tokenizer.encode(piece.text) {
                if token == comma {
                    lastComma = tokens.count
                } else if tokens.count == Self.chunkLength, lastComma != -1, tokens.count - lastComma <= Self.commaBacktrack {
                    let moved = Array(tokens[(lastComma + 1)...]), movedWeights = Array(weights[(lastComma + 1)...])
                    tokens.removeSubrange((lastComma + 1)...)
                    weights.removeSubrange((lastComma + 1)...)
                    nextChunk()
                    tokens = moved; weights = movedWeights
                }
                if tokens.count == Self.chunkLength { nextChunk() }
                tokens.append(token)
                weights.append(piece.weight)
            }
        }
        if !tokens.isEmpty || chunks.isEmpty { nextChunk() }
        self.tokens = chunks.map { chunk in
            // after the first end token, the pad token (a no-op where they are the same)
            guard let end = chunk.tokens.firstIndex(of: tokenizer.eosTokenID) else { return chunk.tokens }
            return Array(chunk.tokens[...end]) + repeatElement(tokenizer.padTokenID, count: chunk.tokens.count - end - 1)
        }
        multipliers = chunks.map { $0.multipliers.map(Float.init) }
    }

    /// The one chunk of the empty prompt (BOS, EOS, padding; multipliers 1), which pads the shorter of a prompt and
    /// its negative prompt to the other's length.
    public static func empty(tokenizer: CLIPTokenizer) -> PromptChunks { PromptChunks(prompt: "", tokenizer: tokenizer) }

    /// Whether every multiplier is 1 (no emphasis to apply).
    public var isUnweighted: Bool { multipliers.allSatisfy { $0.allSatisfy { $0 == 1 } } }
}
