/// transformers' `CLIPTextModel` / `CLIPTextModelWithProjection` in FP16 (or BF16) on an NVIDIA GPU: the device twin of
/// the CPU `CLIPTextModel` (same weights, same output fields), used for prompt encoding by the CUDA pipeline.
///
/// Embeddings are looked up on the host (77 rows) and uploaded; then per encoder layer: LayerNorm →
/// fused Q/K/V GEMM → causal attention (`shortAttention`, read in place from the fused projection) → out_proj
/// with the residual added by the GEMM → LayerNorm → fc1 → quick_gelu or exact GELU → fc2 (+ residual).
/// The pooled output is the final-normed row at the EOS position (transformers' rule,
/// `CLIPTextModel.poolingPosition`), projected by `text_projection` when present.
///
/// Limitations: 16-bit storage (FP16 or BF16); no attention mask (diffusers' pipelines pass none); ≤ 1024 tokens.
public final class CUDACLIPTextModel {
    public let configuration: CLIPTextConfiguration
    public let kernels: CUDAKernels
    public var context: CUDAContext { kernels.context }

    /// One pre-norm encoder layer's device weights.
    struct Layer {
        let norm1: CUDANormWeights
        /// q_proj, k_proj, v_proj stacked: [3·hidden, hidden].
        let queryKeyValue: CUDALinearWeights
        let outputProjection: CUDALinearWeights
        let norm2: CUDANormWeights
        let fc1: CUDALinearWeights
        let fc2: CUDALinearWeights
    }

    /// Host tables (FP32): the lookup runs on the host.
    let tokenEmbedding: Tensor
    let positionEmbedding: Tensor
    let layers: [Layer]
    let finalLayerNorm: CUDANormWeights
    let textProjection: CUDALinearWeights?

    /// Uploads `model`'s weights (in the storage type). The CPU model can be dropped afterwards (the embedding tables are kept).
    public init(_ model: CLIPTextModel, kernels: CUDAKernels) throws {
        let context = kernels.context
        configuration = model.configuration
        self.kernels = kernels
        tokenEmbedding = model.tokenEmbedding
        positionEmbedding = model.positionEmbedding
        layers = try model.layers.map { layer in
            let a = layer.selfAttention
            return Layer(norm1: try CUDANormWeights(context, layer.layerNorm1),
                         queryKeyValue: try CUDALinearWeights(context, stacking: [a.queryProjection, a.keyProjection, a.valueProjection]),
                         outputProjection: try CUDALinearWeights(context, a.outputProjection),
                         norm2: try CUDANormWeights(context, layer.layerNorm2),
                         fc1: try CUDALinearWeights(context, layer.fc1), fc2: try CUDALinearWeights(context, layer.fc2))
        }
        finalLayerNorm = try CUDANormWeights(context, model.finalLayerNorm)
        textProjection = try model.textProjection.map { try CUDALinearWeights(context, $0) }
    }

    /// The device results of one call (storage type).
    public struct Output {
        /// [batch, tokens, hidden] after `final_layer_norm`.
        public var lastHiddenState: CUDATensor
        /// [batch, tokens, hidden]: hidden_states[-2] (the embeddings when there is one layer).
        public var penultimateHiddenState: CUDATensor
        /// [batch, hidden]: the final-normed row at each sequence's EOS position.
        public var pooledOutput: CUDATensor
        /// [batch, projection_dim] for `CLIPTextModelWithProjection`.
        public var textEmbeds: CUDATensor?
    }

    /// Runs the encoder on equal-length token id rows (like `model(input_ids, output_hidden_states=True)`).
    public func callAsFunction(_ tokenIDs: [[Int]]) throws -> Output {
        let batch = tokenIDs.count, length = tokenIDs.first?.count ?? 0
        guard batch > 0, tokenIDs.allSatisfy({ $0.count == length }), length <= configuration.maxPositionEmbeddings else {
            throw CUDAError.invalidArgument("CUDACLIPTextModel: need equal-length token rows of ≤ \(configuration.maxPositionEmbeddings) ids")
        }
        guard tokenIDs.joined().allSatisfy({ $0 >= 0 && $0 < configuration.vocabSize }) else {
            throw CUDAError.invalidArgument("CUDACLIPTextModel: a token id is outside the vocabulary (vocab_size \(configuration.vocabSize))")
        }
        let k = kernels, hidden = configuration.hiddenSize, heads = configuration.numAttentionHeads
        var x = try context.upload(CLIPTextModel.embed(tokenIDs, tokenEmbedding: tokenEmbedding, positionEmbedding: positionEmbedding))
        var penultimate = x
        for (index, layer) in layers.enumerated() {
            if index == layers.count - 1 { penultimate = x }
            let qkv = try k.linear(k.layerNorm(x, weight: layer.norm1.weight, bias: layer.norm1.bias, epsilon: layer.norm1.epsilon),
                                   weight: layer.queryKeyValue.weight, bias: layer.queryKeyValue.bias)
            let attended = try withExtendedLifetime(qkv) {
                try k.shortAttention(query: qkv.address, key: qkv.address + UInt64(hidden * 2), value: qkv.address + UInt64(hidden * 4),
                                     stride: 3 * hidden, batch: batch, length: length, channels: hidden, heads: heads, causal: true)
            }
            x = try k.linear(attended, weight: layer.outputProjection.weight, bias: layer.outputProjection.bias, residual: x)
            var h = try k.linear(k.layerNorm(x, weight: layer.norm2.weight, bias: layer.norm2.bias, epsilon: layer.norm2.epsilon),
                                 weight: layer.fc1.weight, bias: layer.fc1.bias)
            switch configuration.hiddenAct {
            case .quickGELU: h = try k.quickGELU(h)
            case .gelu: h = try k.gelu(h)
            }
            x = try k.linear(h, weight: layer.fc2.weight, bias: layer.fc2.bias, residual: x)
        }
        let last = try k.layerNorm(x, weight: finalLayerNorm.weight, bias: finalLayerNorm.bias, epsilon: finalLayerNorm.epsilon)
        // Gather each row's EOS hidden state by device-to-device copies.
        let pooled = try context.empty([batch, hidden])
        try context.makeCurrent()
        for (b, ids) in tokenIDs.enumerated() {
            let position = CLIPTextModel.poolingPosition(ids, eosTokenID: configuration.eosTokenID)
            try context.copy(from: last.address + UInt64(((b * length + position) * hidden) * 2),
                             to: pooled.address + UInt64(b * hidden * 2), bytes: hidden * 2)
        }
        let textEmbeds = try textProjection.map { try k.linear(pooled, weight: $0.weight, bias: $0.bias) }
        return Output(lastHiddenState: last, penultimateHiddenState: penultimate, pooledOutput: pooled, textEmbeds: textEmbeds)
    }
}

extension CUDACLIPTextModel: TextEncoder {
    public func encode(_ tokenIDs: [[Int]]) throws -> TextEncoderOutput {
        let output = try self(tokenIDs)
        return TextEncoderOutput(lastHiddenState: try context.download(output.lastHiddenState),
                                 penultimateHiddenState: try context.download(output.penultimateHiddenState),
                                 pooled: try context.download(output.textEmbeds ?? output.pooledOutput))
    }
}
