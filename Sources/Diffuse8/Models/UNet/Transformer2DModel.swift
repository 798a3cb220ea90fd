/// diffusers' `Transformer2DModel` on continuous (feature-map) input, as the UNet's cross-attention blocks use
/// it: GroupNorm (eps 1e-6) → `proj_in` → `BasicTransformerBlock`s on [B, H·W, C] tokens → `proj_out` →
/// residual add. `proj_in`/`proj_out` are 1×1 convs on the feature map (SD1, `use_linear_projection: false`)
/// or Linear layers on the tokens (SD2/SDXL, `true`); the inner width equals the channel count.
public final class Transformer2DModel {
    /// `proj_in` / `proj_out`: a 1×1 convolution on NCHW or a Linear on tokens.
    public enum Projection {
        case convolution(Conv2d)
        case linear(Linear)
    }

    public let norm: GroupNorm
    public let projectIn: Projection
    public let blocks: [BasicTransformerBlock]
    public let projectOut: Projection

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, heads: Int, layers: Int, contextChannels: Int,
         groups: Int, useLinearProjection: Bool) throws {
        norm = try loader.groupNorm(prefix + ".norm", channels: channels, groups: groups, epsilon: 1e-6)
        func projection(_ name: String) throws -> Projection {
            useLinearProjection ? .linear(try loader.linear(prefix + "." + name, in: channels, out: channels))
                : .convolution(try loader.conv(prefix + "." + name, in: channels, out: channels, kernel: 1))
        }
        projectIn = try projection("proj_in")
        blocks = try (0..<layers).map {
            try BasicTransformerBlock(loader, "\(prefix).transformer_blocks.\($0)", channels: channels,
                                      contextChannels: contextChannels, heads: heads)
        }
        projectOut = try projection("proj_out")
    }

    /// x: NCHW feature map; the text context comes with the forward state.
    func forward<B: ModelBackend>(_ s: UNetForwardState<B>, _ x: B.Value) throws -> B.Value {
        let b = s.backend
        let shape = b.shape(of: x), height = shape[2], width = shape[3]
        let normed = try b.groupNorm(x, norm, silu: false)
        var tokens: B.Value
        switch projectIn {
        case .linear(let linear): tokens = try b.linear(b.channelsToTokens(normed), linear, residual: nil)
        case .convolution(let conv):
            if let onTokens = s.plan?.tokenProjections[ObjectIdentifier(conv)] {
                tokens = try b.linear(b.channelsToTokens(normed), onTokens, residual: nil)
            } else {
                tokens = try b.channelsToTokens(b.conv2d(normed, conv))
            }
        }
        for block in blocks { tokens = try block.forward(s, tokens) }
        switch projectOut {
        case .linear(let linear):
            return try b.tokensToChannels(b.linear(tokens, linear, residual: nil), height: height, width: width, residual: x)
        case .convolution(let conv):
            if let onTokens = s.plan?.tokenProjections[ObjectIdentifier(conv)] {
                return try b.tokensToChannels(b.linear(tokens, onTokens, residual: nil), height: height, width: width, residual: x)
            }
            return try b.add(b.conv2d(b.tokensToChannels(tokens, height: height, width: width, residual: nil), conv), x)
        }
    }

    var linearLayers: [Linear] {
        var layers: [Linear] = []
        if case .linear(let l) = projectIn { layers.append(l) }
        layers += blocks.flatMap(\.linearLayers)
        if case .linear(let l) = projectOut { layers.append(l) }
        return layers
    }

    var convolutionLayers: [Conv2d] {
        var layers: [Conv2d] = []
        if case .convolution(let c) = projectIn { layers.append(c) }
        if case .convolution(let c) = projectOut { layers.append(c) }
        return layers
    }
}
