/// diffusers' `Downsample2D` with `use_conv=True` (UNet down blocks, VAE encoder): a 3×3 stride-2 conv
/// (`downsamplers.0.conv`). With `padding` 0 diffusers first zero-pads right and bottom by one (F.pad (0,1,0,1)); we
/// do the same.
public final class Downsample2D {
    public let conv: Conv2d

    init(_ loader: ComponentWeightAudit, _ prefix: String, channels: Int, padding: Int) throws {
        conv = try loader.conv(prefix + ".conv", in: channels, out: channels, kernel: 3, stride: 2, padding: padding)
    }

    func forward<B: ModelBackend>(_ b: B, _ x: B.Value) throws -> B.Value {
        try b.conv2d(conv.padding == 0 ? b.padRightBottom(x) : x, conv)
    }
}
