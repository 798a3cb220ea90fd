import Diffuse8

/// A cheap preview of latents as an RGB image, one pixel per latent (1/8 of the output size): a fixed linear map
/// from the 4 latent channels to RGB, AUTOMATIC1111's "Approx cheap" live preview with its SD1.x factors.
/// It only suggests colours and layout; models whose VAE latent space differs (or SDXL) look off.
public enum LatentPreview {
    /// Rows: latent channel; columns: R, G, B contribution (A1111 `sd_samplers_common.samples_to_images_tensor`, approx cheap).
    static let factors: [[Float]] = [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]

    /// The first image of `latents` ([N, 4, h, w]) as RGB, or nil when the latents do not have 4 channels.
    public static func image(latents: Tensor) -> PixelImage? {
        guard latents.rank == 4, latents.shape[1] == 4 else { return nil }
        let (height, width) = (latents.shape[2], latents.shape[3])
        let plane = height * width
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        latents.scalars.withUnsafeBufferPointer { x in
            for i in 0..<plane {
                for c in 0..<3 {
                    var v: Float = 0
                    for l in 0..<4 { v += x[l * plane + i] * factors[l][c] }
                    pixels[i * 3 + c] = ImageConversion.byte(fromUnit: v)
                }
            }
        }
        return PixelImage(width: width, height: height, channels: 3, pixels: pixels)
    }
}
