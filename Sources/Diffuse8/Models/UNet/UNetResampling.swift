/// diffusers' `Downsample2D` with `use_conv=True`: a 3×3 stride-2 conv (`downsamplers.0.conv`). With
/// `padding` 0 diffusers first zero-pads right and bottom by one (F.pad (0,1,0,1)); we do the same.
public final class Downsample2D {
    public let conv: Conv2d

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, padding: Int) throws {
        conv = try loader.conv(prefix + ".conv", in: channels, out: channels, kernel: 3, stride: 2, padding: padding)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        conv.padding == 0 ? conv(CPUKernels.pad(x, left: 0, right: 1, top: 0, bottom: 1)) : conv(x)
    }
}

/// diffusers' `Upsample2D` with `use_conv=True`: nearest-neighbour 2× (or to an explicit size, which the UNet
/// forwards when the latent is not a multiple of its total downsampling) then a 3×3 conv
/// (`upsamplers.0.conv`).
public final class Upsample2D {
    public let conv: Conv2d

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int) throws {
        conv = try loader.conv(prefix + ".conv", in: channels, out: channels, kernel: 3, padding: 1)
    }

    /// `size`: (height, width) to resize to instead of 2×, as diffusers' `upsample_size`.
    public func callAsFunction(_ x: Tensor, size: (height: Int, width: Int)? = nil) -> Tensor {
        if let size, size.height != 2 * x.shape[2] || size.width != 2 * x.shape[3] {
            return conv(Self.resizeNearest(x, height: size.height, width: size.width))
        }
        return conv(CPUKernels.upsampleNearest2x(x))
    }

    /// `F.interpolate(size=..., mode="nearest")` on NCHW: source index `floor(dst · in/out)` with the scale
    /// computed in Float32 as PyTorch does. Only used for latents whose size is not a multiple of 2^k.
    static func resizeNearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let scaleY = Float(h) / Float(height), scaleX = Float(w) / Float(width)
        let sourceRows = (0..<height).map { min(Int((Float($0) * scaleY).rounded(.down)), h - 1) }
        let sourceColumns = (0..<width).map { min(Int((Float($0) * scaleX).rounded(.down)), w - 1) }
        return Tensor(shape: [x.shape[0], x.shape[1], height, width]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                for p in 0..<planes {
                    for y in 0..<height {
                        let src = p * h * w + sourceRows[y] * w, dst = (p * height + y) * width
                        for xx in 0..<width { out[dst + xx] = xp[src + sourceColumns[xx]] }
                    }
                }
            }
        }
    }
}

/// The quantizable layers of the shared `ResnetBlock2D`, in execution order.
enum UNetResnetLayers {
    static func linear(_ block: ResnetBlock2D) -> [Linear] { block.timeEmbeddingProjection.map { [$0] } ?? [] }
    static func convolution(_ block: ResnetBlock2D) -> [Conv2d] { [block.conv1, block.conv2] + (block.shortcut.map { [$0] } ?? []) }
}
