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

    /// x: NCHW feature map; context: [B, Lc, contextChannels] text-encoder hidden states.
    public func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        let height = x.shape[2], width = x.shape[3]
        var tokens: Tensor
        switch projectIn {
        case .convolution(let conv): tokens = CPUKernels.channelsToTokens(conv(norm(x)))
        case .linear(let linear): tokens = linear(CPUKernels.channelsToTokens(norm(x)))
        }
        for block in blocks { tokens = block(tokens, context: context) }
        let out: Tensor
        switch projectOut {
        case .convolution(let conv): out = conv(CPUKernels.tokensToChannels(tokens, height: height, width: width))
        case .linear(let linear): out = CPUKernels.tokensToChannels(linear(tokens), height: height, width: width)
        }
        return CPUKernels.add(out, x)
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
