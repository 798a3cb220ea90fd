/// The math-relevant keys of a transformers `CLIPTextConfig` (`text_encoder/config.json`), with
/// transformers' defaults for keys that are absent.
public struct CLIPTextConfiguration: Sendable, Equatable {
    /// Which transformers class the folder holds (`architectures[0]`).
    public enum Architecture: String, Sendable {
        case textModel = "CLIPTextModel"
        /// Adds `text_projection` (no bias) on the pooled output: SDXL's second text encoder.
        case textModelWithProjection = "CLIPTextModelWithProjection"
    }

    /// transformers' `hidden_act` values that CLIP text encoders use.
    public enum Activation: String, Sendable {
        /// x·σ(1.702x), OpenAI CLIP (SD1.x, SDXL's first encoder).
        case quickGELU = "quick_gelu"
        /// Exact (erf) GELU, OpenCLIP bigG (SDXL's second encoder), SD2.x.
        case gelu = "gelu"
    }

    public var architecture: Architecture
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var maxPositionEmbeddings: Int
    public var hiddenAct: Activation
    public var layerNormEpsilon: Float
    /// Where the pooled output is taken: 2 selects transformers' legacy rule (argmax of the ids),
    /// any other value the first position whose id equals it.
    public var eosTokenID: Int
    public var projectionDim: Int
    public var vocabSize: Int

    public init(architecture: Architecture = .textModel, hiddenSize: Int = 512, intermediateSize: Int = 2048,
                numHiddenLayers: Int = 12, numAttentionHeads: Int = 8, maxPositionEmbeddings: Int = 77,
                hiddenAct: Activation = .quickGELU, layerNormEpsilon: Float = 1e-5, eosTokenID: Int = 49407,
                projectionDim: Int = 512, vocabSize: Int = 49408) {
        self.architecture = architecture
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenAct = hiddenAct
        self.layerNormEpsilon = layerNormEpsilon
        self.eosTokenID = eosTokenID
        self.projectionDim = projectionDim
        self.vocabSize = vocabSize
    }

    /// Parses a `config.json`; `source` names the file in error messages.
    public init(json: JSONValue, source: String = "config.json") throws {
        let reader = try ComponentConfigReader(json, source: source)
        self.init()
        if let names = json["architectures"]?.array {
            guard let first = names.first?.string, let value = Architecture(rawValue: first) else {
                throw reader.error("architectures", "expected [\"CLIPTextModel\"] or [\"CLIPTextModelWithProjection\"] for a CLIP text encoder")
            }
            architecture = value
        }
        let channels = 1...ModelLimits.maximumChannels
        hiddenSize = try reader.int("hidden_size", default: hiddenSize, in: channels)
        intermediateSize = try reader.int("intermediate_size", default: intermediateSize, in: 1...ModelLimits.maximumIntermediateSize)
        numHiddenLayers = try reader.int("num_hidden_layers", default: numHiddenLayers, in: 1...ModelLimits.maximumTextLayers)
        numAttentionHeads = try reader.int("num_attention_heads", default: numAttentionHeads, in: channels)
        maxPositionEmbeddings = try reader.int("max_position_embeddings", default: maxPositionEmbeddings,
                                               in: 2...ModelLimits.maximumContextLength)
        let act = try reader.string("hidden_act", default: hiddenAct.rawValue)
        guard let activation = Activation(rawValue: act) else {
            throw reader.error("hidden_act", "not supported; CLIP text encoders use \"quick_gelu\" or \"gelu\"")
        }
        hiddenAct = activation
        layerNormEpsilon = Float(try reader.double("layer_norm_eps", default: Double(layerNormEpsilon), in: 0...1))
        vocabSize = try reader.int("vocab_size", default: vocabSize, in: 1...ModelLimits.maximumVocabulary)
        eosTokenID = try reader.int("eos_token_id", default: eosTokenID, in: 0...Int(Int32.max))  // compared with ids only
        projectionDim = try reader.int("projection_dim", default: projectionDim, in: channels)
        guard hiddenSize > 0, numAttentionHeads > 0, hiddenSize % numAttentionHeads == 0 else {
            throw reader.error("hidden_size", "\(hiddenSize) must be a positive multiple of `num_attention_heads` (\(numAttentionHeads))")
        }
    }

    /// Reads `<directory>/config.json`.
    public init(directory: String) throws {
        let path = directory + "/config.json"
        try self.init(json: try ComponentConfigReader.load(path), source: path)
    }
}
