/// What a CLIP text encoder returns on the CPU, named after transformers' output fields.
public typealias CLIPTextOutput = CLIPTextModel.Output<Tensor>

/// transformers' `CLIPTextModel` and `CLIPTextModelWithProjection` (5.24 semantics) in FP32 on the CPU.
///
/// token + position embeddings → `num_hidden_layers` causal pre-norm encoder layers → `final_layer_norm`;
/// pooled output at the EOS position (config `eos_token_id == 2`: argmax of the ids, transformers' legacy
/// rule; otherwise the first position whose id is `eos_token_id`, position 0 when there is none).
///
/// Weights are the transformers state-dict names. Both layouts of the plain text model load: with the
/// `text_model.` prefix (transformers 4 saves, the public SD repositories) and without (transformers 5).
/// Limitations: no attention (padding) mask and no custom position ids — diffusers' SD pipelines pass neither.
public final class CLIPTextModel {
    public let configuration: CLIPTextConfiguration
    public let tokenEmbedding: Tensor
    public let positionEmbedding: Tensor
    public let layers: [CLIPEncoderLayer]
    public let finalLayerNorm: LayerNorm
    /// `text_projection` (no bias); present for `.textModelWithProjection`.
    public let textProjection: Linear?

    /// Builds the model and checks the weights against the configuration: every tensor's shape, and that
    /// no tensor is left unused (so a wrong `num_hidden_layers` or architecture is an error, not silent).
    public init(configuration: CLIPTextConfiguration, weights store: TensorStore) throws {
        self.configuration = configuration
        let weights = ComponentWeightAudit(store, component: "CLIP text encoder (\(configuration.architecture.rawValue))")
        guard let prefix = ["text_model.", ""].first(where: { weights.contains($0 + "embeddings.token_embedding.weight") }) else {
            throw ComponentWeightsError(
                "CLIP text encoder weights have no tensor 'text_model.embeddings.token_embedding.weight' "
                + "(nor 'embeddings.token_embedding.weight'); is this a transformers CLIP text encoder checkpoint?")
        }
        let hidden = configuration.hiddenSize
        let tokenName = prefix + "embeddings.token_embedding.weight"
        tokenEmbedding = try weights.tensor(named: tokenName)
        try ComponentWeightAudit.requireShape(tokenEmbedding, [configuration.vocabSize, hidden], tokenName + " (vocab_size, hidden_size)")
        let positionName = prefix + "embeddings.position_embedding.weight"
        positionEmbedding = try weights.tensor(named: positionName)
        try ComponentWeightAudit.requireShape(positionEmbedding, [configuration.maxPositionEmbeddings, hidden],
                                              positionName + " (max_position_embeddings, hidden_size)")
        layers = try (0..<configuration.numHiddenLayers).map {
            try CLIPEncoderLayer(weights, prefix + "encoder.layers.\($0)", configuration: configuration)
        }
        finalLayerNorm = try weights.layerNorm(prefix + "final_layer_norm", channels: hidden, epsilon: configuration.layerNormEpsilon)
        textProjection = configuration.architecture == .textModelWithProjection ? try Linear(weights, "text_projection", bias: false) : nil
        if let textProjection {
            try ComponentWeightAudit.requireShape(textProjection.weight, [configuration.projectionDim, hidden],
                                                  "text_projection.weight (projection_dim, hidden_size)")
        }
        // position_ids is a buffer older transformers saved; it carries no weights.
        try weights.requireAllUsed(ignoring: { $0.hasSuffix("embeddings.position_ids") })
    }

    /// Loads `<directory>/config.json` and the weights `ComponentWeights` finds (`model.safetensors`,
    /// its sharded index, or the `fp16` variants).
    public static func load(directory: String) throws -> CLIPTextModel {
        let configuration = try CLIPTextConfiguration(directory: directory)
        return try CLIPTextModel(configuration: configuration, weights: ComponentWeights.open(directory: directory))
    }

    /// Runs the encoder on equal-length token id sequences (normally 77 ids each, as the CLIP tokenizer
    /// pads them), like `model(input_ids, output_hidden_states=True)`, in FP32 on the CPU (ids that do not fit
    /// stop the program: `encode` throws instead).
    public func callAsFunction(_ tokenIDs: [[Int]]) -> CLIPTextOutput {
        CPUBackend.unchecked { try forward(CPUBackend.shared, tokenIDs: tokenIDs) }
    }

    /// What the one forward pass returns on a backend.
    public struct Output<Value> {
        /// [batch, tokens, hidden], after `final_layer_norm` (SD1.x's conditioning).
        public var lastHiddenState: Value
        /// `output_hidden_states=True`: index 0 = embeddings, index i = output of layer i (before the final
        /// layer norm); `numHiddenLayers + 1` entries.
        public var hiddenStates: [Value]
        /// [batch, hidden]: the final-normed hidden state at each sequence's EOS position.
        public var pooledOutput: Value
        /// [batch, projection_dim]: `text_projection(pooledOutput)`, only for CLIPTextModelWithProjection.
        public var textEmbeds: Value?

        /// hidden_states[-2], the penultimate layer's output (what SDXL conditions on).
        public var penultimateHiddenState: Value { hiddenStates[hiddenStates.count - 2] }
    }

    /// The one forward pass of this model, on any backend. Embeddings are looked up on the host (77 rows) and
    /// uploaded; the backend's fusion plan (if any) decides whether Q/K/V run as one product.
    public func forward<B: ModelBackend>(_ b: B, tokenIDs: [[Int]]) throws -> Output<B.Value> {
        let batch = tokenIDs.count, length = tokenIDs.first?.count ?? 0
        guard batch > 0, length > 0, tokenIDs.allSatisfy({ $0.count == length }) else {
            throw ModelBackendError("CLIPTextModel: need one or more token sequences of equal, non-zero length")
        }
        guard length <= configuration.maxPositionEmbeddings else {
            throw ModelBackendError("CLIPTextModel: \(length) tokens exceed max_position_embeddings \(configuration.maxPositionEmbeddings)")
        }
        let vocabulary = tokenEmbedding.shape[0]
        if let bad = tokenIDs.joined().first(where: { !(0..<vocabulary).contains($0) }) {
            throw ModelBackendError("CLIPTextModel: token id \(bad) outside the vocabulary (vocab_size \(vocabulary))")
        }
        let plan = b.fusionPlan(for: self)
        var hiddenStates = [try b.upload(embed(tokenIDs))]
        for layer in layers { hiddenStates.append(try layer.forward(b, hiddenStates[hiddenStates.count - 1], plan: plan)) }
        let last = try b.layerNorm(hiddenStates[hiddenStates.count - 1], finalLayerNorm)
        let pooled = try b.gatherRows(last, positions: tokenIDs.map(poolingPosition))
        return Output(lastHiddenState: last, hiddenStates: hiddenStates, pooledOutput: pooled,
                      textEmbeds: try textProjection.map { try b.linear(pooled, $0, residual: nil) })
    }

    /// Every Linear layer (per encoder layer q/k/v/out, fc1, fc2; then `text_projection`).
    public var linearLayers: [Linear] { layers.flatMap(\.linearLayers) + (textProjection.map { [$0] } ?? []) }

    /// Every LayerNorm (per layer `layer_norm1`, `layer_norm2`; then `final_layer_norm`).
    public var layerNorms: [LayerNorm] { layers.flatMap { [$0.layerNorm1, $0.layerNorm2] } + [finalLayerNorm] }

    /// The token index whose hidden state becomes the pooled output, transformers' rule: `eos_token_id == 2`
    /// (legacy configs) → argmax of the ids (first index of the largest); otherwise the first position holding
    /// `eos_token_id`, 0 when there is none.
    public func poolingPosition(_ ids: [Int]) -> Int {
        guard configuration.eosTokenID == 2 else { return ids.firstIndex(of: configuration.eosTokenID) ?? 0 }
        var best = 0
        for (i, id) in ids.enumerated() where id > ids[best] { best = i }
        return best
    }

    /// token_embedding[ids] + position_embedding[0..<length] → [batch, length, hidden] (ids checked by `forward`).
    func embed(_ tokenIDs: [[Int]]) -> Tensor {
        let hidden = tokenEmbedding.shape[1], length = tokenIDs[0].count
        return Tensor(shape: [tokenIDs.count, length, hidden]) { out in
            for (b, ids) in tokenIDs.enumerated() {
                for (t, id) in ids.enumerated() {
                    let dst = (b * length + t) * hidden
                    for c in 0..<hidden {
                        out[dst + c] = tokenEmbedding.scalars[id * hidden + c] + positionEmbedding.scalars[t * hidden + c]
                    }
                }
            }
        }
    }
}

extension CLIPTextModel.Output: Sendable where Value: Sendable {}
