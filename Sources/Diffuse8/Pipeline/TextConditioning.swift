/// Turns prompts into the UNet's conditioning the way diffusers' pipelines do.
///
/// - SD1.x/2.x (`StableDiffusionPipeline.encode_prompt`): the last hidden state (after the final
///   layer norm) of the one text encoder.
/// - SDXL (`StableDiffusionXLPipeline.encode_prompt`): the penultimate hidden state of each encoder,
///   concatenated along channels, plus the second encoder's projected pooled output (`text_embeds`).
struct TextConditioning {
    /// A tokenizer and the text encoder it feeds.
    struct Encoder {
        let tokenizer: CLIPTokenizer
        let model: any TextEncoder
    }

    /// The prompt embeddings of one prompt.
    struct Embeddings {
        /// [1, 77, cross_attention_dim].
        var hiddenStates: Tensor
        /// [1, projection_dim] for SDXL, nil otherwise.
        var pooled: Tensor?
    }

    let encoders: [Encoder]
    let usesPenultimateLayer: Bool

    /// Encodes one prompt; appends a warning when the prompt was cut to the context length.
    func encode(_ prompt: String, warnings: inout [String]) throws -> Embeddings {
        var states: [Tensor] = []
        var pooled: Tensor?
        for (index, encoder) in encoders.enumerated() {
            let tokens = encoder.tokenizer.tokenize(prompt)
            if tokens.droppedTokenCount > 0 && index == 0 {
                warnings.append("prompt truncated to \(encoder.tokenizer.contextLength) tokens: "
                                + "\(tokens.droppedTokenCount) tokens dropped")
            }
            let output = try encoder.model.encode([tokens.ids])
            if usesPenultimateLayer {
                states.append(output.penultimateHiddenState)
                pooled = output.pooled
            } else {
                states.append(output.lastHiddenState)
            }
        }
        return Embeddings(hiddenStates: states.count == 1 ? states[0] : Self.concatenateChannels(states), pooled: pooled)
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
