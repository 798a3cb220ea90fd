/// diffusers' `UNet2DConditionModel` configuration (the unet `config.json`), reduced to what changes the
/// math and checked key by key.
///
/// Missing keys take diffusers' `__init__` defaults (as `from_pretrained` does). Lists that diffusers accepts
/// either as one value or per down block (`layers_per_block`, `attention_head_dim`, `num_attention_heads`,
/// `cross_attention_dim`, `transformer_layers_per_block`) are stored expanded to one entry per down block;
/// up blocks use them reversed, the mid block uses the last entry (as diffusers does).
///
/// Limitations (each rejected with a `ComponentConfigurationError` naming the key): class embeddings, encoder
/// hidden-state projections, timestep conditioning projections, `scale_shift` resnets, Fourier time
/// embeddings, non-`silu` activations, GLIGEN and other attention types, asymmetric
/// `reverse_transformer_layers_per_block`, addition embeddings other than SDXL's `text_time`, block types
/// other than `CrossAttnDownBlock2D`/`DownBlock2D`/`CrossAttnUpBlock2D`/`UpBlock2D`, mid blocks other than
/// `UNetMidBlock2DCrossAttn`, conv_in/conv_out kernels other than 3.
public struct UNetConfiguration: Sendable, Equatable {
    /// A down block kind (`down_block_types` entry).
    public enum DownBlockType: String, Sendable {
        /// `CrossAttnDownBlock2D`: resnets each followed by a `Transformer2DModel`.
        case crossAttention = "CrossAttnDownBlock2D"
        /// `DownBlock2D`: resnets only.
        case plain = "DownBlock2D"
    }

    /// An up block kind (`up_block_types` entry).
    public enum UpBlockType: String, Sendable {
        /// `CrossAttnUpBlock2D`: resnets (on skip-concatenated input) each followed by a `Transformer2DModel`.
        case crossAttention = "CrossAttnUpBlock2D"
        /// `UpBlock2D`: resnets only.
        case plain = "UpBlock2D"
    }

    /// Channels of the input latent (`in_channels`, 4 for SD).
    public var inChannels: Int
    /// Channels of the predicted output (`out_channels`).
    public var outChannels: Int
    /// Output channels of each down block (`block_out_channels`); up blocks use them reversed.
    public var blockOutChannels: [Int]
    /// Resnets per down block (`layers_per_block`); an up block has one more.
    public var layersPerBlock: [Int]
    /// `down_block_types`, one per entry of `blockOutChannels`.
    public var downBlockTypes: [DownBlockType]
    /// `up_block_types`, as many as the down blocks.
    public var upBlockTypes: [UpBlockType]
    /// Number of attention heads per down block: `num_attention_heads`, or — diffusers' naming quirk — the
    /// value of `attention_head_dim` when `num_attention_heads` is null (the case for every SD/SDXL config).
    /// The head size is the block's channels divided by this.
    public var attentionHeads: [Int]
    /// Width of the text-encoder hidden states cross-attention reads (`cross_attention_dim`), per down block.
    public var crossAttentionDim: [Int]
    /// `BasicTransformerBlock`s per `Transformer2DModel` in each down block (`transformer_layers_per_block`).
    public var transformerLayersPerBlock: [Int]
    /// `use_linear_projection`: proj_in/proj_out are `Linear` on tokens (SD2/SDXL) instead of 1×1 convs (SD1).
    public var useLinearProjection: Bool
    /// `norm_num_groups`: groups of every resnet / transformer / output GroupNorm.
    public var normNumGroups: Int
    /// `norm_eps`: epsilon of the resnet and output GroupNorms (transformer GroupNorms use 1e-6).
    public var normEpsilon: Float
    /// `flip_sin_to_cos`: sinusoidal timestep embeddings are [cos, sin] instead of [sin, cos].
    public var flipSinToCos: Bool
    /// `freq_shift`: diffusers' `downscale_freq_shift` of the sinusoidal embedding.
    public var freqShift: Float
    /// `center_input_sample`: the input is mapped x → 2x − 1 first.
    public var centerInputSample: Bool
    /// `upcast_attention`: upcasts attention to FP32 in FP16 runs; no effect in FP32, kept for backends that
    /// run in lower precision.
    public var upcastAttention: Bool
    /// `addition_embed_type == "text_time"` (SDXL): pooled text embeddings and time ids are embedded and added
    /// to the time embedding.
    public var usesTextTimeEmbedding: Bool
    /// `addition_time_embed_dim`: sinusoidal width per time id (SDXL: 256); nil without `text_time`.
    public var additionTimeEmbedDim: Int?
    /// `projection_class_embeddings_input_dim`: input width of `add_embedding` (pooled text width + time ids ×
    /// `additionTimeEmbedDim`; SDXL: 1280 + 6·256 = 2816); nil without `text_time`.
    public var projectionClassEmbeddingsInputDim: Int?
    /// `downsample_padding`: padding of the stride-2 downsampling convs (0 means diffusers' asymmetric
    /// (0,1,0,1) zero pad first).
    public var downsamplePadding: Int
    /// `mid_block_scale_factor`: the mid block's resnet outputs are divided by this.
    public var midBlockScaleFactor: Float
    /// `resnet_out_scale_factor`: the down/up block resnet outputs are divided by this.
    public var resnetOutputScaleFactor: Float
    /// `act_fn`: always "silu" (the only supported value).
    public var activationFunction: String
    /// Width of the time embedding: `time_embedding_dim`, default 4 × `blockOutChannels[0]`.
    public var timeEmbeddingDim: Int
    /// `sample_size`: the latent size the model was trained at (informational).
    public var sampleSize: Int?

    /// Reads a parsed `config.json`. `source` (a file path) is only used in error messages.
    public init(json: JSONValue, source: String = "unet config") throws {
        try self.init(ComponentConfigReader(json, source: source))
    }

    /// Reads `path` (a unet `config.json`).
    public init(contentsOf path: String) throws {
        try self.init(json: ComponentConfigReader.load(path), source: path)
    }

    private init(_ r: ComponentConfigReader) throws {
        try r.requireClassName("UNet2DConditionModel")
        try Self.rejectUnsupported(r)
        let channels = 1...ModelLimits.maximumChannels
        inChannels = try r.int("in_channels", default: 4, in: channels)
        outChannels = try r.int("out_channels", default: 4, in: channels)
        blockOutChannels = try r.ints("block_out_channels", default: [320, 640, 1280, 1280], in: channels,
                                      count: 1...ModelLimits.maximumBlocks)
        let blocks = blockOutChannels.count

        let downNames = try r.strings("down_block_types", default: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
        downBlockTypes = try downNames.map { name in
            guard let t = DownBlockType(rawValue: name) else {
                throw r.error("down_block_types", "block type '\(name)' is not supported (supported: CrossAttnDownBlock2D, DownBlock2D)")
            }
            return t
        }
        let upNames = try r.strings("up_block_types", default: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        upBlockTypes = try upNames.map { name in
            guard let t = UpBlockType(rawValue: name) else {
                throw r.error("up_block_types", "block type '\(name)' is not supported (supported: CrossAttnUpBlock2D, UpBlock2D)")
            }
            return t
        }
        guard downBlockTypes.count == blocks else {
            throw r.error("down_block_types", "has \(downBlockTypes.count) entries but block_out_channels has \(blocks)")
        }
        guard upBlockTypes.count == blocks else {
            throw r.error("up_block_types", "has \(upBlockTypes.count) entries but down_block_types has \(blocks)")
        }

        layersPerBlock = try r.perBlock("layers_per_block", blocks: blocks, default: 2, in: 1...ModelLimits.maximumLayersPerBlock)
        let headDims = try r.perBlock("attention_head_dim", blocks: blocks, default: 8, in: channels)
        if r.isPresent("num_attention_heads") {
            attentionHeads = try r.perBlock("num_attention_heads", blocks: blocks, default: 0, in: channels)
        } else {
            attentionHeads = headDims
        }
        crossAttentionDim = try r.perBlock("cross_attention_dim", blocks: blocks, default: 1280, in: channels)
        if Set(crossAttentionDim).count > 1 {
            throw r.error("cross_attention_dim", "per-block widths must all be equal (one text-encoder output feeds every block)")
        }
        transformerLayersPerBlock = try r.perBlock("transformer_layers_per_block", blocks: blocks, default: 1,
                                                   in: 1...ModelLimits.maximumTransformerDepth)
        let headsKey = r.isPresent("num_attention_heads") ? "num_attention_heads" : "attention_head_dim"
        for (i, heads) in attentionHeads.enumerated() where heads <= 0 || blockOutChannels[i] % heads != 0 {
            throw r.error(headsKey, "block \(i) has \(blockOutChannels[i]) channels, which \(heads) heads do not divide")
        }
        for (key, values) in [("layers_per_block", layersPerBlock), ("cross_attention_dim", crossAttentionDim),
                              ("transformer_layers_per_block", transformerLayersPerBlock), ("block_out_channels", blockOutChannels)]
        where values.contains(where: { $0 <= 0 }) {
            throw r.error(key, "every entry must be positive")
        }

        useLinearProjection = try r.bool("use_linear_projection", default: false)
        normNumGroups = try r.int("norm_num_groups", default: 32, in: channels)
        let groups = normNumGroups
        for (i, c) in blockOutChannels.enumerated() where groups <= 0 || c % groups != 0 {
            throw r.error("norm_num_groups", "does not divide block \(i)'s \(c) channels")
        }
        normEpsilon = Float(try r.double("norm_eps", default: 1e-5, in: 0...1))
        flipSinToCos = try r.bool("flip_sin_to_cos", default: true)
        freqShift = Float(try r.double("freq_shift", default: 0, in: -1e6...1e6))
        centerInputSample = try r.bool("center_input_sample", default: false)
        upcastAttention = try r.bool("upcast_attention", default: false)
        // 1 keeps every level's size at ⌈size/2⌉ (as 0 with its asymmetric pad does); larger pads grow the maps.
        downsamplePadding = try r.int("downsample_padding", default: 1, in: 0...1)
        midBlockScaleFactor = Float(try r.double("mid_block_scale_factor", default: 1, in: -1e6...1e6, nonZero: true))
        resnetOutputScaleFactor = Float(try r.double("resnet_out_scale_factor", default: 1, in: -1e6...1e6, nonZero: true))
        activationFunction = try r.string("act_fn", default: "silu")
        timeEmbeddingDim = try r.optionalInt("time_embedding_dim", in: 1...ModelLimits.maximumEmbeddingWidth) ?? blockOutChannels[0] * 4
        sampleSize = try Self.readSampleSize(r)

        let additionType = try r.optionalString("addition_embed_type")
        usesTextTimeEmbedding = additionType == "text_time"
        additionTimeEmbedDim = try r.optionalInt("addition_time_embed_dim", in: 1...ModelLimits.maximumEmbeddingWidth)
        projectionClassEmbeddingsInputDim = try r.optionalInt("projection_class_embeddings_input_dim",
                                                              in: 1...ModelLimits.maximumEmbeddingWidth)
        if usesTextTimeEmbedding {
            guard additionTimeEmbedDim != nil else {
                throw r.error("addition_time_embed_dim", "must be set when addition_embed_type is \"text_time\"")
            }
            guard projectionClassEmbeddingsInputDim != nil else {
                throw r.error("projection_class_embeddings_input_dim", "must be set when addition_embed_type is \"text_time\"")
            }
        }
    }

    /// `sample_size`: an integer, or a list [height, width] of two equal integers, in 1...`maximumSampleSize`.
    private static func readSampleSize(_ r: ComponentConfigReader) throws -> Int? {
        guard let v = r.json["sample_size"], !v.isNull else { return nil }
        let range = 1...ModelLimits.maximumSampleSize
        let size: Int?
        if let list = v.array {
            size = list.count == 2 && list[0] == list[1] ? list[0].int : nil
        } else {
            size = v.int
        }
        guard let size, range.contains(size) else {
            throw r.error("sample_size", "must be an integer in \(range.lowerBound)...\(range.upperBound) (the latent side; square sizes only)")
        }
        return size
    }

    /// Resnets in up block `i` (one more than the mirrored down block, for the extra skip).
    public func upBlockLayers(_ i: Int) -> Int { layersPerBlock.reversed()[i] + 1 }
}

extension UNetConfiguration {
    /// Keys that change the math, with the only values (or JSON types) this implementation accepts.
    /// An absent key is always fine (diffusers' default is the accepted value).
    static let acceptedValues: [(key: String, accepted: [JSONValue], meaning: String)] = [
        ("class_embed_type", [.null], "class embeddings are not supported"),
        ("num_class_embeds", [.null], "class embeddings are not supported"),
        ("class_embeddings_concat", [.bool(false)], "class embeddings are not supported"),
        ("encoder_hid_dim", [.null], "encoder hidden-state projections are not supported"),
        ("encoder_hid_dim_type", [.null], "encoder hidden-state projections are not supported"),
        ("time_cond_proj_dim", [.null], "timestep conditioning projections (LCM) are not supported"),
        ("resnet_time_scale_shift", [.string("default")], "only \"default\" resnet time embeddings are supported"),
        ("resnet_skip_time_act", [.bool(false)], "only false is supported"),
        ("only_cross_attention", [.bool(false)], "blocks without self-attention are not supported"),
        ("mid_block_only_cross_attention", [.null, .bool(false)], "blocks without self-attention are not supported"),
        ("dual_cross_attention", [.bool(false)], "dual cross-attention is not supported"),
        ("time_embedding_type", [.string("positional")], "only \"positional\" (sinusoidal) time embeddings are supported"),
        ("time_embedding_act_fn", [.null], "an activation after the time embedding is not supported"),
        ("timestep_post_act", [.null], "an activation after the time embedding MLP is not supported"),
        ("conv_in_kernel", [.number(3)], "only 3 is supported"),
        ("conv_out_kernel", [.number(3)], "only 3 is supported"),
        ("act_fn", [.string("silu")], "only \"silu\" is supported"),
        ("attention_type", [.string("default")], "only \"default\" attention is supported (no GLIGEN)"),
        ("reverse_transformer_layers_per_block", [.null], "asymmetric transformer depths are not supported"),
        ("addition_embed_type", [.null, .string("text_time")], "only null or \"text_time\" (SDXL) are supported"),
        ("cross_attention_norm", [.null], "normalising the cross-attention context is not supported"),
        ("mid_block_type", [.string("UNetMidBlock2DCrossAttn")], "only \"UNetMidBlock2DCrossAttn\" is supported"),
    ]

    static func rejectUnsupported(_ r: ComponentConfigReader) throws {
        for (key, accepted, meaning) in Self.acceptedValues {
            guard let value = r.json[key], !accepted.contains(value) else { continue }
            // `only_cross_attention` may also be a per-block list of false.
            if key == "only_cross_attention", let list = value.array, list.allSatisfy({ $0 == .bool(false) }) { continue }
            throw r.error(key, meaning)
        }
    }
}
