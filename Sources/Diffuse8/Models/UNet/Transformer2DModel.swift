/// diffusers' `Transformer2DModel` on continuous (feature-map) input, as the UNet's cross-attention blocks use
/// it: GroupNorm (eps 1e-6) → `proj_in` → `BasicTransformerBlock`s on [B, H·W, C] tokens → `proj_out` →
/// residual add. `proj_in`/`proj_out` are 1×1 convs on the feature map (SD1, `use_linear_projection: false`)
/// or Linear layers on the tokens (SD2/SDXL, `true`); the inner width equals the channel count.
public final class Transformer2DModel {
    /// `proj_in` / `proj_out`: a 1×1 convolution on NCHW or a Linear on tokens.
    public enum Projection {
        case convolution(Conv2d)
        case linear(Linear)

        var linear: Linear? { if case .linear(let layer) = self { layer } else { nil } }
        var convolution: Conv2d? { if case .convolution(let layer) = self { layer } else { nil } }

        /// How it runs under `plan`: a 1×1 conv that the plan turned into a Linear on tokens becomes `.linear`.
        func fused(by plan: FusionPlan?) -> Projection {
            if case .convolution(let conv) = self, let linear = plan?.tokenProjections[ObjectIdentifier(conv)] { return .linear(linear) }
            return self
        }
    }

    public let norm: GroupNorm
    public let projectIn: Projection
    public let blocks: [BasicTransformerBlock]
    public let projectOut: Projection

    /// The transformer of a block at UNet level `level` (0 = the first down block), which sets its heads, depth and
    /// context width.
    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, level: Int, configuration c: UNetConfiguration) throws {
        norm = try loader.groupNorm(prefix + ".norm", channels: channels, groups: c.normNumGroups, epsilon: 1e-6)
        func projection(_ name: String) throws -> Projection {
            c.useLinearProjection ? .linear(try loader.linear(prefix + "." + name, in: channels, out: channels))
                : .convolution(try loader.conv(prefix + "." + name, in: channels, out: channels, kernel: 1))
        }
        projectIn = try projection("proj_in")
        blocks = try (0..<c.transformerLayersPerBlock[level]).map {
            try BasicTransformerBlock(loader, "\(prefix).transformer_blocks.\($0)", channels: channels,
                                      contextChannels: c.crossAttentionDim[level], heads: c.attentionHeads[level])
        }
        projectOut = try projection("proj_out")
    }

    /// x: NCHW feature map; the text context comes with the forward state.
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value) throws -> B.Value {
        let b = s.backend
        let shape = b.shape(of: x), height = shape[2], width = shape[3]
        var tokens: B.Value
        switch projectIn.fused(by: s.plan) {
        case .linear(let linear): tokens = try b.linear(b.groupNormTokens(x, norm, readBy: linear), linear, residual: nil)
        case .convolution(let conv): tokens = try b.channelsToTokens(b.conv2d(b.groupNorm(x, norm, silu: false), conv))
        }
        for block in blocks { tokens = try block.forward(s, tokens) }
        switch projectOut.fused(by: s.plan) {
        case .linear(let linear):
            return try b.tokensToChannels(b.linear(tokens, linear, residual: nil), height: height, width: width, residual: x)
        case .convolution(let conv):
            return try b.add(b.conv2d(b.tokensToChannels(tokens, height: height, width: width, residual: nil), conv), x)
        }
    }

    var linearLayers: [Linear] { [projectIn.linear].compactMap { $0 } + blocks.flatMap(\.linearLayers) + [projectOut.linear].compactMap { $0 } }

    var convolutionLayers: [Conv2d] { [projectIn.convolution, projectOut.convolution].compactMap { $0 } }
}
