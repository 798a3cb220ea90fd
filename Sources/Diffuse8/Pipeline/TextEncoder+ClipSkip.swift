extension TextEncoder {
    /// `hidden_states[-clipSkip]` through the final layer norm, [batch, tokens, hidden] (A1111's "Clip skip"; 1 is the
    /// last hidden state). Encoders that cannot return inner layers support only 1.
    public func hiddenState(_ tokenIDs: [[Int]], clipSkip: Int) throws -> Tensor {
        guard clipSkip > 1 else { return try encode(tokenIDs).lastHiddenState }
        guard let model = self as? CLIPTextModel else {
            throw PipelineError("clip skip \(clipSkip) needs the CPU text encoder (--device cpu); this one returns only its last layers")
        }
        let layers = model.configuration.numHiddenLayers
        guard clipSkip <= layers else {
            throw PipelineError("clip skip \(clipSkip) is outside 1...\(layers) (the text encoder has \(layers) layers)")
        }
        let hidden = try model.forward(CPUBackend.shared, tokenIDs: tokenIDs).hiddenStates[layers + 1 - clipSkip]
        return CPUBackend.shared.layerNorm(hidden, model.finalLayerNorm)
    }
}
