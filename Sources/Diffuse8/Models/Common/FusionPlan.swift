/// The cross-layer fusions of one model, decided once from its layers: the shared weight-preparation step of every
/// backend that fuses (`ModelBackend.fusionPlan(for:)`). Each fusion computes the same function as the layers it
/// replaces (up to the storage type's rounding). Quantized layers are stacked only with each other and only when the
/// stack computes what they compute apart (`canStack`: one input scale and SmoothQuant vector, as `diffuse8 quantize`
/// gives layers that read one tensor); otherwise they run unfused.
///
/// - self-attention `to_q`/`to_k`/`to_v` (UNet `attn1`, CLIP `self_attn`, the VAE's mid-block attention) as one
///   [3C, C] product read in place by attention;
/// - every UNet resnet's `time_emb_proj` as one product on silu(temb), with the resnet's conv1 bias folded into it
///   (added after conv1 either way);
/// - every resnet's conv2 and shortcut biases folded into its residual add;
/// - every UNet cross-attention's `to_k`/`to_v` as one product on the text context per context width (quantized ones
///   when they share one input quantization, as `diffuse8 quantize` writes them; else one product per module);
/// - SD1.x's 1×1 `proj_in`/`proj_out` convolutions as Linear layers on tokens (a 1×1 conv followed by NCHW → tokens
///   equals NCHW → tokens followed by the Linear with the same weight).
public final class FusionPlan {
    /// Per self-attention module (`MultiHeadAttention`, `CLIPAttention`, `VAEAttentionBlock`): Q, K, V stacked.
    public private(set) var selfProjections: [ObjectIdentifier: LinearStack] = [:]
    /// All fusable `time_emb_proj` layers (+ conv1 biases), stacked.
    public private(set) var timeProjection: LinearStack?
    /// Where each fused resnet's channels start in `timeProjection`'s output.
    public private(set) var timeOffsets: [ObjectIdentifier: Int] = [:]
    /// Cross-attention keys and values, one stack per context width.
    public private(set) var contextProjections: [LinearStack] = []
    /// Per fused cross-attention module: its stack in `contextProjections` and the column of its keys (values follow).
    public private(set) var contextSlots: [ObjectIdentifier: (stack: Int, offset: Int)] = [:]
    /// Resnets whose conv2 and shortcut biases are added in `resnetOutput` (summed here) instead of by the convolutions.
    public private(set) var resnetOutputBias: [ObjectIdentifier: Tensor] = [:]
    /// Convolutions that run without their bias (it was folded elsewhere).
    public private(set) var convolutionsWithoutBias = Set<ObjectIdentifier>()
    /// 1×1 `proj_in`/`proj_out` convolutions as Linear layers on tokens.
    public private(set) var tokenProjections: [ObjectIdentifier: Linear] = [:]

    /// Every stack a backend has to prepare.
    public var stacks: [LinearStack] { [timeProjection].compactMap { $0 } + contextProjections + Array(selfProjections.values) }

    /// No fusions: every layer runs as it is (what calibration needs, to observe each one).
    public init() {}

    /// A 1×1 convolution as a Linear on tokens. A statically quantized one keeps its codes, scales and input amax
    /// (per-tensor activation scale, no smoothing: the same arithmetic on either layout), so it can run as an 8-bit
    /// GEMM; a dynamically quantized one stays a convolution (its scales are per sample, a Linear's per token).
    static func tokenProjection(_ conv: Conv2d) -> Linear? {
        let shape = [conv.outChannels, conv.inChannels]
        let linear = Linear(name: conv.name, weight: conv.weight.reshaped(shape), bias: conv.bias)
        guard let q = conv.quantization else { return linear }
        guard q.inputAmax != nil, q.smoothing == nil, q.outputAmax == nil else { return nil }
        let weight = QuantizedWeight(format: q.format, shape: shape, codes: q.weight.codes, scales: q.weight.scales)
        linear.executionHook = SimulatedQuantizationHook(QuantizedLayer(name: q.name, kind: .linear, weight: weight,
                                                                        inputAmax: q.inputAmax, smoothing: nil, outputAmax: nil))
        return linear
    }

    public init(_ unet: UNet2DConditionModel) throws {
        var timeLayers: [Linear] = [], timeBias: [Float] = [], width = 0
        for r in unet.resnets {
            if let projection = r.timeEmbeddingProjection, projection.quantization == nil {
                timeOffsets[ObjectIdentifier(r)] = width
                timeLayers.append(projection)
                timeBias += r.conv1.bias?.scalars ?? [Float](repeating: 0, count: projection.outFeatures)
                convolutionsWithoutBias.insert(ObjectIdentifier(r.conv1))
                width += projection.outFeatures
            }
            foldOutputBias(r)
        }
        timeProjection = timeLayers.isEmpty ? nil : try LinearStack(timeLayers, extraBias: timeBias)

        var contextLayers: [Int: [Linear]] = [:], widths: [Int] = []
        var slots: [ObjectIdentifier: (width: Int, offset: Int)] = [:]
        var quantizedContext: [Int: [(module: ObjectIdentifier, layers: [Linear])]] = [:], quantizedWidths: [Int] = []
        for t in unet.transformers {
            for case .convolution(let conv) in [t.projectIn, t.projectOut] {
                if let linear = Self.tokenProjection(conv) { tokenProjections[ObjectIdentifier(conv)] = linear }
            }
            for block in t.blocks {
                let a = block.selfAttention
                try stackProjections(of: a, [a.query, a.key, a.value])
                let cross = block.crossAttention
                if cross.key.quantization == nil && cross.value.quantization == nil {
                    let w = cross.key.inFeatures
                    if contextLayers[w] == nil { widths.append(w) }
                    let offset = (contextLayers[w] ?? []).map(\.outFeatures).reduce(0, +)
                    contextLayers[w, default: []] += [cross.key, cross.value]
                    slots[ObjectIdentifier(cross)] = (w, offset)
                } else if Self.canStack([cross.key, cross.value]) {
                    let w = cross.key.inFeatures
                    if quantizedContext[w] == nil { quantizedWidths.append(w) }
                    quantizedContext[w, default: []].append((ObjectIdentifier(cross), [cross.key, cross.value]))
                }
            }
        }
        contextProjections = try widths.map { try LinearStack(contextLayers[$0] ?? []) }
        contextSlots = slots.mapValues { (widths.firstIndex(of: $0.width) ?? 0, $0.offset) }
        for w in quantizedWidths {
            let modules = quantizedContext[w] ?? []
            if Self.canStack(modules.flatMap(\.layers)) {
                var offset = 0
                for m in modules {
                    contextSlots[m.module] = (contextProjections.count, offset)
                    offset += m.layers.map(\.outFeatures).reduce(0, +)
                }
                contextProjections.append(try LinearStack(modules.flatMap(\.layers)))
            } else {
                for m in modules {
                    contextSlots[m.module] = (contextProjections.count, 0)
                    contextProjections.append(try LinearStack(m.layers))
                }
            }
        }
    }

    public init(_ encoder: CLIPTextModel) throws {
        for layer in encoder.layers {
            let a = layer.selfAttention
            try stackProjections(of: a, [a.queryProjection, a.keyProjection, a.valueProjection])
        }
    }

    public init(_ vae: AutoencoderKL) throws {
        for r in vae.resnets { foldOutputBias(r) }
        for a in vae.attentions { try stackProjections(of: a, [a.toQuery, a.toKey, a.toValue]) }
    }

    private func stackProjections(of module: AnyObject, _ layers: [Linear]) throws {
        guard Self.canStack(layers) else { return }
        selfProjections[ObjectIdentifier(module)] = try LinearStack(layers)
    }

    /// Whether `layers` (reading one input) give, stacked, what they give apart: all dense, or all quantized Linear
    /// layers with one format, one input amax (or all dynamic), one SmoothQuant vector, FP8 output rounding (level 4,
    /// each with its own amax) for all or none, and, for per-tensor weight scales, one scale — so the input is
    /// quantized once and one 8-bit GEMM computes every output.
    public static func canStack(_ layers: [Linear]) -> Bool {
        let quantized = layers.compactMap(\.quantization)
        guard let first = quantized.first else { return true }
        return quantized.count == layers.count && quantized.allSatisfy { q in
            q.kind == .linear && q.format == first.format && q.inputAmax == first.inputAmax && q.smoothing == first.smoothing
                && (q.outputAmax == nil) == (first.outputAmax == nil) && (q.weight.scales.count == q.weight.shape[0]) == (first.weight.scales.count == first.weight.shape[0])
                && (q.weight.scales.count > 1 || q.weight.scales == first.weight.scales)
        }
    }

    private func foldOutputBias(_ r: ResnetBlock2D) {
        var bias = r.conv2.bias?.scalars ?? [Float](repeating: 0, count: r.conv2.outChannels)
        if let shortcutBias = r.shortcut?.bias?.scalars { bias = zip(bias, shortcutBias).map { $0 + $1 } }
        resnetOutputBias[ObjectIdentifier(r)] = Tensor(shape: [bias.count], scalars: bias)
        convolutionsWithoutBias.insert(ObjectIdentifier(r.conv2))
        if let shortcut = r.shortcut { convolutionsWithoutBias.insert(ObjectIdentifier(shortcut)) }
    }
}
