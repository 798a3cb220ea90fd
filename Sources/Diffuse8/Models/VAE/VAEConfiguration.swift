/// The keys of a diffusers `AutoencoderKL` `vae/config.json` (diffusers 0.42.1), with diffusers'
/// defaults for keys that are absent.
///
/// Supported: `DownEncoderBlock2D` / `UpDecoderBlock2D` blocks, `act_fn: "silu"`, `shift_factor: null`.
/// Anything else is an error naming the key.
public struct VAEConfiguration: Sendable, Equatable {
    public var inChannels: Int
    public var outChannels: Int
    public var latentChannels: Int
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var normNumGroups: Int
    /// Latents are multiplied by this after encoding and divided by it before decoding (by the pipeline).
    public var scalingFactor: Float
    /// Whether diffusers runs this VAE in FP32 when the pipeline is FP16 (kept; matters only for FP16 execution).
    public var forceUpcast: Bool
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    public var midBlockAddAttention: Bool
    /// Per-channel latent statistics (e.g. Playground v2.5); when set, SDXL pipelines decode
    /// `latents * std / scaling_factor + mean` instead of `latents / scaling_factor`. nil for SD1.x / SDXL.
    public var latentsMean: [Float]?
    public var latentsStd: [Float]?

    public init(inChannels: Int = 3, outChannels: Int = 3, latentChannels: Int = 4, blockOutChannels: [Int] = [64],
                layersPerBlock: Int = 1, normNumGroups: Int = 32, scalingFactor: Float = 0.18215,
                forceUpcast: Bool = true, useQuantConv: Bool = true, usePostQuantConv: Bool = true,
                midBlockAddAttention: Bool = true, latentsMean: [Float]? = nil, latentsStd: [Float]? = nil) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.latentChannels = latentChannels
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.normNumGroups = normNumGroups
        self.scalingFactor = scalingFactor
        self.forceUpcast = forceUpcast
        self.useQuantConv = useQuantConv
        self.usePostQuantConv = usePostQuantConv
        self.midBlockAddAttention = midBlockAddAttention
        self.latentsMean = latentsMean
        self.latentsStd = latentsStd
    }

    /// Parses a `config.json`; `source` names the file in error messages.
    public init(json: JSONValue, source: String = "config.json") throws {
        let r = try ComponentConfigReader(json, source: source)
        self.init()
        try r.requireClassName("AutoencoderKL")
        let channels = 1...ModelLimits.maximumChannels
        inChannels = try r.int("in_channels", default: inChannels, in: 1...4)
        // The decoded image becomes grey or RGB pixels.
        outChannels = try r.int("out_channels", default: outChannels, in: 1...3)
        if outChannels == 2 { throw r.error("out_channels", "must be 1 (grey) or 3 (RGB)") }
        latentChannels = try r.int("latent_channels", default: latentChannels, in: 1...ModelLimits.maximumChannels)
        blockOutChannels = try r.ints("block_out_channels", default: blockOutChannels, in: channels, count: 1...ModelLimits.maximumBlocks)
        layersPerBlock = try r.int("layers_per_block", default: layersPerBlock, in: 1...ModelLimits.maximumLayersPerBlock)
        normNumGroups = try r.int("norm_num_groups", default: normNumGroups, in: channels)
        scalingFactor = Float(try r.double("scaling_factor", default: Double(scalingFactor), in: -1e6...1e6, nonZero: true))
        forceUpcast = try r.bool("force_upcast", default: forceUpcast)
        useQuantConv = try r.bool("use_quant_conv", default: useQuantConv)
        usePostQuantConv = try r.bool("use_post_quant_conv", default: usePostQuantConv)
        midBlockAddAttention = try r.bool("mid_block_add_attention", default: midBlockAddAttention)
        latentsMean = try r.optionalDoubles("latents_mean")?.map(Float.init)
        latentsStd = try r.optionalDoubles("latents_std")?.map(Float.init)
        if let mean = latentsMean, !mean.allSatisfy(\.isFinite) { throw r.error("latents_mean", "every value must be finite") }
        if let std = latentsStd, !std.allSatisfy({ $0.isFinite && $0 > 0 }) {
            throw r.error("latents_std", "every value must be a finite number above 0")
        }

        if try r.optionalDouble("shift_factor") != nil {
            throw r.error("shift_factor", "shifted latents (SD3/Flux-style VAEs) are not supported, only null")
        }
        guard try r.string("act_fn", default: "silu") == "silu" else {
            throw r.error("act_fn", "only \"silu\" is supported")
        }
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 && $0 % normNumGroups == 0 }) else {
            throw r.error("block_out_channels", "\(blockOutChannels) must be non-empty multiples of `norm_num_groups` (\(normNumGroups))")
        }
        for (key, expected) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            let types = try r.strings(key, default: Array(repeating: expected, count: blockOutChannels.count))
            if let other = types.first(where: { $0 != expected }) {
                throw r.error(key, "contains \"\(other)\"; only \"\(expected)\" blocks are supported")
            }
            guard types.count == blockOutChannels.count else {
                throw r.error(key, "has \(types.count) entries but `block_out_channels` has \(blockOutChannels.count)")
            }
        }
        for (key, values) in [("latents_mean", latentsMean), ("latents_std", latentsStd)] {
            if let values, values.count != latentChannels {
                throw r.error(key, "has \(values.count) values but `latent_channels` is \(latentChannels)")
            }
        }
    }

    /// Reads `<directory>/config.json`.
    public init(directory: String) throws {
        let path = directory + "/config.json"
        try self.init(json: try ComponentConfigReader.load(path), source: path)
    }

    /// Image pixels per latent pixel along each side: 2^(levels − 1) (8 for SD).
    public var downscaleFactor: Int { 1 << (blockOutChannels.count - 1) }
}
