/// diffusers' `Upsample2D` with `use_conv=True` (UNet up blocks, VAE decoder): nearest-neighbour 2× (or to an
/// explicit size, which the UNet forwards when the latent is not a multiple of its total downsampling) then a 3×3 conv
/// (`upsamplers.0.conv`).
public final class Upsample2D {
    public let conv: Conv2d

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int) throws {
        conv = try loader.conv(prefix + ".conv", in: channels, out: channels, kernel: 3, padding: 1)
    }

    /// `size`: (height, width) to resize to instead of 2×, as diffusers' `upsample_size`.
    func forward<B: ModelBackend>(_ b: B, _ x: B.Value, size: (height: Int, width: Int)? = nil) throws -> B.Value {
        let shape = b.shape(of: x)
        let target = size ?? (2 * shape[2], 2 * shape[3])
        return try b.conv2d(b.upsampleNearest(x, height: target.height, width: target.width, readBy: conv), conv)
    }
}
