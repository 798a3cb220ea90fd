/// The cross-layer fusions of one UNet, decided once from its layers: the shared weight-preparation step of every
/// backend that fuses (`ModelBackend.fusionPlan(for:)`). Each fusion computes the same function as the layers it
/// replaces; a quantized layer is never fused (its input scaling and smoothing are its own), it runs unfused.
///
/// - every resnet's `time_emb_proj` as one product on silu(temb), with the resnet's conv1 bias folded into it
///   (added after conv1 either way);
/// - conv2's and the shortcut's biases folded into the resnet's residual add;
/// - self-attention `to_q`/`to_k`/`to_v` as one [3C, C] product read in place by attention;
/// - every cross-attention's `to_k`/`to_v` as one product on the text context per context width;
/// - SD1.x's 1×1 `proj_in`/`proj_out` convolutions as Linear layers on tokens (a 1×1 conv followed by NCHW → tokens
///   equals NCHW → tokens followed by the Linear with the same weight).
public final class UNetFusionPlan {
    /// All fusable `time_emb_proj` layers (+ conv1 biases), stacked.
    public let timeProjection: LinearStack?
    /// Where each fused resnet's channels start in `timeProjection`'s output.
    public let timeOffsets: [ObjectIdentifier: Int]
    /// Cross-attention keys and values, one stack per context width.
    public let contextProjections: [LinearStack]
    /// Per fused cross-attention module: its stack in `contextProjections` and the column of its keys (values follow).
    public let contextSlots: [ObjectIdentifier: (stack: Int, offset: Int)]
    /// Per fused self-attention module: Q, K, V stacked.
    public let selfProjections: [ObjectIdentifier: LinearStack]
    /// Resnets whose conv2 and shortcut biases are added in `resnetOutput` (summed here) instead of by the convolutions.
    public let resnetOutputBias: [ObjectIdentifier: Tensor]
    /// Convolutions that run without their bias (it was folded elsewhere).
    public let convolutionsWithoutBias: Set<ObjectIdentifier>
    /// 1×1 `proj_in`/`proj_out` convolutions as Linear layers on tokens.
    public let tokenProjections: [ObjectIdentifier: Linear]

    public init(_ unet: UNet2DConditionModel) throws {
        let resnets = unet.resnets
        var timeLayers: [Linear] = [], timeBias: [Float] = [], timeOffsets: [ObjectIdentifier: Int] = [:]
        var outputBias: [ObjectIdentifier: Tensor] = [:], withoutBias = Set<ObjectIdentifier>()
        var width = 0
        for r in resnets {
            if let projection = r.timeEmbeddingProjection, projection.quantization == nil {
                timeOffsets[ObjectIdentifier(r)] = width
                timeLayers.append(projection)
                timeBias += r.conv1.bias?.scalars ?? [Float](repeating: 0, count: projection.outFeatures)
                withoutBias.insert(ObjectIdentifier(r.conv1))
                width += projection.outFeatures
            }
            var bias = r.conv2.bias?.scalars ?? [Float](repeating: 0, count: r.conv2.outChannels)
            if let shortcutBias = r.shortcut?.bias?.scalars { bias = zip(bias, shortcutBias).map { $0 + $1 } }
            outputBias[ObjectIdentifier(r)] = Tensor(shape: [bias.count], scalars: bias)
            withoutBias.insert(ObjectIdentifier(r.conv2))
            if let shortcut = r.shortcut { withoutBias.insert(ObjectIdentifier(shortcut)) }
        }
        timeProjection = timeLayers.isEmpty ? nil : try LinearStack(timeLayers, extraBias: timeBias)
        self.timeOffsets = timeOffsets
        resnetOutputBias = outputBias
        convolutionsWithoutBias = withoutBias

        let transformers = unet.downBlocks.flatMap(\.attentions) + unet.midBlock.attentions + unet.upBlocks.flatMap(\.attentions)
        var contextLayers: [Int: [Linear]] = [:], widths: [Int] = []
        var slots: [ObjectIdentifier: (width: Int, offset: Int)] = [:]
        var selfProjections: [ObjectIdentifier: LinearStack] = [:]
        var tokenProjections: [ObjectIdentifier: Linear] = [:]
        for t in transformers {
            for case .convolution(let conv) in [t.projectIn, t.projectOut] where conv.quantization == nil {
                tokenProjections[ObjectIdentifier(conv)] = Linear(
                    name: conv.name, weight: conv.weight.reshaped([conv.outChannels, conv.inChannels]), bias: conv.bias)
            }
            for block in t.blocks {
                let a = block.selfAttention
                if [a.query, a.key, a.value].allSatisfy({ $0.quantization == nil }) {
                    selfProjections[ObjectIdentifier(a)] = try LinearStack([a.query, a.key, a.value])
                }
                let cross = block.crossAttention
                if cross.key.quantization == nil && cross.value.quantization == nil {
                    let w = cross.key.inFeatures
                    if contextLayers[w] == nil { widths.append(w) }
                    let offset = (contextLayers[w] ?? []).map(\.outFeatures).reduce(0, +)
                    contextLayers[w, default: []] += [cross.key, cross.value]
                    slots[ObjectIdentifier(cross)] = (w, offset)
                }
            }
        }
        contextProjections = try widths.map { try LinearStack(contextLayers[$0] ?? []) }
        contextSlots = slots.mapValues { (widths.firstIndex(of: $0.width) ?? 0, $0.offset) }
        self.selfProjections = selfProjections
        self.tokenProjections = tokenProjections
    }
}
