/// Turns prompts into the UNet's conditioning the way diffusers' pipelines and AUTOMATIC1111 do.
///
/// - SD1.x/2.x (`StableDiffusionPipeline.encode_prompt`): the last hidden state (after the final
///   layer norm) of the one text encoder; with clip skip N > 1 (A1111's "Clip skip"), `hidden_states[-N]` through
///   the final layer norm (diffusers' `clip_skip=N-1`).
/// - SDXL (`StableDiffusionXLPipeline.encode_prompt`): the penultimate hidden state of each encoder,
///   concatenated along channels, plus the second encoder's projected pooled output (`text_embeds`). Clip skip is
///   not applied (A1111's default for SDXL).
///
/// Prompts use A1111's syntax (`PromptAttention`) and length rules (`PromptChunks`): each 75-token chunk is encoded
/// on its own, weighted chunks get A1111's "Original" emphasis (hidden states × multiplier, then rescaled to the
/// unweighted mean), and the chunks are concatenated along the token axis; the pooled output comes from the first
/// chunk. A plain prompt of up to 75 tokens gives exactly diffusers' embeddings.
struct TextConditioning {
    /// A tokenizer and the text encoder it feeds.
    struct Encoder {
        let tokenizer: CLIPTokenizer
        let model: any TextEncoder
    }

    /// The prompt embeddings of one prompt.
    struct Embeddings {
        /// [1, 77 × chunks, cross_attention_dim].
        var hiddenStates: Tensor
        /// [1, projection_dim] for SDXL, nil otherwise.
        var pooled: Tensor?
    }

    let encoders: [Encoder]
    let usesPenultimateLayer: Bool

    /// The chunks of `prompt` for each encoder.
    func chunks(_ prompt: String) -> [PromptChunks] {
        encoders.map { PromptChunks(prompt: prompt, tokenizer: $0.tokenizer) }
    }

    /// Encodes one prompt (see the type's documentation).
    func encode(_ prompt: String, clipSkip: Int = 1, warnings: inout [String]) throws -> Embeddings {
        try encode(chunks(prompt), clipSkip: clipSkip)
    }

    /// Encodes a prompt and a negative prompt padded to the same number of chunks with the empty prompt's chunk
    /// (A1111 with "pad prompt/negative prompt to be same length"), so that both halves of a guided batch fit.
    func encodePair(_ prompt: String, _ negative: String, clipSkip: Int) throws -> (positive: Embeddings, negative: Embeddings) {
        var p = chunks(prompt), n = chunks(negative)
        for i in encoders.indices {
            let empty = PromptChunks.empty(tokenizer: encoders[i].tokenizer)
            while p[i].tokens.count < n[i].tokens.count { p[i].tokens += empty.tokens; p[i].multipliers += empty.multipliers }
            while n[i].tokens.count < p[i].tokens.count { n[i].tokens += empty.tokens; n[i].multipliers += empty.multipliers }
        }
        return (try encode(p, clipSkip: clipSkip), try encode(n, clipSkip: clipSkip))
    }

    /// Encodes the chunks of each encoder (equal chunk counts are padded with empty chunks where the tokenizers differ).
    func encode(_ perEncoder: [PromptChunks], clipSkip: Int) throws -> Embeddings {
        var perEncoder = perEncoder
        let count = perEncoder.map(\.tokens.count).max() ?? 1
        for i in perEncoder.indices {
            let empty = PromptChunks.empty(tokenizer: encoders[i].tokenizer)
            while perEncoder[i].tokens.count < count {
                perEncoder[i].tokens += empty.tokens; perEncoder[i].multipliers += empty.multipliers
            }
        }
        var states: [Tensor] = []
        var pooled: Tensor?
        for (encoder, chunks) in zip(encoders, perEncoder) {
            var hidden: Tensor
            if usesPenultimateLayer {
                let output = try encoder.model.encode(chunks.tokens)
                hidden = output.penultimateHiddenState
                pooled = Tensor(shape: [1, output.pooled.shape[1]], scalars: Array(output.pooled.scalars[0..<output.pooled.shape[1]]))
            } else if clipSkip > 1 {
                hidden = try encoder.model.hiddenState(chunks.tokens, clipSkip: clipSkip)
            } else {
                hidden = try encoder.model.encode(chunks.tokens).lastHiddenState
            }
            Self.emphasize(&hidden, chunks.multipliers)
            states.append(hidden.reshaped([1, -1, hidden.shape[2]]))
        }
        return Embeddings(hiddenStates: states.count == 1 ? states[0] : Self.concatenateChannels(states), pooled: pooled)
    }

    /// A1111's "Original" emphasis, per chunk of `states` [chunks, tokens, width]: every token's hidden state times
    /// its multiplier, then the chunk scaled so that its mean is the mean it had before. Unweighted chunks are left
    /// as they are (the same result, without rounding).
    static func emphasize(_ states: inout Tensor, _ multipliers: [[Float]]) {
        let (tokens, width) = (states.shape[1], states.shape[2])
        for (c, chunk) in multipliers.enumerated() where chunk.contains(where: { $0 != 1 }) {
            let base = c * tokens * width
            states.scalars.withUnsafeMutableBufferPointer { z in
                var before = 0.0, after = 0.0
                for i in base..<(base + tokens * width) { before += Double(z[i]) }
                for t in 0..<tokens {
                    for j in 0..<width {
                        z[base + t * width + j] *= chunk[t]
                        after += Double(z[base + t * width + j])
                    }
                }
                let count = Double(tokens * width)
                let ratio = Float(before / count) / Float(after / count)
                for i in base..<(base + tokens * width) { z[i] *= ratio }
            }
        }
    }

    /// All-zero embeddings shaped like `like` (SDXL's `force_zeros_for_empty_prompt`).
    static func zeros(like e: Embeddings) -> Embeddings {
        Embeddings(hiddenStates: Tensor(zeros: e.hiddenStates.shape), pooled: e.pooled.map { Tensor(zeros: $0.shape) })
    }

    /// Concatenates [..., c_i] tensors along the last dimension (`torch.cat(dim=-1)`).
    static func concatenateChannels(_ parts: [Tensor]) -> Tensor {
        let rows = parts[0].count / parts[0].shape.last!
        let widths = parts.map { $0.shape.last! }
        var shape = parts[0].shape
        shape[shape.count - 1] = widths.reduce(0, +)
        var scalars: [Float] = []
        scalars.reserveCapacity(rows * shape.last!)
        for r in 0..<rows {
            for (part, width) in zip(parts, widths) {
                scalars.append(contentsOf: part.scalars[(r * width)..<((r + 1) * width)])
            }
        }
        return Tensor(shape: shape, scalars: scalars)
    }
}
