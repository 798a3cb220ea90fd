/// Everything a UNet block needs besides its input, for one forward on one backend: the time embedding every
/// resnet adds, the text context every transformer attends to, and the tensors the fusion plan computes once per
/// forward (all resnets' time projections, all cross-attention keys/values).
struct UNetForwardState<B: ModelBackend> {
    let backend: B
    /// The backend's fusion plan for this UNet, or nil when it runs every layer as it is.
    let plan: FusionPlan?
    /// silu(temb) [B, timeEmbeddingDim].
    let activatedTimeEmbedding: B.Value
    /// [B, Σ C]: every fused resnet's time projection (+ conv1 bias).
    let timeVectors: B.Value?
    /// [B, Lc, crossAttentionDim] text-encoder hidden states.
    let context: B.Value
    /// Per context stack of the plan: [B, Lc, Σ 2·C] keys and values.
    let contextKV: [B.Value]

    func time(for resnet: ResnetBlock2D) -> ResnetTimeInput<B.Value> {
        if let timeVectors, let offset = plan?.timeOffsets[ObjectIdentifier(resnet)] { return .stacked(timeVectors, offset: offset) }
        return .activatedEmbedding(activatedTimeEmbedding)
    }
}
